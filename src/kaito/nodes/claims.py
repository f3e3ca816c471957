"""Reading a NodeClaim's wants, and the marks a cloud leaves on the Node it made for one.

Shared by the NodeClaim controller (which registers Nodes for claims) and every cloud (which
makes them), so that neither imports the other.
"""

from __future__ import annotations

from typing import Any

from kaito.nodes.node import LABEL_INSTANCE_TYPE

#: Put on every Node a kaito cloud makes, so a Node maps back to its NodeClaim without a lookup.
LABEL_NODECLAIM = "kaito.sh/nodeclaim"
#: The Azure provider's spelling of the instance type in a claim's requirements (upstream's).
LABEL_AZURE_SKU = "karpenter.azure.com/sku-name"
#: On a Node a cloud *adopted* (a machine that registered its own Node, held for a claim) rather
#: than made: the node-provisioner never deletes such a Node nor gives it an owner reference to its
#: claim (the garbage collector would delete it with the claim); the cloud releases it instead.
#: Stays after release, with the Node's providerID (immutable once set).
ANNOTATION_ADOPTED = "kaito.sh/adopted"


def is_adopted(node: dict[str, Any]) -> bool:
    """Whether ``node`` is a machine's own Node that a cloud adopts and releases, never deletes."""
    return ((node.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ADOPTED) == "true"


def requirement_value(claim: dict[str, Any], key: str) -> str | None:
    """The first ``In`` value a NodeClaim requires for ``key`` (its instance type, its OS)."""
    for req in (claim.get("spec") or {}).get("requirements") or ():
        if req.get("key") == key and req.get("operator") == "In" and req.get("values"):
            return str(req["values"][0])
    return None


def claim_instance_type(claim: dict[str, Any]) -> str:
    """The instance type a claim requires; ValueError (naming the fix) when it names none."""
    value = requirement_value(claim, LABEL_INSTANCE_TYPE) or requirement_value(claim, LABEL_AZURE_SKU)
    if not value:
        name = (claim.get("metadata") or {}).get("name")
        raise ValueError(
            f"NodeClaim {name}: spec.requirements has no {LABEL_INSTANCE_TYPE} In [...]; "
            "add the instance type the node must have"
        )
    return value


def claim_node_labels(claim: dict[str, Any]) -> dict[str, str]:
    """Labels the Node must carry: the claim's own plus single-valued ``In`` requirements
    (what Karpenter copies onto the nodes it launches)."""
    labels: dict[str, str] = {}
    for req in (claim.get("spec") or {}).get("requirements") or ():
        values = req.get("values") or []
        if req.get("operator") == "In" and len(values) == 1:
            labels[str(req["key"])] = str(values[0])
    labels.update((claim.get("metadata") or {}).get("labels") or {})
    labels[LABEL_NODECLAIM] = str(claim["metadata"]["name"])
    return labels


def claim_taints(claim: dict[str, Any]) -> list[dict[str, Any]]:
    """The claim's taints and startup taints, copied (the Node gets both)."""
    spec = claim.get("spec") or {}
    return [dict(t) for t in (spec.get("taints") or [])] + [
        dict(t) for t in (spec.get("startupTaints") or [])
    ]


__all__ = [
    "ANNOTATION_ADOPTED",
    "LABEL_AZURE_SKU",
    "LABEL_NODECLAIM",
    "claim_instance_type",
    "claim_node_labels",
    "claim_taints",
    "is_adopted",
    "requirement_value",
]
