"""Finalizer bookkeeping on plain dicts.

Each function reports whether it changed the object, so the caller writes only when needed:
an unconditional update per reconcile would turn every event into another event.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def has_finalizer(obj: Obj, name: str) -> bool:
    return name in ((obj.get("metadata") or {}).get("finalizers") or [])


def add_finalizer(obj: Obj, name: str) -> bool:
    meta = obj.setdefault("metadata", {})
    fins = meta.get("finalizers") or []
    if name in fins:
        return False
    meta["finalizers"] = [*fins, name]
    return True


def remove_finalizer(obj: Obj, name: str) -> bool:
    meta = obj.get("metadata") or {}
    fins = meta.get("finalizers") or []
    if name not in fins:
        return False
    meta["finalizers"] = [f for f in fins if f != name]
    return True


def is_being_deleted(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def finalizers_patch(obj: Obj) -> Obj:
    """A merge patch that writes the object's finalizer list guarded by its resourceVersion.

    Merge patches replace lists wholesale, so without the resourceVersion precondition a
    concurrent writer's finalizer could be dropped; with it the API answers 409 and the caller
    retries on a fresh copy.
    """
    meta = obj.get("metadata") or {}
    patch_meta: Obj = {"finalizers": list(meta.get("finalizers") or [])}
    if meta.get("resourceVersion"):
        patch_meta["resourceVersion"] = meta["resourceVersion"]
    return {"metadata": patch_meta}
