"""CustomResourceDefinitions generated from the pydantic models.

``python -m kaito.api.crd`` rewrites config/crd; ``--check`` exits 1 when the committed YAML differs
from a fresh generation (the unit tests do the same). Pydantic's JSON Schema is turned into a
Kubernetes structural schema: references inlined, ``Optional`` collapsed, free-form objects marked
``x-kubernetes-preserve-unknown-fields``, CEL rules carried through from the models.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kaito.api import inferenceset as iset
from kaito.api import names as c
from kaito.api.inferenceset import InferenceSet
from kaito.api.nodeclaim import NodeClaim, NodePool
from kaito.api.workspace import Workspace

JSON = dict[str, Any]
_DROP = {"title", "discriminator", "const", "examples"}
_STRUCTURAL_ROOT_FIELDS = {"apiVersion", "kind", "metadata"}


class SchemaError(ValueError):
    """A model whose JSON Schema has no structural OpenAPI equivalent."""


def _structural(node: Any, defs: Mapping[str, JSON]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[1]]
        node = {**target, **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        node = {**_structural(inner, defs), **node}
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        if len(branches) != 1:
            raise SchemaError(f"union types are not structural: {branches}")
        inner = _structural(branches[0], defs)
        outer = {k: v for k, v in node.items() if k != "default" or v is not None}
        # Keys set on the outer (field-level) schema win, except nested maps, which merge.
        node = {**inner, **outer}
    out: JSON = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:
                out[key] = _structural(value, defs)
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key in ("items", "x-kubernetes-validations"):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def openapi_schema(model: type[BaseModel], *, open_root_fields: bool = False) -> JSON:
    """The structural openAPIV3Schema for ``model`` (a top-level Kubernetes object)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: JSON = _structural(raw, defs)
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object"}
    schema["required"] = [r for r in schema.get("required", []) if r not in _STRUCTURAL_ROOT_FIELDS]
    if not schema["required"]:
        del schema["required"]
    if open_root_fields:
        schema.pop("x-kubernetes-preserve-unknown-fields", None)
    schema.pop("description", None)
    ordered = {"description": _doc(model), "type": "object"}
    ordered.update({k: v for k, v in schema.items() if k not in ordered})
    return ordered


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def _condition_column(name: str, condition: str, priority: int = 0) -> JSON:
    col: JSON = {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
    }
    if priority:
        col["priority"] = priority
    return col


def workspace_printer_columns(version: str = c.V1ALPHA1) -> list[JSON]:
    """Default columns match ``kubectl get workspace`` in the user docs; the rest are ``-o wide``.

    ``kubectl get workspace`` always prints the preferred version's columns (v1beta1), and the
    seed's docs promise ``NAME INSTANCE RESOURCEREADY INFERENCEREADY WORKSPACEREADY AGE``, so
    both versions keep those as the default. v1alpha1 keeps the seed's wide columns unchanged;
    v1beta1's wide view is upstream's table (its column names, in its order: TargetNodeCount,
    State) with kaito's WorkspaceReady in it.
    """
    if version not in c.VERSIONS:
        raise ValueError(f"unknown Workspace version {version!r}; served: {', '.join(c.VERSIONS)}")
    instance = {"name": "Instance", "type": "string", "jsonPath": ".resource.instanceType"}
    age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    state = {"name": "State", "type": "string", "jsonPath": ".status.state", "priority": 1}
    head = [
        instance,
        _condition_column("ResourceReady", c.RESOURCE_READY),
        _condition_column("InferenceReady", c.INFERENCE_READY),
        _condition_column("JobStarted", c.JOB_STARTED, priority=1),
        _condition_column("WorkspaceSucceeded", c.WORKSPACE_SUCCEEDED, priority=1),
        _condition_column("WorkspaceReady", c.WORKSPACE_READY),
    ]

    def targets(name: str) -> JSON:
        return {"name": name, "type": "integer", "jsonPath": ".status.targetNodeCount", "priority": 1}

    if version == c.V1ALPHA1:
        return [*head, state, targets("TargetNodes"), age]
    return [*head, targets("TargetNodeCount"), state, age]


def workspace_crd() -> JSON:
    schema = openapi_schema(Workspace)
    versions: list[JSON] = [
        {
            "name": version,
            "served": True,
            "storage": version == c.STORAGE_VERSION,
            "schema": {"openAPIV3Schema": schema},
            "subresources": {"status": {}},
            "additionalPrinterColumns": workspace_printer_columns(version),
        }
        for version in c.VERSIONS
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{c.PLURAL}.{c.GROUP}"},
        "spec": {
            "group": c.GROUP,
            "names": {
                "kind": c.KIND,
                "listKind": f"{c.KIND}List",
                "plural": c.PLURAL,
                "singular": c.SINGULAR,
                "shortNames": list(c.SHORT_NAMES),
                "categories": list(c.CATEGORIES),
            },
            "scope": "Namespaced",
            # Same schema in both versions (kaito.api.workspace says why): the apiserver only
            # rewrites apiVersion, and the round trip is tested on a real apiserver.
            "conversion": {"strategy": "None"},
            "versions": versions,
        },
    }


def inferenceset_printer_columns() -> list[JSON]:
    """Upstream's columns (Replicas, ReadyReplicas, Age); ``-o wide`` adds the Ready condition
    and how many children run the current template."""
    return [
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "ReadyReplicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Updated", "type": "integer", "jsonPath": ".status.updatedReplicas", "priority": 1},
        _condition_column("Ready", iset.CONDITION_READY, priority=1),
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def inferenceset_crd() -> JSON:
    """Both versions, one schema (as for Workspaces), v1beta1 stored; the scale subresource lets
    ``kubectl scale``, HorizontalPodAutoscalers and KEDA set ``spec.replicas``."""
    schema = openapi_schema(InferenceSet)
    versions: list[JSON] = [
        {
            "name": version,
            "served": True,
            "storage": version == iset.STORAGE_VERSION,
            "schema": {"openAPIV3Schema": schema},
            "subresources": {
                "status": {},
                "scale": {
                    "specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas",
                    "labelSelectorPath": ".status.selector",
                },
            },
            "additionalPrinterColumns": inferenceset_printer_columns(),
        }
        for version in iset.VERSIONS
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{iset.PLURAL}.{iset.GROUP}"},
        "spec": {
            "group": iset.GROUP,
            "names": {
                "kind": iset.KIND,
                "listKind": f"{iset.KIND}List",
                "plural": iset.PLURAL,
                "singular": iset.SINGULAR,
                "shortNames": list(iset.SHORT_NAMES),
                "categories": list(iset.CATEGORIES),
            },
            "scope": "Namespaced",
            "conversion": {"strategy": "None"},
            "versions": versions,
        },
    }


def _karpenter_crd(model: type[BaseModel], kind: str, plural: str, scope: str, columns: list[JSON]) -> JSON:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.karpenter.sh"},
        "spec": {
            "group": "karpenter.sh",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "categories": ["karpenter"],
            },
            "scope": scope,
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema(model)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def nodeclaim_crd() -> JSON:
    return _karpenter_crd(
        NodeClaim,
        "NodeClaim",
        "nodeclaims",
        "Cluster",
        [
            {
                "name": "Type",
                "type": "string",
                "jsonPath": ".metadata.labels.node\\.kubernetes\\.io/instance-type",
            },
            {"name": "Node", "type": "string", "jsonPath": ".status.nodeName"},
            _condition_column("Ready", "Ready"),
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def nodepool_crd() -> JSON:
    return _karpenter_crd(
        NodePool,
        "NodePool",
        "nodepools",
        "Cluster",
        [
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            _condition_column("Ready", "Ready"),
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


class _NoAliasDumper(yaml.SafeDumper):
    """Repeated sub-schemas are written out in full: anchors confuse kubectl users and diffs."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


HEADER = "# Generated by `python -m kaito.api.crd` from src/kaito/api; do not edit.\n"


def render(crd: JSON) -> str:
    return HEADER + "---\n" + yaml.dump(crd, Dumper=_NoAliasDumper, sort_keys=False, width=120)


def generated() -> dict[str, str]:
    """File name under config/crd -> YAML text."""
    return {
        f"{c.GROUP}_{c.PLURAL}.yaml": render(workspace_crd()),
        f"{iset.GROUP}_{iset.PLURAL}.yaml": render(inferenceset_crd()),
        "karpenter.sh_nodeclaims.yaml": render(nodeclaim_crd()),
        "karpenter.sh_nodepools.yaml": render(nodepool_crd()),
    }


def default_crd_dir() -> Path | None:
    """config/crd of the source checkout this module runs from; None when installed from a wheel
    (there is no config/ beside site-packages: ``kaito crds`` prints them instead)."""
    root = Path(__file__).resolve().parents[3]
    return root / "config" / "crd" if (root / "pyproject.toml").is_file() else None


def stale_files(directory: Path) -> list[str]:
    """Files under ``directory`` that differ from a fresh generation."""
    return [
        name
        for name, text in generated().items()
        if not (directory / name).exists() or (directory / name).read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kaito.api.crd", description=__doc__)
    parser.add_argument("--out", type=Path, default=default_crd_dir())
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are out of date")
    args = parser.parse_args(argv)
    if args.out is None:
        parser.error(
            "not a source checkout, so there is no config/crd to write: pass --out DIR, or "
            "print them with `kaito crds`"
        )
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"{args.out / name} is out of date; run python -m kaito.api.crd", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in generated().items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
