"""What to do next for one InferenceSet, from what the cache shows: pure, so every rule about
scaling and rolling is unit-tested without a cluster.

Rules, as a StatefulSet with ``podManagementPolicy: Parallel`` and ``maxUnavailable`` has them:

- Children are ``<set>-0`` .. ``<set>-<replicas-1>``. Missing ones are created together.
- Scale down deletes every child at or above ``replicas``, highest index first (and any child the
  set owns whose name is not ``<set>-<index>``).
- Rolling: a child whose template hash is not the set's is outdated. It is rolled (updated in
  place, or replaced when a field the Workspace freezes changed) only while fewer than
  ``maxUnavailable`` children in range are unavailable (missing, deleting or not WorkspaceReady
  for their current spec); an outdated child that is already unavailable is rolled at once, since
  that takes nothing more out of service. Not-ready children go first, then the highest index.
  ``OnDelete`` never rolls: a child takes the new template when it is deleted and recreated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from kaito.api import names
from kaito.api.inferenceset import ANNOTATION_TEMPLATE_HASH, InferenceSet, child_index
from kaito.api.workspace import InferenceSpec
from kaito.presets import get_sku

Obj = dict[str, Any]


@dataclass(frozen=True)
class Child:
    """One child Workspace as the controller sees it (cache plus its own unseen writes)."""

    name: str
    #: ``<set>-<index>``'s index; None for a name the set would not give.
    index: int | None
    #: Hash of the template it was written from (annotation), None when absent.
    template_hash: str | None
    #: WorkspaceReady True for its current spec, and not being deleted.
    ready: bool
    deleting: bool
    #: Why it is not ready (``reason: message`` of its WorkspaceReady), for status messages.
    why: str = ""
    obj: Obj = field(default_factory=dict, compare=False, repr=False)


RollKind = Literal["update", "replace"]


@dataclass(frozen=True)
class Roll:
    name: str
    index: int
    kind: RollKind
    #: For a replace: which frozen Workspace field changed.
    reason: str = ""


@dataclass
class Plan:
    #: Indexes to create.
    create: list[int] = field(default_factory=list)
    #: Names to delete for scale down, highest index first.
    delete: list[str] = field(default_factory=list)
    #: Outdated children to roll now.
    roll: list[Roll] = field(default_factory=list)
    #: Outdated children left for later (their names), and why.
    waiting: list[str] = field(default_factory=list)
    wait_reason: str = ""


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def ready_condition(ws: Obj) -> Obj | None:
    for cond in (ws.get("status") or {}).get("conditions") or ():
        if cond.get("type") == names.WORKSPACE_READY:
            return dict(cond)
    return None


def workspace_ready(ws: Obj) -> tuple[bool, str]:
    """(ready, why not): WorkspaceReady True for the Workspace's current generation.

    The generation check matters for in-place updates: right after a spec change the stored
    condition still says True about the previous spec, until the workspace controller looks.
    """
    meta = _meta(ws)
    if meta.get("deletionTimestamp"):
        return False, "being deleted"
    gen = meta.get("generation")
    observed = (ws.get("status") or {}).get("observedGeneration")
    if isinstance(gen, int) and (not isinstance(observed, int) or observed < gen):
        return False, "its controller has not yet acted on its current spec"
    cond = ready_condition(ws)
    if cond is None:
        return False, "no WorkspaceReady condition yet"
    cond_gen = cond.get("observedGeneration")
    if isinstance(gen, int) and isinstance(cond_gen, int) and cond_gen < gen:
        return False, "its WorkspaceReady condition describes an older spec"
    if cond.get("status") != "True":
        return False, f"{cond.get('reason') or 'NotReady'}: {cond.get('message') or ''}".rstrip(": ")
    return True, ""


def child_of(set_name: str, ws: Obj) -> Child:
    meta = _meta(ws)
    name = str(meta.get("name") or "")
    ready, why = workspace_ready(ws)
    return Child(
        name=name,
        index=child_index(set_name, name),
        template_hash=(meta.get("annotations") or {}).get(ANNOTATION_TEMPLATE_HASH),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        why=why,
        obj=ws,
    )


def _canonical_sku(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    sku = get_sku(value)
    return sku.name if sku is not None else value


def _preset(inference: Any) -> Any:
    try:
        spec = InferenceSpec.model_validate(inference or {})
    except ValidationError:
        return ("unparseable", repr(inference))
    return spec.preset.to_dict() if spec.preset is not None else None


def replace_reason(current: Obj, desired: Obj) -> str:
    """Which field the Workspace freezes differs between a child and what the template wants
    ("" when an in-place update will do): instance type, label selector, preset (name, access
    mode, options), and whether the inference is a preset or a pod template."""
    cur_res, want_res = current.get("resource") or {}, desired.get("resource") or {}
    if _canonical_sku(cur_res.get("instanceType")) != _canonical_sku(want_res.get("instanceType")):
        return "resource.instanceType changed"
    if (cur_res.get("labelSelector") or {}) != (want_res.get("labelSelector") or {}):
        return "resource.labelSelector changed"
    cur_inf, want_inf = current.get("inference") or {}, desired.get("inference") or {}
    if _preset(cur_inf) != _preset(want_inf):
        return "inference.preset changed"
    if ("template" in cur_inf) != ("template" in want_inf):
        return "inference switched between preset and template"
    return ""


def plan(model: InferenceSet, children: list[Child], desired_hash: str, desired: dict[int, Obj]) -> Plan:
    """The next writes for the set. ``desired`` maps each index in range to its Workspace
    manifest (only the rolled ones are looked up)."""
    replicas = model.spec.replicas
    out = Plan()
    by_index: dict[int, Child] = {}
    for child in children:
        if child.index is None or child.index >= replicas:
            continue
        by_index[child.index] = child
    extras = [c for c in children if (c.index is None or c.index >= replicas) and not c.deleting]
    extras.sort(key=lambda c: (c.index is not None, c.index or 0), reverse=True)
    out.delete = [c.name for c in extras]
    out.create = [i for i in range(replicas) if i not in by_index]
    if model.spec.on_delete:
        return out
    unavailable = sum(1 for i in range(replicas) if i not in by_index or not by_index[i].ready)
    outdated = [c for c in by_index.values() if not c.deleting and c.template_hash != desired_hash]
    outdated.sort(key=lambda c: (c.ready, -(c.index or 0)))
    budget = model.spec.max_unavailable
    for child in outdated:
        assert child.index is not None
        if child.ready:
            if unavailable >= budget:
                out.waiting.append(child.name)
                continue
            unavailable += 1
        reason = replace_reason(child.obj, desired[child.index])
        out.roll.append(Roll(child.name, child.index, "replace" if reason else "update", reason))
    if out.waiting:
        out.wait_reason = (
            f"{unavailable} of {replicas} Workspaces unavailable (maxUnavailable {budget}); "
            f"{len(out.waiting)} more to roll once they are WorkspaceReady"
        )
    return out


__all__ = ["Child", "Plan", "Roll", "child_of", "plan", "replace_reason", "workspace_ready"]
