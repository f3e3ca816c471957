"""The status an InferenceSet should show, aggregated from its children (pure).

``replicas`` counts children that exist and are not being deleted, which is what the scale
subresource reports to an autoscaler as "current"; ``readyReplicas`` those WorkspaceReady for their
current spec; ``updatedReplicas`` those on the current template. One condition,
``InferenceSetReady`` (upstream's type), is True only when exactly the desired children exist and
every one is ready on the current template; otherwise its reason says which of scaling, rolling
or a not-ready Workspace is in the way, and its message names the first such Workspace.
"""

from __future__ import annotations

import copy
from typing import Any

from kaito.api.inferenceset import CONDITION_READY, InferenceSet, selector_of
from kaito.controllers.inferenceset.plan import Child, Plan
from kaito.runtime import set_condition

Obj = dict[str, Any]

READY = "InferenceSetReady"
SCALING_UP = "ScalingUp"
SCALING_DOWN = "ScalingDown"
ROLLING = "RollingUpdate"
NOT_READY = "WorkspacesNotReady"
#: A write the controller needs failed (message: the API's answer), e.g. a webhook refused it.
WRITE_FAILED = "WorkspaceWriteFailed"


def desired_status(
    set_obj: Obj,
    model: InferenceSet,
    children: list[Child],
    desired_hash: str,
    next_step: Plan,
    error: str = "",
) -> Obj:
    """A copy of ``set_obj`` with the status it should have now."""
    new = copy.deepcopy(set_obj)
    status = new.setdefault("status", {})
    live = [c for c in children if not c.deleting]
    want = model.spec.replicas
    in_range = [c for c in live if c.index is not None and c.index < want]
    ready = [c for c in live if c.ready]
    updated = [c for c in live if c.template_hash == desired_hash]
    status["replicas"] = len(live)
    status["readyReplicas"] = len(ready)
    status["updatedReplicas"] = len(updated)
    status["selector"] = selector_of(str((new.get("metadata") or {}).get("name") or ""))
    gen = (new.get("metadata") or {}).get("generation")
    if isinstance(gen, int):
        status["observedGeneration"] = gen
    counts = f"{sum(1 for c in in_range if c.ready)} of {want} Workspaces ready"
    not_ready = sorted((c for c in in_range if not c.ready), key=lambda c: c.index or 0)
    first = f"; {not_ready[0].name}: {not_ready[0].why}" if not_ready and not_ready[0].why else ""
    if error:
        ok, reason, message = False, WRITE_FAILED, f"{counts}; {error}"
    elif len(in_range) < want or next_step.create:
        ok, reason, message = False, SCALING_UP, f"{counts}; creating {want - len(in_range)}{first}"
    elif len(live) > want or any(c.deleting for c in children):
        gone = len(children) - len(in_range)
        ok, reason, message = False, SCALING_DOWN, f"{counts}; {gone} Workspace(s) being removed"
    elif any(c.template_hash != desired_hash for c in in_range):
        stale = sum(1 for c in in_range if c.template_hash != desired_hash)
        message = f"{counts}; {stale} Workspace(s) still on the previous template"
        if next_step.wait_reason:
            message += f" ({next_step.wait_reason})"
        ok, reason = False, ROLLING
        message += first
    elif not_ready:
        ok, reason, message = False, NOT_READY, counts + first
    else:
        ok, reason, message = True, READY, counts
    set_condition(
        new, CONDITION_READY, ok, reason, message, observed_generation=gen if isinstance(gen, int) else None
    )
    return new


__all__ = ["NOT_READY", "READY", "ROLLING", "SCALING_DOWN", "SCALING_UP", "WRITE_FAILED", "desired_status"]
