"""Generated odd and invalid Workspaces for the fuzz suite (issue 14, suite 4).

Each case starts from a valid Workspace (inference with a preset, inference with adapters, tuning;
either served version) and gets one to three mutations at a path taken from the document itself,
from the CRD's openAPIV3Schema (config/crd) or from the pydantic models' field names
(kaito.api.workspace): a wrong type, a null, a huge or unicode string, a deleted (required) field,
an unknown extra field, a snake_case spelling of a camelCase field. The strategies live here, apart
from the test, so the cases are the same whichever surface (function, CLI, apiserver) gets them.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st
from pydantic import BaseModel

from kaito.api.labels import RESERVED_DOMAINS
from kaito.api.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "config" / "crd" / "kaito.sh_workspaces.yaml"
VERSIONS = ("v1alpha1", "v1beta1")
Path_ = tuple[str | int, ...]


def _inference() -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "fuzz", "labels": {"team": "a"}, "annotations": {"note": "x"}},
        "resource": {
            "instanceType": "Standard_NC6s_v3",
            "count": 1,
            "labelSelector": {"matchLabels": {"apps": "phi-3"}},
        },
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


def _adapters() -> dict[str, Any]:
    ws = _inference()
    ws["inference"]["adapters"] = [
        {"source": {"name": "a1", "image": "example.azurecr.io/adapter:0.1"}, "strength": "0.5"},
        {"source": {"name": "a2", "urls": ["https://example.com/adapter.safetensors"]}},
    ]
    return ws


def _tuning() -> dict[str, Any]:
    ws = _inference()
    del ws["inference"]
    ws["tuning"] = {
        "preset": {"name": "phi-3-mini-4k-instruct"},
        "method": "qlora",
        "input": {"urls": ["https://example.com/data.parquet"]},
        "output": {"image": "example.azurecr.io/out:0.1", "imagePushSecret": "push"},
    }
    return ws


BASES = (_inference, _adapters, _tuning)


@cache
def schema_paths() -> tuple[Path_, ...]:
    """Every property path of the CRD schema (``*`` stands for any list index / map key)."""
    doc = yaml.safe_load(CRD.read_text())
    out: list[Path_] = []

    def walk(node: dict[str, Any], path: Path_) -> None:
        for name, sub in (node.get("properties") or {}).items():
            out.append((*path, name))
            walk(sub, (*path, name))
        items = node.get("items")
        if isinstance(items, dict):
            walk(items, (*path, 0))
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, (*path, "k"))

    for version in doc["spec"]["versions"]:
        walk(version["schema"]["openAPIV3Schema"], ())
    return tuple(sorted(set(out), key=str))


@cache
def model_field_names() -> tuple[str, ...]:
    """Python (snake_case) names of every model field: kubectl users type them by mistake."""
    names: set[str] = set()
    seen: set[type] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            names.add(name)
            for arg in _model_args(info.annotation):
                walk(arg)

    walk(Workspace)
    return tuple(sorted(n for n in names if "_" in n))


def _model_args(annotation: Any) -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        a = stack.pop()
        if isinstance(a, type) and issubclass(a, BaseModel):
            out.append(a)
        stack.extend(getattr(a, "__args__", ()) or ())
    return out


def doc_paths(doc: Any, path: Path_ = ()) -> list[Path_]:
    out: list[Path_] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*path, k))
            out.extend(doc_paths(v, (*path, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((*path, i))
            out.extend(doc_paths(v, (*path, i)))
    return out


# Unicode without lone surrogates (no JSON or YAML encoder carries those).
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
HUGE = ["x" * 100_000, "é" * 40_000, "🤖" * 20_000, "a/" * 30_000, "\u202e" + "z" * 5000]
odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 2**62, 65, 10**18]),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
    st.sampled_from(HUGE),
    st.sampled_from(["", " ", "1", "true", "null", "0.5", "-", "Standard_NC6S_V3", "../../etc/passwd",
                     "http://169.254.169.254/latest", "https://[::1]/x", "file:///etc/shadow",
                     "\uff21\uff22\uff23", "\x00", "a\nb", "{{ .Values }}", "${HOME}", "' or 1=1 --",
                     "[/]", "[bold]x[/bold]", "[/red]", "[link=file:///etc/passwd]x"]),
    st.lists(st.one_of(_text, st.integers(), st.none()), max_size=4),
    st.dictionaries(_text, st.one_of(_text, st.integers(), st.none()), max_size=3),
    # more items than any list allows
    st.lists(st.fixed_dictionaries({"name": st.just("n")}), min_size=11, max_size=60),
)


def _parent(doc: Any, path: Path_) -> tuple[Any, str | int] | None:
    """The container holding ``path``'s last step, creating dicts on the way; None if blocked."""
    node = doc
    for step in path[:-1]:
        if isinstance(node, dict):
            if isinstance(step, int):
                return None
            nxt = node.get(step)
            if nxt is None:
                nxt = node[step] = {}
            node = nxt
        elif isinstance(node, list):
            if not isinstance(step, int) or not node:
                return None
            node = node[min(step, len(node) - 1)]
        else:
            return None
    last = path[-1]
    if isinstance(node, dict) and isinstance(last, str):
        return node, last
    if isinstance(node, list) and isinstance(last, int) and node:
        return node, min(last, len(node) - 1)
    return None


# --- label selectors (issue 21 holes 1 and 2) ---------------------------------------------------
# Built by construction, not with kaito's own checker as the oracle: a reserved key is a valid key
# under a domain kaito / Karpenter / AKS / Kubernetes write; a bad key or value breaks exactly one
# of apimachinery's rules.

_label_name = st.from_regex(r"[a-z0-9]([-a-z0-9_.]{0,12}[a-z0-9])?", fullmatch=True)
reserved_keys = st.builds(
    lambda sub, domain, name: f"{sub}{domain}/{name}",
    st.sampled_from(["", "", "x.", "node-role.", "topology."]),
    st.sampled_from([*RESERVED_DOMAINS, "karpenter.k8s.aws", "karpenter.k8s.oracle"]),
    st.sampled_from(["workspace", "workspacenamespace", "nodepool", "os", "instance-type"]) | _label_name,
)
_BAD_CHARS = [" ", "!", ",", "=", "@", "*", ":", ";", "\t", "\n", "é", "🤖", "\u202e", "\x00", "'", '"']


def _spoiled(name: str, char: str, where: int) -> str:
    """``name`` with a character labels may not hold inserted (inside, at the start or the end)."""
    cut = where % (len(name) + 1)
    return name[:cut] + char + name[cut:]


bad_names = st.one_of(
    st.builds(_spoiled, _label_name, st.sampled_from(_BAD_CHARS), st.integers(0, 20)),
    st.builds(lambda n, edge, front: edge + n if front else n + edge, _label_name,
              st.sampled_from(["-", "_", "."]), st.booleans()),
    st.integers(64, 300).map(lambda n: "a" * n),
)  # fmt: skip
bad_keys = st.one_of(
    bad_names,
    bad_names.map(lambda n: f"example.com/{n}"),
    _label_name.map(lambda n: f"/{n}"),
    _label_name.map(lambda n: f"example.com/{n}/x"),
    st.sampled_from(["example.com/", "Example.COM/x", "exa_mple.com/x", "-x.com/y", "a..b/c", "bad key!"]),
    st.integers(254, 400).map(lambda n: "a" * n + "/x"),
)
bad_values = bad_names


SELECTOR_FAULTS = (
    "reserved-label",
    "reserved-expr",
    "bad-key",
    "bad-expr-key",
    "bad-value",
    "bad-expr-value",
    "in-without-values",
    "exists-with-values",
)


@st.composite
def bad_selector(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    """A label selector with one reserved key or one syntax error: (selector, the field the
    error must name, what was done)."""
    base = "resource.labelSelector"
    own = {"apps": "phi-3"}
    kind = draw(st.sampled_from(SELECTOR_FAULTS))
    if kind in ("reserved-label", "bad-key"):
        key = draw(reserved_keys if kind == "reserved-label" else bad_keys)
        sel: dict[str, Any] = {"matchLabels": {**own, key: draw(_label_name)}}
        return sel, f"{base}.matchLabels[{json.dumps(key, ensure_ascii=False)}]", f"{kind} {key!r}"
    if kind in ("reserved-expr", "bad-expr-key"):
        key = draw(reserved_keys if kind == "reserved-expr" else bad_keys)
        op = draw(st.sampled_from(["Exists", "DoesNotExist"]))
        sel = {"matchLabels": own, "matchExpressions": [{"key": key, "operator": op}]}
        return sel, f"{base}.matchExpressions[0].key", f"{kind} {key!r}"
    if kind == "bad-value":
        value = draw(bad_values)
        return {"matchLabels": {"apps": value}}, f'{base}.matchLabels["apps"]', f"{kind} {value!r}"
    if kind == "bad-expr-value":
        value = draw(bad_values)
        sel = {"matchExpressions": [{"key": "apps", "operator": draw(st.sampled_from(["In", "NotIn"])),
                                     "values": ["phi-3", value]}]}  # fmt: skip
        return sel, f"{base}.matchExpressions[0].values[1]", f"{kind} {value!r}"
    if kind == "in-without-values":
        op = draw(st.sampled_from(["In", "NotIn"]))
        req: dict[str, Any] = {"key": "apps", "operator": op}
        if draw(st.booleans()):
            req["values"] = []
        return {"matchExpressions": [req]}, f"{base}.matchExpressions[0].values", f"{kind} {op}"
    op = draw(st.sampled_from(["Exists", "DoesNotExist"]))
    sel = {"matchExpressions": [{"key": "apps", "operator": op, "values": [draw(_label_name)]}]}
    return sel, f"{base}.matchExpressions[0].values", f"{kind} {op}"


@st.composite
def label_cases(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    """A valid Workspace (inference or tuning, either version) whose selector is spoiled by
    :func:`bad_selector`: (document, field the refusal must name, what was done). The adapters
    base is left out: it is invalid on its own (URL adapter source), and the selector's error
    must be the only one."""
    doc = copy.deepcopy(draw(st.sampled_from([_inference, _tuning]))())
    doc["apiVersion"] = f"kaito.sh/{draw(st.sampled_from(VERSIONS))}"
    selector, field, step = draw(bad_selector())
    doc["resource"]["labelSelector"] = selector
    return doc, field, step


@st.composite
def mutation(draw: st.DrawFn, doc: dict[str, Any]) -> str:
    """Apply one mutation to ``doc`` in place; return a short description of it."""
    kind = draw(
        st.sampled_from(["replace", "replace", "schema", "delete", "extra", "snake", "null", "labels"])
    )
    if kind == "labels":
        resource = doc.get("resource")
        if not isinstance(resource, dict):
            return "skip labels"
        selector, _, step = draw(bad_selector())
        resource["labelSelector"] = selector
        return step
    if kind in ("replace", "delete", "null", "extra"):
        paths = doc_paths(doc)
        path = draw(st.sampled_from(paths)) if paths else ("metadata",)
    else:
        path = draw(st.sampled_from(schema_paths()))
    spot = _parent(doc, path)
    if spot is None:
        return f"skip {path}"
    node, key = spot
    if kind == "delete":
        if isinstance(node, dict):
            node.pop(key, None)  # type: ignore[call-overload]
        else:
            node.pop(key)  # type: ignore[arg-type]
        return f"delete {path}"
    if kind == "null":
        node[key] = None
        return f"null {path}"
    if kind == "extra":
        target = node[key] if isinstance(node[key], dict) else node
        if isinstance(target, dict):
            name = draw(st.sampled_from(["bogus", "spec", "Resource", "instancetype", "🤖", "x" * 300]))
            target[name] = draw(odd_values)
        return f"extra at {path}"
    if kind == "snake":
        target = node if isinstance(node, dict) else doc
        target[draw(st.sampled_from(model_field_names()))] = draw(odd_values)
        return f"snake at {path}"
    node[key] = draw(odd_values)
    return f"{kind} {path}"


@st.composite
def workspaces(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """(document, what was done to it)."""
    doc = copy.deepcopy(draw(st.sampled_from(BASES))())
    doc["apiVersion"] = f"kaito.sh/{draw(st.sampled_from(VERSIONS))}"
    steps = [draw(mutation(doc)) for _ in range(draw(st.integers(min_value=1, max_value=3)))]
    return doc, steps
