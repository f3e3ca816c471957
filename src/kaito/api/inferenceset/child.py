"""The Workspace an InferenceSet's template makes at one index, and the hash of that template.

One function for both sides on purpose: the admission webhook validates exactly the Workspace the
controller will create (so a template the Workspace rules refuse is refused on the InferenceSet,
with the field named under ``spec.template``), and the controller compares children against the
same hash it stamps on them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kaito.api import names
from kaito.api.inferenceset.types import (
    ANNOTATION_TEMPLATE_HASH,
    KIND,
    LABEL_CREATED_BY,
    LABEL_INDEX,
    STORAGE_VERSION,
    InferenceSet,
    child_name,
)
from kaito.presets import get_sku

Obj = dict[str, Any]


def instance_type_of(model: InferenceSet) -> str | None:
    """The template's SKU in the SKU table's spelling (what the Workspace webhook's defaulting
    would write), so a child never differs from its template by letter case alone."""
    raw = model.spec.template.resource.instance_type
    if raw is None:
        return None
    sku = get_sku(raw)
    return sku.name if sku is not None else raw


def template_part(model: InferenceSet) -> Obj:
    """Everything of the set that ends up in each child, in the form it is written in."""
    tmeta = model.spec.template.metadata
    resource: Obj = {"labelSelector": model.spec.label_selector.to_dict()}
    itype = instance_type_of(model)
    if itype is not None:
        resource["instanceType"] = itype
    partition = model.spec.template.resource.partition
    if partition is not None:  # copied verbatim, as upstream (absent: the hash is as before)
        resource["partition"] = partition.to_dict()
    return {
        "labels": dict(sorted(((tmeta.labels if tmeta else None) or {}).items())),
        "annotations": dict(sorted(((tmeta.annotations if tmeta else None) or {}).items())),
        "resource": resource,
        "inference": model.spec.template.inference.to_dict(),
    }


def template_hash(model: InferenceSet) -> str:
    """A short, stable hash of :func:`template_part` (key order does not matter)."""
    text = json.dumps(template_part(model), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def child_workspace(model: InferenceSet, index: int, *, uid: str | None = None) -> Obj:
    """The Workspace ``<set>-<index>`` as the controller writes it (server-side apply).

    ``uid`` (the set's) adds the controlling owner reference, with ``blockOwnerDeletion`` so a
    foreground deletion of the set waits for its Workspaces; the webhook, which validates before
    the set has a uid, leaves it out.
    """
    meta = model.metadata
    set_name = meta.name or ""
    part = template_part(model)
    labels = {**part["labels"], LABEL_CREATED_BY: set_name, LABEL_INDEX: str(index)}
    annotations = {**part["annotations"], ANNOTATION_TEMPLATE_HASH: template_hash(model)}
    metadata: Obj = {"name": child_name(set_name, index), "labels": labels, "annotations": annotations}
    if meta.namespace:
        metadata["namespace"] = meta.namespace
    if uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{names.GROUP}/{STORAGE_VERSION}",
                "kind": KIND,
                "name": set_name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": f"{names.GROUP}/{STORAGE_VERSION}",
        "kind": names.KIND,
        "metadata": metadata,
        "resource": part["resource"],
        "inference": part["inference"],
    }


__all__ = ["child_workspace", "instance_type_of", "template_hash", "template_part"]
