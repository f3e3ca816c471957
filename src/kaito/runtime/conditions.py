"""Status conditions with Kubernetes' metav1.Condition semantics on plain dicts.

``lastTransitionTime`` moves only when ``status`` flips: clients use it to tell how long a
condition has held, and rewriting it on every reconcile would also make every reconcile a write.
Every function reports whether it changed anything, so a reconciler can skip the status update
when the object is already converged (0 writes at steady state).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"


def now_rfc3339() -> str:
    """Second precision, because metav1.Time serialises to whole seconds on the wire."""
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _conditions(obj: Obj, create: bool) -> list[Obj] | None:
    status = obj.get("status")
    if status is None:
        if not create:
            return None
        status = obj["status"] = {}
    conds = status.get("conditions")
    if conds is None:
        if not create:
            return None
        conds = status["conditions"] = []
    return conds


def get_condition(obj: Obj, type_: str) -> Obj | None:
    for cond in _conditions(obj, create=False) or []:
        if cond.get("type") == type_:
            return cond
    return None


def is_true(obj: Obj, type_: str) -> bool:
    cond = get_condition(obj, type_)
    return cond is not None and cond.get("status") == TRUE


def set_condition(
    obj: Obj,
    type_: str,
    status: str | bool,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: Callable[[], str] = now_rfc3339,
) -> bool:
    """Upsert ``status.conditions[type_]`` in place; return True when the object changed.

    ``observed_generation`` defaults to the object's ``metadata.generation`` so that readers can
    tell a stale condition from one computed for the current spec.
    """
    if isinstance(status, bool):
        status = TRUE if status else FALSE
    if status not in (TRUE, FALSE, UNKNOWN):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    if observed_generation is None:
        gen = (obj.get("metadata") or {}).get("generation")
        observed_generation = gen if isinstance(gen, int) else None
    conds = _conditions(obj, create=True)
    assert conds is not None
    wanted: Obj = {"type": type_, "status": status, "reason": reason, "message": message}
    if observed_generation is not None:
        wanted["observedGeneration"] = observed_generation
    for cond in conds:
        if cond.get("type") != type_:
            continue
        changed = False
        if cond.get("status") != status:
            cond["lastTransitionTime"] = now()
            changed = True
        for key, value in wanted.items():
            if cond.get(key) != value:
                cond[key] = value
                changed = True
        if "lastTransitionTime" not in cond:
            cond["lastTransitionTime"] = now()
            changed = True
        return changed
    wanted["lastTransitionTime"] = now()
    conds.append(wanted)
    return True


def remove_condition(obj: Obj, type_: str) -> bool:
    conds = _conditions(obj, create=False)
    if not conds:
        return False
    kept = [c for c in conds if c.get("type") != type_]
    if len(kept) == len(conds):
        return False
    conds[:] = kept
    return True


def set_observed_generation(obj: Obj) -> bool:
    """Copy ``metadata.generation`` to ``status.observedGeneration``; True when it moved."""
    gen = (obj.get("metadata") or {}).get("generation")
    if gen is None:
        return False
    status = obj.setdefault("status", {})
    if status.get("observedGeneration") == gen:
        return False
    status["observedGeneration"] = gen
    return True
