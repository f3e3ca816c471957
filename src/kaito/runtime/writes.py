"""Write an object only when what we want differs from what the cache holds.

Three questions, three answers:

- *Did what we want change?* The desired manifest's hash (its fingerprint) travels in an
  annotation (:attr:`WriterOptions.hash_annotation`). A different hash, or a missing object, is
  one server-side apply, which creates or updates in a single request and is idempotent, so a
  restart between two writes cannot duplicate anything. A converged object costs no request.
- *Did someone change what we set?* (``kubectl edit`` of a port, an image, the replicas.) The
  hash cannot tell: it is ours and unchanged. :func:`drift` compares the fields the desired
  manifest sets with the stored object, ignoring everything the apiserver or other controllers
  add (defaults, status, clusterIP); any difference is put back with one merge patch (lists
  replaced whole, so a hand-added port goes too; fields only others set are left alone).
- *Is the cache behind my own write?* Between a write and its watch event a reconcile would read
  the old object and write again. :class:`RecentWrites` keeps the API's answers until the
  informer shows them, and reads return whichever is newer (client-go's "expectations").

The apiserver may also rewrite a value we set in an equivalent form (a quantity ``0.5`` stored
as ``500m``). So that such a field is not "drift" forever, :class:`Accepted` remembers, per
object, the stored form of our fields as the API answered our last write; an object that still
shows exactly that is converged. Every check reads the cache only.

:class:`Writer` puts the three together for a controller, and adds writes that run in the
background of a reconcile yet belong to the controller's lifetime (``Controller.spawn``): they
are drained on a graceful stop and cancelled when leadership is lost, so no write of a former
leader lands after a new one took over. :class:`Expectations` is the name-only form of
:class:`RecentWrites`, for objects whose names are chosen before the write (and whose answer may
be lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, Generic, Protocol, TypeVar

from kaito.runtime.client import Client
from kaito.runtime.controller import Controller, Request
from kaito.runtime.informer import FuncHandler
from kaito.runtime.logging import get_logger
from kaito.runtime.options import WriterOptions
from kaito.runtime.ownerrefs import get_controller_of
from kaito.runtime.resources import GVK

Obj = dict[str, Any]
Key = tuple[GVK, str | None, str]
K = TypeVar("K")

#: The default :attr:`WriterOptions.hash_annotation`.
ANNOTATION_DESIRED_HASH = "kaito.sh/desired-hash"

log = get_logger("kaito.runtime.writes")


class NotOwnedError(Exception):
    """An object with the name we need exists and another owner controls it."""


class CacheReader(Protocol):
    """What :class:`RecentWrites` reads: ``InformerCache`` (or a test's stand-in)."""

    def get(self, gvk: GVK, name: str, namespace: str | None = None) -> Obj | None: ...


class InformerLike(Protocol):
    """What :meth:`RecentWrites.track` needs of an informer: its handlers (and its store's
    ``resource_version``, read when present)."""

    def add_handler(self, handler: FuncHandler) -> None: ...


# --------------------------------------------------------------------------- fingerprints


def manifest_hash(desired: Obj, annotation: str = ANNOTATION_DESIRED_HASH) -> str:
    """Hash of a desired manifest, without its own hash annotation (so stamping is idempotent)."""
    meta = desired.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if isinstance(annotations, dict) and annotation in annotations:
        # Hashed as it was before stamping: without the annotation (and without the map, if
        # the hash was all it held).
        rest = {k: v for k, v in annotations.items() if k != annotation}
        bare = {k: v for k, v in meta.items() if k != "annotations"}  # type: ignore[union-attr]
        desired = {**desired, "metadata": {**bare, "annotations": rest} if rest else bare}
    text = json.dumps(desired, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp(desired: Obj, annotation: str = ANNOTATION_DESIRED_HASH) -> Obj:
    """Put the manifest's hash into its own annotations (in place; returns ``desired``)."""
    digest = manifest_hash(desired, annotation)
    desired.setdefault("metadata", {}).setdefault("annotations", {})[annotation] = digest
    return desired


def _hash_of(obj: Obj | None, annotation: str) -> str | None:
    found = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    value = found.get(annotation)
    return str(value) if value is not None else None


def up_to_date(desired: Obj, current: Obj | None, annotation: str = ANNOTATION_DESIRED_HASH) -> bool:
    """Whether ``current`` was written from the same (stamped) desired manifest."""
    if current is None:
        return False
    want = _hash_of(desired, annotation)
    return want is not None and want == _hash_of(current, annotation)


#: Fields we set but do not compare or patch back: ownerReferences are checked by
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


def _key(gvk: GVK, obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return (gvk, meta.get("namespace"), str(meta.get("name", "")))


class Accepted:
    """Per object: (desired hash, fingerprint of the stored form of our fields) as the API
    answered our last write. An object still matching both is converged even if the apiserver
    stores a field in another, equivalent, form than we wrote it."""

    def __init__(self, annotation: str = ANNOTATION_DESIRED_HASH) -> None:
        self._annotation = annotation
        self._seen: dict[Key, tuple[str, str]] = {}

    def record(self, gvk: GVK, desired: Obj, written: Obj) -> None:
        self._seen[_key(gvk, desired)] = (
            _hash_of(desired, self._annotation) or "",
            fingerprint(desired, written),
        )

    def converged(self, gvk: GVK, desired: Obj, current: Obj) -> bool:
        """True when ``current`` holds what ``desired`` sets (compared, or as last accepted)."""
        if not drift(desired, current):
            return True
        seen = self._seen.get(_key(gvk, desired))
        return seen is not None and seen == (
            _hash_of(desired, self._annotation) or "",
            fingerprint(desired, current),
        )

    def forget(self, gvk: GVK, namespace: str | None, name: str) -> None:
        self._seen.pop((gvk, namespace, name), None)

    def __len__(self) -> int:
        return len(self._seen)


def check_owner(
    current: Obj | None, owner_uid: str, hint: str = "rename the owner or delete that object"
) -> None:
    """Raise :class:`NotOwnedError` when ``current`` exists and is not controlled by ``owner_uid``."""
    if current is None:
        return
    ref = get_controller_of(current)
    if ref is None or ref.get("uid") != owner_uid:
        meta = current["metadata"]
        who = f"{ref.get('kind')} {ref.get('name')}" if ref else "nobody (no controller reference)"
        raise NotOwnedError(
            f"{current.get('kind')} {meta.get('namespace')}/{meta.get('name')} exists "
            f"and is controlled by {who}; {hint}"
        )


# --------------------------------------------------------------------------- own writes vs cache


def _rv(obj: Obj | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or -1)
    except (TypeError, ValueError):
        return -1


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _caught_up(seen_rv: int, mine: Obj) -> bool:
    """Whether a cache that has seen ``seen_rv`` holds our write ``mine`` (or its deletion)."""
    mine_rv = _rv(mine)
    return mine_rv < 0 or seen_rv >= mine_rv


def _store_rv(informer: object) -> int:
    """The resourceVersion an informer's store has caught up with (-1: not known yet)."""
    try:
        return int(getattr(getattr(informer, "store", None), "resource_version", None) or -1)
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
    never read through here again. So for each kind whose informer is :meth:`track`-ed, the
    informer's own events drop the entry: an add, update or delete at or past the written
    resourceVersion means the cache has seen our write (or the object is gone). A write whose
    event the cache delivered before the write's answer came back is not kept at all.
    """

    def __init__(self, cache: CacheReader) -> None:
        self._cache = cache
        self._objs: dict[Key, Obj] = {}
        self._tracked: dict[GVK, InformerLike] = {}

    def track(self, gvk: GVK, informer: InformerLike) -> None:
        """Let ``informer`` (the one the cache reads ``gvk`` from) drop entries it has caught
        up with. Call before the informer starts, or its existing objects are replayed."""
        if gvk in self._tracked:
            return
        self._tracked[gvk] = informer

        def seen(obj: Obj, deleted: bool = False) -> None:
            key = _key(gvk, obj)
            mine = self._objs.get(key)
            if mine is None:
                return
            # A deletion the informer found by relisting carries the last state it knew, older
            # than our write; the uid still says it is the object we wrote that is gone.
            uid = _meta(obj).get("uid")
            if _caught_up(_rv(obj), mine) or (deleted and uid and uid == _meta(mine).get("uid")):
                del self._objs[key]

        informer.add_handler(
            FuncHandler(
                add=seen,
                update=lambda _old, new: seen(new),
                delete=lambda obj: seen(obj, deleted=True),
            )
        )

    def remember(self, gvk: GVK, obj: Obj | None) -> None:
        """Keep ``obj`` (the API's answer to our write) until the cache shows it."""
        if obj is None:
            return
        informer = self._tracked.get(gvk)
        if informer is not None and _caught_up(_store_rv(informer), obj):
            return  # the watch event came in before our answer: the cache already shows it
        self._objs[_key(gvk, obj)] = obj

    def forget(self, gvk: GVK, name: str, namespace: str | None) -> None:
        self._objs.pop((gvk, namespace, name), None)

    def get(self, gvk: GVK, name: str, namespace: str | None) -> Obj | None:
        """The freshest view of an object: cached, or our own write the cache has not seen yet."""
        cached = self._cache.get(gvk, name, namespace)
        key = (gvk, namespace, name)
        mine = self._objs.get(key)
        if mine is None:
            return cached
        mine_rv = _rv(mine)
        if cached is not None:
            if _rv(cached) >= mine_rv or mine_rv < 0:
                del self._objs[key]
                return cached
            return mine
        # Absent from the cache: not seen yet, or deleted after our write (the store has moved on).
        if self._cache_rv(gvk) >= mine_rv >= 0:
            del self._objs[key]
            return None
        return mine

    def _cache_rv(self, gvk: GVK) -> int:
        get_informer = getattr(self._cache, "get_informer", None)
        if get_informer is None:
            return 1 << 62  # unknown: trust the cache
        try:
            return int(get_informer(gvk).store.resource_version or -1)
        except (TypeError, ValueError, AttributeError):
            return 1 << 62

    def __len__(self) -> int:
        return len(self._objs)


class Expectations(Generic[K]):
    """Names of objects this process wrote (created, or deleted) that the cache does not show
    yet, per owner key: :class:`RecentWrites` for objects whose *name* is all there is to go by.

    A name goes in *before* its write when the writer picks it (a random or hashed name): an
    answer lost to a cut connection, a cancelled reconcile or a resend must not make the next
    reconcile write a second object. The owner of the expectation decides when a name is
    settled (the cache lists it, or the API says it is gone) and calls :meth:`settle`.
    """

    def __init__(self) -> None:
        self._names: dict[K, set[str]] = {}

    def expect(self, key: K, name: str) -> None:
        self._names.setdefault(key, set()).add(name)

    def pending(self, key: K) -> set[str]:
        """The names still expected for ``key`` (a copy)."""
        return set(self._names.get(key, ()))

    def settle(self, key: K, name: str) -> None:
        """``name`` is no longer expected: the cache shows the write, or it cannot land."""
        names = self._names.get(key)
        if names is None:
            return
        names.discard(name)
        if not names:
            del self._names[key]

    def keep_only(self, key: K, names: Iterable[str]) -> set[str]:
        """Settle every name of ``key`` not in ``names``; returns those still expected."""
        pending = self._names.get(key)
        if not pending:
            return set()
        pending &= set(names)
        if not pending:
            del self._names[key]
        return set(pending)

    def forget(self, key: K) -> None:
        self._names.pop(key, None)

    def __len__(self) -> int:
        return sum(len(v) for v in self._names.values())


# --------------------------------------------------------------------------- slots


class Slots:
    """At most ``size`` holders at once, waiters served first come first served, except that an
    urgent waiter goes before every waiter that is not: a write something waits on (the Service
    that gates a Workspace's Ready) is not queued behind a hundred that nothing waits on."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        self._free = size
        self._waiters: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())

    @property
    def free(self) -> int:
        return self._free

    @property
    def waiting(self) -> int:
        return sum(1 for q in self._waiters for f in q if not f.done())

    @contextlib.asynccontextmanager
    async def hold(self, *, urgent: bool = False) -> AsyncIterator[None]:
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if self._free > 0:  # a slot is free only while nobody waits (release hands it over)
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[0 if urgent else 1].append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # handed a slot as it was cancelled: pass it on
            raise

    def _release(self) -> None:
        for queue in self._waiters:
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)  # the slot goes straight to it
                    return
        self._free += 1


# --------------------------------------------------------------------------- the writer


class Writer:
    """Writes of one controller: server-side apply guarded by a desired-state fingerprint, reads
    that prefer the controller's own newer writes, and background writes that belong to the
    controller's lifetime.

    Typical use, in a reconciler::

        self.writer = Writer(mgr.client, mgr.cache, WriterOptions(field_manager="my-controller"))
        ...
        current = self.writer.get(DEPLOYMENT, name, ns)        # cache, or our newer write
        await self.writer.apply(DEPLOYMENT, desired, owner_uid=parent_uid)  # nothing if converged
        ...
        ctrl = builder.complete(rec)
        self.writer.bind(ctrl)                                 # background writes are ctrl's
        self.writer.track(DEPLOYMENT, mgr.cache.get_informer(DEPLOYMENT))
    """

    def __init__(self, client: Client, cache: CacheReader, options: WriterOptions) -> None:
        self.client = client
        self.options = options
        self.recent = RecentWrites(cache)
        #: Stored form of the fields we last wrote, per object (see :class:`Accepted`).
        self.accepted = Accepted(options.hash_annotation)
        self.controller: Controller | None = None
        self._locks: dict[Key, tuple[asyncio.Lock, int]] = {}
        self._in_flight: dict[Key, asyncio.Task[None]] = {}
        self._errors: dict[Key, str] = {}
        self._slots = Slots(options.max_background_writes)

    # -- wiring
    def bind(self, controller: Controller) -> None:
        """Tie background writes to ``controller``: they run as its spawned work, a failure
        re-queues its request with backoff, and no write is sent once it may not act."""
        self.controller = controller

    def track(self, gvk: GVK, informer: InformerLike) -> None:
        """See :meth:`RecentWrites.track`."""
        self.recent.track(gvk, informer)

    # -- reads
    def get(self, gvk: GVK, name: str, namespace: str | None) -> Obj | None:
        """The freshest view of an object: the cache, or our own write it has not shown yet."""
        return self.recent.get(gvk, name, namespace)

    def remember(self, gvk: GVK, obj: Obj | None) -> None:
        """Record a write made with the client directly (a status update, a create)."""
        self.recent.remember(gvk, obj)

    def forget(self, gvk: GVK, name: str, namespace: str | None) -> None:
        """Drop everything kept about an object (it is gone, or its owner is)."""
        self.recent.forget(gvk, name, namespace)
        self.accepted.forget(gvk, namespace, name)
        self._errors.pop((gvk, namespace, name), None)

    def stamp(self, desired: Obj) -> Obj:
        """:func:`stamp` with this writer's annotation."""
        return stamp(desired, self.options.hash_annotation)

    def converged(self, gvk: GVK, desired: Obj, current: Obj | None) -> bool:
        """Whether ``current`` already holds the stamped ``desired`` (no write needed)."""
        return (
            current is not None
            and up_to_date(desired, current, self.options.hash_annotation)
            and self.accepted.converged(gvk, desired, current)
        )

    # -- writes
    async def apply(self, gvk: GVK, desired: Obj, *, owner_uid: str | None = None) -> Obj:
        """Create or update ``desired`` when it changed, put it back when someone edited what it
        sets; nothing (the current object is returned) when the cache already shows it.

        ``owner_uid``: the object must be controlled by that owner (else :class:`NotOwnedError`);
        None for objects shared by many owners. Concurrent calls for one object are serialised:
        the second finds the first's write and sends nothing."""
        if _hash_of(desired, self.options.hash_annotation) is None:
            self.stamp(desired)
        meta = desired["metadata"]
        name, ns = str(meta["name"]), meta.get("namespace")
        current = self.recent.get(gvk, name, ns)
        if owner_uid is not None:
            check_owner(current, owner_uid, self.options.not_owned_hint)
        if current is not None and self.converged(gvk, desired, current):
            return current
        async with self._lock((gvk, ns, name)):
            current = self.recent.get(gvk, name, ns)
            annotation = self.options.hash_annotation
            if current is not None and up_to_date(desired, current, annotation):
                if self.accepted.converged(gvk, desired, current):
                    return current
                # Same desired manifest, different object: a hand edit. Merge-patch our fields
                # back (server-side apply would keep list entries now owned by the editor).
                log.info("reverting a hand edit", kind=gvk.kind, object=f"{ns}/{name}")
                written = await self.client.patch(
                    gvk, name, revert_patch(desired), ns, patch_type="merge",
                    field_manager=self.options.field_manager,
                )  # fmt: skip
            else:
                written = await self.client.apply(
                    desired, field_manager=self.options.field_manager, force=True
                )
            self.recent.remember(gvk, written)
            self.accepted.record(gvk, desired, written)
            return written

    @contextlib.asynccontextmanager
    async def _lock(self, key: Key) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def apply_in_background(
        self,
        gvk: GVK,
        desired: Obj,
        *,
        owner_uid: str | None = None,
        retry: Request | None = None,
        urgent: bool = False,
    ) -> None:
        """:meth:`apply` in a task of its own (at most ``max_background_writes`` at once), one
        per object: a later call finds it in flight and leaves it be. A failure re-queues
        ``retry`` with backoff on the bound controller and is kept as :meth:`background_error`
        until a write of that object succeeds. ``urgent``: something waits on this write (a
        status that cannot be Ready without it), so it takes the next free slot before every
        waiting write that is not.

        The task belongs to the bound controller (``Controller.spawn``): drained or cancelled
        with its reconciles when it stops, so no write goes out after leadership is lost; a
        write still waiting for its slot checks leadership again before it sends. The ownership
        check runs now, so :class:`NotOwnedError` reaches the caller."""
        if _hash_of(desired, self.options.hash_annotation) is None:
            self.stamp(desired)
        meta = desired["metadata"]
        key: Key = (gvk, meta.get("namespace"), str(meta["name"]))
        if key in self._in_flight:
            return
        current = self.recent.get(gvk, key[2], key[1])
        if owner_uid is not None:
            check_owner(current, owner_uid, self.options.not_owned_hint)
        if current is not None and self.converged(gvk, desired, current):
            return
        controller = self.controller

        async def write() -> None:
            async with self._slots.hold(urgent=urgent):
                if controller is not None and not controller.may_act():
                    return  # leadership may be someone else's by now; the next leader writes it
                await self.apply(gvk, desired, owner_uid=owner_uid)

        name = f"write-{gvk.kind}-{key[1]}/{key[2]}"
        if controller is not None:
            task = controller.spawn(write(), name=name)
        else:  # a writer used without a controller (tests, tools): a task of its own
            task = asyncio.get_running_loop().create_task(write(), name=name)
        self._in_flight[key] = task
        task.add_done_callback(lambda t: self._background_done(key, retry, t))

    def _background_done(self, key: Key, retry: Request | None, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(key, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._errors.pop(key, None)
            return
        self._errors[key] = f"{type(exc).__name__}: {exc}"
        log.warning("write failed, will retry", kind=key[0].kind, object=f"{key[1]}/{key[2]}", error=str(exc))
        queue = self.controller.queue if self.controller is not None else None
        if queue is not None and retry is not None:
            with contextlib.suppress(Exception):  # a queue shut down with the controller
                queue.add_rate_limited(retry)

    def background_error(self, gvk: GVK, name: str, namespace: str | None) -> str | None:
        """Why the last background write of an object failed (None: it did not, or none ran)."""
        return self._errors.get((gvk, namespace, name))

    @property
    def in_flight(self) -> int:
        """Background writes running or waiting for their slot."""
        return len(self._in_flight)


__all__ = [
    "ANNOTATION_DESIRED_HASH",
    "Accepted",
    "CacheReader",
    "Expectations",
    "NotOwnedError",
    "RecentWrites",
    "Slots",
    "Writer",
    "check_owner",
    "drift",
    "manifest_hash",
    "revert_patch",
    "stamp",
    "up_to_date",
]
