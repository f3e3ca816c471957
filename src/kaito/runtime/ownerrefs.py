"""Owner references: the edges garbage collection and ``Controller.owns`` follow.

At most one owner reference may say ``controller: true``; the API server enforces that, but
failing here gives the reconciler a clear error instead of a 422 halfway through a write.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


class AlreadyOwnedError(ValueError):
    """The object already has a different controller; adopting it would steal it."""

    def __init__(self, obj: Obj, existing: Obj, wanted: Obj) -> None:
        meta = obj.get("metadata") or {}
        name = "/".join(p for p in (meta.get("namespace"), meta.get("name")) if p)
        super().__init__(
            f"{obj.get('kind', 'object')} {name} is already controlled by "
            f"{existing.get('kind')} {existing.get('name')} (uid {existing.get('uid')}); "
            f"refusing to make {wanted.get('kind')} {wanted.get('name')} its controller"
        )
        self.existing = existing
        self.wanted = wanted


def _ref_for(owner: Obj, *, controller: bool, block_owner_deletion: bool) -> Obj:
    meta = owner.get("metadata") or {}
    if not meta.get("uid") or not meta.get("name"):
        raise ValueError("owner must have metadata.name and metadata.uid (read it from the API first)")
    ref: Obj = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
    }
    if controller:
        ref["controller"] = True
    if block_owner_deletion:
        ref["blockOwnerDeletion"] = True
    return ref


def _same_owner(a: Obj, b: Obj) -> bool:
    """Match on group + kind + name, ignoring version, as controller-runtime does."""

    def group(api_version: str) -> str:
        return api_version.rpartition("/")[0]

    return (
        group(str(a.get("apiVersion", ""))) == group(str(b.get("apiVersion", "")))
        and a.get("kind") == b.get("kind")
        and a.get("name") == b.get("name")
    )


def _check_namespaces(owner: Obj, obj: Obj) -> None:
    owner_ns = (owner.get("metadata") or {}).get("namespace")
    obj_ns = (obj.get("metadata") or {}).get("namespace")
    if owner_ns and owner_ns != obj_ns:
        raise ValueError(
            f"cross-namespace owner references are not allowed (owner in {owner_ns!r}, object in {obj_ns!r})"
        )


def set_controller_reference(owner: Obj, obj: Obj, *, block_owner_deletion: bool = True) -> bool:
    """Make ``owner`` the controller of ``obj`` in place; True when ``obj`` changed."""
    _check_namespaces(owner, obj)
    wanted = _ref_for(owner, controller=True, block_owner_deletion=block_owner_deletion)
    existing = get_controller_of(obj)
    if existing is not None and not _same_owner(existing, wanted):
        raise AlreadyOwnedError(obj, existing, wanted)
    return _upsert(obj, wanted)


def set_owner_reference(owner: Obj, obj: Obj) -> bool:
    """Add a non-controller owner reference (GC edge only); True when ``obj`` changed."""
    _check_namespaces(owner, obj)
    wanted = _ref_for(owner, controller=False, block_owner_deletion=False)
    existing = next((r for r in _refs(obj) if _same_owner(r, wanted)), None)
    if existing is not None and existing.get("controller"):
        wanted["controller"] = True
        wanted["blockOwnerDeletion"] = existing.get("blockOwnerDeletion", False)
    return _upsert(obj, wanted)


def _refs(obj: Obj) -> list[Obj]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


def _upsert(obj: Obj, wanted: Obj) -> bool:
    meta = obj.setdefault("metadata", {})
    refs = _refs(obj)
    for i, ref in enumerate(refs):
        if _same_owner(ref, wanted):
            if ref == wanted:
                return False
            refs[i] = wanted
            meta["ownerReferences"] = refs
            return True
    refs.append(wanted)
    meta["ownerReferences"] = refs
    return True


def get_controller_of(obj: Obj) -> Obj | None:
    for ref in _refs(obj):
        if ref.get("controller"):
            return ref
    return None


def is_controlled_by(obj: Obj, owner: Obj) -> bool:
    ref = get_controller_of(obj)
    return ref is not None and ref.get("uid") == (owner.get("metadata") or {}).get("uid")


def remove_owner_reference(owner: Obj, obj: Obj) -> bool:
    uid = (owner.get("metadata") or {}).get("uid")
    refs = _refs(obj)
    kept = [r for r in refs if r.get("uid") != uid]
    if len(kept) == len(refs):
        return False
    obj.setdefault("metadata", {})["ownerReferences"] = kept
    return True
