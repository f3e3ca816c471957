"""Write a child object only when what we want differs from what the cache holds.

Two questions, two answers:

- *Did what we want change?* The desired manifest's hash travels in an annotation. A different
  hash (or a missing object) is one server-side apply, which creates or updates in a single
  request and is idempotent, so a restart between two writes cannot duplicate anything.
- *Did someone change what we set?* (``kubectl edit`` of a port, an image, the replicas.) The
  hash cannot tell: it is ours and unchanged. :func:`drift` compares the fields the desired
  manifest sets with the stored object, ignoring everything the apiserver or other controllers
  add (defaults, status, clusterIP); any difference is put back with one merge patch (lists
  replaced whole, so a hand-added port goes too; fields only others set are left alone).

The apiserver may also rewrite a value we set in an equivalent form (a quantity ``0.5`` stored
as ``500m``, in a user's pod template). So that such a field is not "drift" forever,
:class:`Accepted` remembers, per object, the stored form of our fields as the API answered our
last write; an object that still shows exactly that is converged. Every check reads the cache
only: a converged reconcile makes no request.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from kaito.runtime import Client, FuncHandler, get_controller_of

#: Hash of the manifest kaito last applied to this object.
ANNOTATION_DESIRED_HASH = "kaito.sh/desired-hash"

Obj = dict[str, Any]


class NotOwnedError(Exception):
    """An object with the name kaito needs exists and another owner controls it."""


def manifest_hash(desired: Obj) -> str:
    text = json.dumps(desired, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp(desired: Obj) -> Obj:
    """Put the manifest's hash into its own annotations (computed without the annotation)."""
    digest = manifest_hash(desired)
    desired.setdefault("metadata", {}).setdefault("annotations", {})[ANNOTATION_DESIRED_HASH] = digest
    return desired


def up_to_date(desired: Obj, current: Obj | None) -> bool:
    if current is None:
        return False
    want = (desired.get("metadata") or {}).get("annotations", {}).get(ANNOTATION_DESIRED_HASH)
    have = ((current.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_DESIRED_HASH)
    return want is not None and want == have


#: Fields kaito sets but does not compare or patch back: ownerReferences are checked by
#: :func:`check_owner` (others may add theirs), apiVersion/kind are not always in cached objects.
_SKIP_TOP = frozenset({"apiVersion", "kind", "status"})
_SKIP_META = frozenset({"ownerReferences"})
_ABSENT = object()


def _empty(value: Any) -> bool:
    return value is None or value is _ABSENT or value == {} or value == []


def _differs(want: Any, have: Any) -> bool:
    """True when ``have`` does not carry every field of ``want`` with the same value."""
    if isinstance(want, dict):
        if not want:  # an empty map we set (emptyDir: {}): others may fill it
            return not (isinstance(have, dict) or _empty(have))
        if not isinstance(have, dict):
            return True
        return any(_differs(v, have.get(k, _ABSENT)) for k, v in want.items())
    if isinstance(want, list):
        if _empty(want):
            return not _empty(have)
        if not isinstance(have, list) or len(have) != len(want):
            return True
        return any(_differs(w, h) for w, h in zip(want, have, strict=True))
    if want is None:
        return not _empty(have)
    return bool(have is _ABSENT or type(want) is not type(have) or want != have)


def _ours(desired: Obj) -> Obj:
    """The part of a desired manifest that is compared with (and patched back onto) the
    stored object."""
    out = {k: v for k, v in desired.items() if k not in _SKIP_TOP}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in _SKIP_META}
    return out


def _project(want: Any, have: Any) -> Any:
    """``have`` cut to the shape of ``want``: the stored form of the fields we set."""
    if isinstance(want, dict) and isinstance(have, dict):
        return {k: _project(v, have.get(k)) for k, v in want.items()}
    if isinstance(want, list) and isinstance(have, list) and len(want) == len(have):
        return [_project(w, h) for w, h in zip(want, have, strict=True)]
    return have


def fingerprint(desired: Obj, current: Obj) -> str:
    """Hash of the stored form of the fields ``desired`` sets."""
    text = json.dumps(_project(_ours(desired), current), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def drift(desired: Obj, current: Obj) -> bool:
    """Whether ``current`` lacks or changed any field ``desired`` sets (defaults and fields
    set only by others do not count)."""
    return _differs(_ours(desired), current)


def revert_patch(desired: Obj) -> Obj:
    """A JSON merge patch putting every field of ``desired`` back: maps merge, lists are
    replaced whole."""
    return copy.deepcopy(_ours(desired))


class Accepted:
    """Per object: (desired hash, fingerprint of the stored form of our fields) as the API
    answered our last write. An object still matching both is converged even if the apiserver
    stores a field in another, equivalent, form than we wrote it."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, str | None, str], tuple[str, str]] = {}

    @staticmethod
    def _key(gvk: Any, obj: Obj) -> tuple[Any, str | None, str]:
        meta = obj.get("metadata") or {}
        return (gvk, meta.get("namespace"), meta.get("name", ""))

    def record(self, gvk: Any, desired: Obj, written: Obj) -> None:
        self._seen[self._key(gvk, desired)] = (_desired_hash(desired), fingerprint(desired, written))

    def converged(self, gvk: Any, desired: Obj, current: Obj) -> bool:
        """True when ``current`` holds what ``desired`` sets (compared, or as last accepted)."""
        if not drift(desired, current):
            return True
        seen = self._seen.get(self._key(gvk, desired))
        return seen is not None and seen == (_desired_hash(desired), fingerprint(desired, current))

    def forget(self, gvk: Any, namespace: str | None, name: str) -> None:
        self._seen.pop((gvk, namespace, name), None)

    def __len__(self) -> int:
        return len(self._seen)


def _desired_hash(desired: Obj) -> str:
    return str(((desired.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_DESIRED_HASH, ""))


def check_owner(current: Obj | None, owner_uid: str) -> None:
    if current is None:
        return
    ref = get_controller_of(current)
    if ref is None or ref.get("uid") != owner_uid:
        meta = current["metadata"]
        who = f"{ref.get('kind')} {ref.get('name')}" if ref else "nobody (no controller reference)"
        raise NotOwnedError(
            f"{current.get('kind')} {meta.get('namespace')}/{meta.get('name')} exists "
            f"and is controlled by {who}; "
            "rename the Workspace or delete that object"
        )


async def ensure(
    client: Client, desired: Obj, current: Obj | None, owner_uid: str, field_manager: str
) -> Obj | None:
    """Apply ``desired`` (already stamped) unless the cached ``current`` already matches.

    Returns the object the API answered with, or None when nothing was written.
    """
    check_owner(current, owner_uid)
    if up_to_date(desired, current):
        return None
    return await client.apply(desired, field_manager=field_manager, force=True)


def _rv(obj: Obj | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or -1)
    except (TypeError, ValueError):
        return -1


class RecentWrites:
    """Objects this process just wrote, until the informer cache shows them (client-go calls
    this 'expectations').

    Without it, a reconcile that runs between our write and the watch event reads the old object
    and writes again: the same update twice, or a create that fails with AlreadyExists. Both are
    wasted requests. Reads go through :meth:`get`, which returns whichever is newer, our write or
    the cache (resourceVersions of one etcd are increasing integers; a non-integer one simply
    disables the shortcut).

    An entry is only needed until the cache catches up, and many objects are written once and
    never read through here again (a ControllerRevision, the shared ConfigMap, a deleted
    Workspace's children). So for each kind whose informer is :meth:`track`-ed, the informer's
    own events drop the entry: an add, update or delete at or past the written resourceVersion
    means the cache has seen our write (or the object is gone). A write whose event the cache
    delivered before the write's answer came back is not kept at all.
    """

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self._objs: dict[tuple[Any, str | None, str], Obj] = {}
        self._tracked: dict[Any, Any] = {}

    def track(self, gvk: Any, informer: Any) -> None:
        """Let ``informer`` (the one the cache reads ``gvk`` from) drop entries it has caught
        up with. Call before the informer starts, or its existing objects are replayed."""
        if gvk in self._tracked:
            return
        self._tracked[gvk] = informer

        def seen(obj: Obj, deleted: bool = False) -> None:
            meta = obj.get("metadata") or {}
            key = (gvk, meta.get("namespace"), meta.get("name", ""))
            mine = self._objs.get(key)
            if mine is None:
                return
            # A deletion the informer found by relisting carries the last state it knew, older
            # than our write; the uid still says it is the object we wrote that is gone.
            uid = meta.get("uid")
            if _caught_up(_rv(obj), mine) or (deleted and uid and uid == _meta(mine).get("uid")):
                del self._objs[key]

        informer.add_handler(
            FuncHandler(
                add=seen,
                update=lambda _old, new: seen(new),
                delete=lambda obj: seen(obj, deleted=True),
            )
        )

    def remember(self, gvk: Any, obj: Obj | None) -> None:
        if obj is None:
            return
        meta = obj.get("metadata") or {}
        informer = self._tracked.get(gvk)
        if informer is not None and _caught_up(_rv_of(informer), obj):
            return  # the watch event came in before our answer: the cache already shows it
        self._objs[(gvk, meta.get("namespace"), meta.get("name", ""))] = obj

    def forget(self, gvk: Any, name: str, namespace: str | None) -> None:
        self._objs.pop((gvk, namespace, name), None)

    def get(self, gvk: Any, name: str, namespace: str | None) -> Obj | None:
        """The freshest view of an object: cached, or our own write the cache has not seen yet."""
        cached = self._cache.get(gvk, name, namespace)
        key = (gvk, namespace, name)
        mine = self._objs.get(key)
        if mine is None:
            return cached  # type: ignore[no-any-return]
        mine_rv = _rv(mine)
        if cached is not None:
            if _rv(cached) >= mine_rv or mine_rv < 0:
                del self._objs[key]
                return cached  # type: ignore[no-any-return]
            return mine
        # Absent from the cache: not seen yet, or deleted after our write (the store has moved on).
        store_rv = self._store_rv(gvk, namespace)
        if store_rv >= mine_rv >= 0:
            del self._objs[key]
            return None
        return mine

    def _store_rv(self, gvk: Any, namespace: str | None) -> int:
        try:
            inf = self._cache.get_informer(gvk)
            return int(inf.store.resource_version or -1)
        except (TypeError, ValueError, AttributeError):
            return 1 << 62  # unknown: trust the cache

    def __len__(self) -> int:
        return len(self._objs)


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _caught_up(seen_rv: int, mine: Obj) -> bool:
    """Whether a cache that has seen ``seen_rv`` holds our write ``mine`` (or its deletion)."""
    mine_rv = _rv(mine)
    return mine_rv < 0 or seen_rv >= mine_rv


def _rv_of(informer: Any) -> int:
    """The resourceVersion an informer's store has caught up with (-1: not known yet)."""
    try:
        return int(informer.store.resource_version or -1)
    except (TypeError, ValueError, AttributeError):
        return -1
