"""Reflector + informer: keep a local Store in step with the apiserver via LIST + WATCH.

What makes a reflector correct rather than merely working:
- With ``InformerOptions.watch_list`` (opt-in; client-go's default since 1.35) the initial
  state and every relist come by watch-list: one watch with
  ``sendInitialEvents=true&resourceVersionMatch=NotOlderThan`` that streams the state as ADDED
  events, marks its end with a bookmark annotated ``k8s.io/initial-events-end`` and then goes
  on as the ordinary watch (``_watch_list``). The apiserver serves it from its watch cache
  without reading etcd: about half the server-side CPU of paged LISTs (apiserver and etcd
  together, docs/performance.md). Which version it asks for follows the LIST rules below. A
  server that refuses it (400/422: before 1.27, or the WatchList feature off) is listed from
  then on. Without the option the informer lists, and what follows about LISTs is that path.
- The first LIST is a consistent read (resourceVersion ""), in pages; every later re-watch
  starts from the last resourceVersion seen (events or bookmarks), so a dropped connection
  costs one request, not a relist. Why not client-go's "0": see ``_list``.
- 410 Gone / "too old resource version" (as an HTTP status or as an ERROR event in the stream)
  means our watch position was compacted away. As client-go does, relist *from the last synced
  version* (the watch cache answers that without touching etcd, and the result is never older
  than what we had); only if that version is itself unavailable, relist with a quorum read.
  Either way diff against the store, delivering deletes for objects that vanished while we were
  not watching. Repeated Gone backs off like any other failure instead of hammering etcd.
- A LIST has no overall deadline (a big cache must be able to sync however long it takes),
  only an inactivity timeout between bytes. Every LIST asks for pages (500 objects) so the
  event loop runs between them (see ``_list`` for why each resourceVersion stays correct), and
  an expired continue token falls back to one unpaginated LIST.
- Server-side watch timeouts are randomised (5 to 10 min) so thousands of informers do not
  reconnect in lockstep; a client-side inactivity timer catches half-open TCP connections.
- Reconnects back off with jitter (0.8 s → 30 s) so an apiserver restart is not stampeded. A
  watch that ends within a second without a single event (even with a broken stream, as when
  an apiserver terminates or an L7 proxy closes after the headers) counts as a failure
  (``watch_errors``) and backs off too; a healthy watch resets the delay.
- Watch lines are parsed with json.loads into plain dicts, never into generated models (all
  the complete lines of one read as one JSON array: ``_decode_events``). Any
  error in the stream (an ERROR event, a line that is not JSON) ends that watch; the next one
  resumes from the last version applied, so nothing is lost or applied twice. If the apiserver
  refuses the watch from that same version a second time (an ERROR event or an error status,
  other than 410 and 429), the informer relists instead: the server cannot go on from there,
  and retrying would leave the cache stale for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import structlog

from kaito.runtime.errors import ApiError, GoneError, TooManyRequestsError, api_error_from_response
from kaito.runtime.options import InformerOptions
from kaito.runtime.resources import GVK, ResourceInfo
from kaito.runtime.store import IndexFunc, Store, key_of

if TYPE_CHECKING:
    from kaito.runtime.client import Client

log = structlog.get_logger("kaito.runtime.informer")

Obj = dict[str, Any]


class EventHandler(Protocol):
    """Synchronous, cheap callbacks (typically: map to a key and enqueue)."""

    def on_add(self, obj: Obj) -> None: ...

    def on_update(self, old: Obj, new: Obj) -> None: ...

    def on_delete(self, obj: Obj) -> None: ...


@dataclass
class FuncHandler:
    """An EventHandler from plain functions; missing ones are no-ops."""

    add: Callable[[Obj], None] | None = None
    update: Callable[[Obj, Obj], None] | None = None
    delete: Callable[[Obj], None] | None = None

    def on_add(self, obj: Obj) -> None:
        if self.add is not None:
            self.add(obj)

    def on_update(self, old: Obj, new: Obj) -> None:
        if self.update is not None:
            self.update(old, new)

    def on_delete(self, obj: Obj) -> None:
        if self.delete is not None:
            self.delete(obj)


def _decode_events(lines: list[bytes]) -> Iterator[dict[str, Any]]:
    """The watch events of one read's complete lines, decoded as one JSON array: the decoder
    then makes each key string once per read rather than once per object (every object of a
    watch-list's initial state would carry its own copies of "metadata", "name", ... otherwise:
    2.6 KB instead of 1.6 KB per cached ConfigMap, measured). If the array does not parse into
    one value per line, the lines are decoded one by one, lazily, so the events before a line
    that is not JSON are still applied before its error ends the watch."""
    if len(lines) > 1:
        try:
            events = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            events = None
        if isinstance(events, list) and len(events) == len(lines):
            yield from events
            return
    for line in lines:
        yield json.loads(line)


class _Relist(Exception):
    """Internal: the watch cannot resume from our resourceVersion; LIST again."""


@dataclass
class ReflectorStats:
    lists: int = 0
    watches: int = 0
    relists_410: int = 0
    relists_after_error: int = 0
    """Relists because watches from one version were refused twice (not 410, not 429)."""
    watch_errors: int = 0
    events: int = 0
    bookmarks: int = 0
    watch_lists: int = 0
    """Watch-list syncs started (``InformerOptions.watch_list``); ``lists`` counts LISTs."""
    watch_list_refused: int = 0


INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass
class _InitialSync:
    """A watch-list stream before its initial-events-end bookmark. ``buffer`` is None on a first
    sync into an empty store (objects go straight in, as a first LIST's do); on a relist it
    holds the stream's objects until the bookmark, then they replace the store at once."""

    buffer: list[Obj] | None


class Informer:
    """One LIST+WATCH stream for a kind (optionally one namespace / label selector) feeding a
    Store and any number of handlers. Share one per kind: every extra informer is another
    watch connection and another copy of every object in memory."""

    def __init__(
        self,
        client: Client,
        gvk: GVK,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        options: InformerOptions | None = None,
        **overrides: Any,
    ):
        """``overrides`` are ``InformerOptions`` fields (``resync=30``, ``backoff_initial=0.2``);
        they take precedence over ``options``."""
        if "relist_page_size" in overrides:  # the name before InformerOptions existed
            overrides["list_page_size"] = overrides.pop("relist_page_size")
        opts = options or InformerOptions()
        self.options = opts.replace(**overrides) if overrides else opts
        self.client = client
        self.gvk = gvk
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.store = Store(
            strip_managed_fields=self.options.strip_managed_fields, share_strings=self.options.share_strings
        )
        self.stats = ReflectorStats()
        self.last_sync_resource_version = ""
        self._rv_unavailable = False
        self._initial: _InitialSync | None = None
        self._watch_list_refused = False
        self._watch_list_synced = False
        self._watch_opened = False
        self._handlers: list[EventHandler] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._stopped = False
        self._info: ResourceInfo | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._forced_reconnect = False
        self._log = log.bind(kind=gvk.kind, group=gvk.group, namespace=namespace)

    @property
    def resync(self) -> float | None:
        return self.options.resync

    # ----- handlers

    def add_handler(self, handler: EventHandler) -> None:
        """Late handlers get synthetic adds for what is already cached, like client-go."""
        self._handlers.append(handler)
        if self._synced.is_set():
            for obj in self.store:
                self._call(handler.on_add, obj)

    def add_index(self, name: str, fn: IndexFunc) -> None:
        self.store.add_indexer(name, fn)

    def _call(self, fn: Callable[..., None], *args: Obj) -> None:
        try:
            fn(*args)
        except Exception:  # a broken handler must not stop the stream for everyone else
            self._log.exception("event handler failed")

    def _emit_add(self, obj: Obj) -> None:
        for h in self._handlers:
            self._call(h.on_add, obj)

    def _emit_update(self, old: Obj, new: Obj) -> None:
        for h in self._handlers:
            self._call(h.on_update, old, new)

    def _emit_delete(self, obj: Obj) -> None:
        for h in self._handlers:
            self._call(h.on_delete, obj)

    # ----- lifecycle

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def start(self) -> None:
        self.start_nowait()

    def start_nowait(self) -> None:
        """Start from synchronous code running inside the event loop."""
        if self._task is None:
            self._stopped = False
            self._task = asyncio.create_task(self._run(), name=f"informer-{self.gvk.kind}")
            if self.resync:
                self._resync_task = asyncio.create_task(self._resync_loop(), name=f"resync-{self.gvk.kind}")

    async def stop(self) -> None:
        self._stopped = True
        for task in (self._task, self._resync_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._resync_task = None
        self._close_response()

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    @property
    def watching(self) -> bool:
        """Whether a watch connection is open right now (false while listing or backing off)."""
        return self._response is not None

    def force_reconnect(self) -> None:
        """Drop the current watch connection; the reflector re-watches from its last version.

        For tests and operational tooling (e.g. after rotating credentials).
        """
        self._forced_reconnect = True
        self._close_response()

    # ----- reflector loop

    def _relist_version(self) -> str:
        """client-go's relistResourceVersion, but "" (a consistent read) before the first sync
        rather than "0" (see ``_list``): the last synced version after it (the watch cache,
        never older than our store), "" again once that version turned out to be unavailable."""
        if self._rv_unavailable:
            return ""
        return self.last_sync_resource_version

    async def _run(self) -> None:
        # After stop()/start() a synced informer resumes its watch from the last version it saw
        # (and relists only if that version has been compacted away meanwhile).
        need_list = not (self._synced.is_set() and self.last_sync_resource_version)
        opts = self.options
        delay = opts.backoff_initial
        last_failure = 0.0
        gone_streak = 0
        # The version a watch last failed from with an error the apiserver sent (not 410/429),
        # None once a watch from there worked: a second such failure from the same version
        # means the server cannot go on from it, so relist.
        refused_from: str | None = None

        async def back_off(reason: str) -> None:
            nonlocal delay, last_failure
            now = time.monotonic()
            if now - last_failure > opts.backoff_reset_after:
                delay = opts.backoff_initial
            last_failure = now
            sleep = min(opts.backoff_max, delay * (1.0 + random.random()))
            self._log.info("list/watch failed, backing off", error=reason, sleep=round(sleep, 2))
            delay = min(opts.backoff_max, delay * 2.0)
            await asyncio.sleep(sleep)

        while not self._stopped:
            try:
                if self._info is None:
                    self._info = await self.client.mapper.resource_for(self.gvk)
                    if not self._info.namespaced:
                        self.namespace = None  # a restricted cache's scope: moot for this kind
                if need_list and self.options.watch_list and not self._watch_list_refused:
                    self._watch_list_synced = False
                    try:
                        await self._watch_list()
                    finally:
                        # Once the initial state is in, a failure of the watch that goes on
                        # from there costs a re-watch from its last version, not a relist.
                        if self._watch_list_synced:
                            need_list = False
                    if not need_list:
                        delay = opts.backoff_initial
                    continue
                if need_list:
                    await self._list(self._relist_version())
                    need_list = False
                started = time.monotonic()
                self._forced_reconnect = False
                got_events = await self._watch()
                if got_events:
                    gone_streak = 0
                    refused_from = None
                if not got_events and not self._forced_reconnect and time.monotonic() - started < 1.0:
                    # A watch that ends within a second having delivered nothing (cleanly or with
                    # a broken stream: an apiserver shutting down, an L7 proxy closing after the
                    # headers) is a failure in disguise, client-go's "very short watch": count it
                    # and back off instead of spinning on reconnects.
                    raise ConnectionError("very short watch: ended within 1s without any event")
                # A healthy watch: the next failure starts again from backoff_initial, as
                # client-go's backoff manager does once things work again.
                delay = opts.backoff_initial
                continue
            except asyncio.CancelledError:
                raise
            except (GoneError, _Relist) as exc:
                self.stats.relists_410 += 1
                gone_streak += 1
                if need_list:
                    # The LIST itself was refused: our last version is gone from the watch
                    # cache as well. Next time read from etcd.
                    self._rv_unavailable = True
                need_list = True
                self._log.info("resource version too old, relisting", reason=str(exc))
                if gone_streak > 1:
                    await back_off(f"repeated 410 Gone: {exc}")
                continue
            except Exception as exc:
                if self._stopped:
                    return
                self.stats.watch_errors += 1
                if not need_list and isinstance(exc, ApiError) and not isinstance(exc, TooManyRequestsError):
                    # The apiserver answered the watch with an error (an ERROR event or a
                    # status). Once, it may be passing (an etcd leader change): resume from the
                    # same version. Twice from the same version, it is about that version (after
                    # a compaction an apiserver without watch cache answers "etcd event received
                    # with PrevKv=nil" from it every time; RBAC still warming up after a
                    # restart): resuming would repeat the answer forever while the cache goes
                    # stale, so relist, as client-go's reflector does after such a watch.
                    version = self.last_sync_resource_version
                    if refused_from == version:
                        need_list = True
                        refused_from = None
                        self.stats.relists_after_error += 1
                        self._log.info("watch refused twice from the same version, relisting", error=str(exc))
                    else:
                        refused_from = version
                await back_off(f"{type(exc).__name__}: {exc}")

    async def _list(self, resource_version: str) -> None:
        """LIST in pages and reconcile the store with it, emitting add/update/delete for the
        differences.

        Every LIST, first and relist alike, asks for pages of ``list_page_size``: a page is read
        and parsed on its own, so the event loop (reconciles, probes, lease renewals) runs
        between pages instead of stalling on one huge body (``json.loads`` holds the GIL even
        in a worker thread). That decides which resourceVersion each LIST asks for:

        - first LIST: ``""``, a consistent read. client-go asks for ``"0"`` (any version, from
          the watch cache), but the watch cache ignores the limit for ``"0"``: measured on
          kube-apiserver 1.37, ``resourceVersion=0&limit=500`` of 1,200 ConfigMaps is one page
          of 1,200. A consistent read is paged, and since consistent reads from cache
          (ConsistentListFromCache) the watch cache serves it too, after asking etcd only for
          its current revision (on older apiservers it is a paged etcd read, as client-go's
          own fallback is). It is also never older than what the caller just wrote.
        - relist after 410: the last synced version with ``resourceVersionMatch=NotOlderThan``.
          A version with a limit but no match means *exactly* that version, which apiservers
          before cache snapshots serve from etcd only: the thundering herd client-go avoids by
          not paging such relists. "Not
          older than" is served by the watch cache, in pages (measured as above), and is never
          older than our store.
        - ``""`` again once that version was unavailable (client-go's fallback), in pages.

        Pages after the first follow the continue token, which pins them to the first page's
        revision, so the result is one consistent snapshot; an expired token restarts as one
        unpaginated LIST (``Client.list_with_version``).
        """
        self.stats.lists += 1
        opts = self.options
        match = "NotOlderThan" if resource_version else None
        items, rv = await self.client.list_with_version(
            self.gvk,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            limit=opts.list_page_size,
            resource_version=resource_version or None,
            resource_version_match=match,
            request_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.client.timeout, sock_read=opts.inactivity_timeout
            ),
            each=self.store.prepare,  # trimmed per page, not once the whole LIST is in
        )
        self._rv_unavailable = False
        store = self.store
        step = max(1, opts.list_page_size)
        if not self._synced.is_set() and len(store) == 0:
            for i, obj in enumerate(items, 1):
                store.update(obj, prepared=True)
                self._emit_add(obj)
                if i % step == 0:
                    await asyncio.sleep(0)  # a page's worth of handlers at a time
        else:
            seen: set[str] = set()
            for i, obj in enumerate(items, 1):
                key = key_of(obj)
                seen.add(key)
                old = store.update(obj, prepared=True)
                if old is None:
                    self._emit_add(obj)
                elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                    self._emit_update(old, obj)
                if i % step == 0:
                    await asyncio.sleep(0)
            for key in [k for k in store.keys() if k not in seen]:  # noqa: SIM118 (iter = values)
                # Deleted while we were not watching: the last state we knew is all there is
                # (client-go's DeletedFinalStateUnknown).
                gone = store.delete_key(key)
                if gone is not None:
                    self._emit_delete(gone)
        store.resource_version = rv
        self.last_sync_resource_version = rv
        self._synced.set()

    async def _watch_list(self) -> bool:
        """Sync by watch-list: one watch that streams the current state, then goes on as the
        ordinary watch until it ends. Returns whether the initial state arrived in full (the
        informer then resumes watching from there; ``_watch_list_synced`` says so too when an
        error ends the watch afterwards); False when the server refused it (paged LISTs from
        then on). A stream that ends before its initial-events-end bookmark raises,
        to be retried with backoff like a failed LIST; a 410 (as a status or an ERROR event)
        raises like one too, and the retry asks for any version (see ``_relist_version``)."""
        self.stats.watch_lists += 1
        resource_version = self._relist_version()
        # Relists (after 410, or after a first stream broke half-way) gather the whole state
        # before touching the store, so that deletes can be worked out; a first sync streams in.
        first = not self._synced.is_set() and len(self.store) == 0
        self._initial = _InitialSync(buffer=None if first else [])
        self._watch_opened = False
        try:
            await self._watch(initial_version=resource_version)
        except GoneError:
            raise
        except ApiError as exc:
            if exc.status not in (400, 422) or self._watch_opened:  # an ERROR event: not a refusal
                raise
            # sendInitialEvents / resourceVersionMatch on a watch are invalid to apiservers
            # before 1.27 (and where the WatchList feature is off): list instead, for good.
            self.stats.watch_list_refused += 1
            self._watch_list_refused = True
            self._log.info("watch-list refused by the server, listing instead", error=str(exc))
            return False
        finally:
            pending = self._initial is not None
            self._initial = None
        if pending:
            raise ConnectionError("watch-list stream ended before its initial events did")
        return True

    def _initial_event(self, etype: Any, obj: Obj, meta: dict[str, Any]) -> None:
        """One event of a watch-list stream before its initial-events-end bookmark."""
        initial = self._initial
        assert initial is not None
        if etype == "BOOKMARK":
            self.stats.bookmarks += 1
            if (meta.get("annotations") or {}).get(INITIAL_EVENTS_END) == "true":
                self._finish_initial(initial, meta.get("resourceVersion") or "")
            # A bookmark before the end is no complete state yet: do not resume from it.
            return
        store = self.store
        if initial.buffer is not None:
            if etype != "DELETED":
                store.prepare(obj)
                initial.buffer.append(obj)
            return
        if etype == "DELETED":
            gone = store.delete(obj)
            if gone is not None:
                self._emit_delete(gone)
            return
        store.prepare(obj)  # a sync's objects stay as parsed (see Store.prepare)
        old = store.update(obj, prepared=True)
        if old is None:
            self._emit_add(obj)
        else:
            self._emit_update(old, obj)

    def _finish_initial(self, initial: _InitialSync, rv: str) -> None:
        """The initial state is complete at ``rv``: on a relist, replace the store with it
        (adds, updates where the version changed, deletes for what is gone), as ``_list``."""
        self._initial = None
        store = self.store
        if initial.buffer is not None:
            seen: set[str] = set()
            for obj in initial.buffer:
                key = key_of(obj)
                seen.add(key)
                old = store.update(obj, prepared=True)
                if old is None:
                    self._emit_add(obj)
                elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                    self._emit_update(old, obj)
            for key in [k for k in store.keys() if k not in seen]:  # noqa: SIM118 (iter = values)
                gone = store.delete_key(key)
                if gone is not None:
                    self._emit_delete(gone)
        self._rv_unavailable = False
        self._watch_list_synced = True
        store.resource_version = rv
        self.last_sync_resource_version = rv
        self._synced.set()

    def _watch_timeout(self) -> int:
        return int(random.uniform(self.options.min_watch_timeout, self.options.max_watch_timeout))

    async def _watch(self, initial_version: str | None = None) -> bool:
        """Run one watch request to its end; returns whether anything arrived. With
        ``initial_version`` (a watch-list, see ``_watch_list``) it first streams the state
        not older than that version ("": the current one)."""
        assert self._info is not None
        self.stats.watches += 1
        server_timeout = self._watch_timeout()
        params: dict[str, Any] = {
            "watch": True,
            "allowWatchBookmarks": True,
            "resourceVersion": self.last_sync_resource_version,
            "timeoutSeconds": server_timeout,
            "labelSelector": self.label_selector,
            "fieldSelector": self.field_selector,
        }
        if initial_version is not None:
            params["resourceVersion"] = initial_version
            params["sendInitialEvents"] = True
            params["resourceVersionMatch"] = "NotOlderThan"
        timeout = aiohttp.ClientTimeout(
            total=server_timeout + 30,
            sock_connect=self.client.timeout,
            sock_read=self.options.inactivity_timeout,
        )
        resp: aiohttp.ClientResponse = await self.client.raw_request(
            "GET", self._info.path(self.namespace), params=params, stream=True, request_timeout=timeout
        )
        self._response = resp
        self._watch_opened = True
        got = False
        try:
            buf = b""
            async for chunk in resp.content.iter_any():
                buf = buf + chunk if buf else chunk
                if b"\n" not in chunk:
                    continue
                *lines, buf = buf.split(b"\n")
                lines = [line for line in lines if line.strip()]
                if lines:
                    got = True
                    for event in _decode_events(lines):
                        self._handle_event(event)
            if buf.strip():
                got = True
                self._handle_event(json.loads(buf))
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            if self._stopped:
                return got
            # The stream broke (apiserver restart, forced reconnect): resume from the last RV.
            # Whether anything arrived decides, in _run, whether this was a very short watch
            # to back off from; claiming events here made a stream that breaks right after its
            # headers reconnect at once, forever.
            self._log.info("watch stream ended", error=f"{type(exc).__name__}: {exc}")
            return got
        except TimeoutError:
            self._log.info("watch inactive, reconnecting", inactivity=self.options.inactivity_timeout)
            return True
        finally:
            if self._response is resp:
                self._response = None
            resp.close()
        return got

    def _handle_event(self, event: dict[str, Any]) -> None:
        etype = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            return
        if etype == "ERROR":
            code = obj.get("code")
            if code == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise _Relist(obj.get("message", "410 Gone"))
            raise api_error_from_response(int(code or 500), obj)
        meta = obj.get("metadata") or {}
        if self._initial is not None:
            self._initial_event(etype, obj, meta)
            return
        rv = meta.get("resourceVersion")
        if etype == "BOOKMARK":
            self.stats.bookmarks += 1
            if rv:
                self.last_sync_resource_version = rv
                self.store.resource_version = rv
            return
        self.stats.events += 1
        store = self.store
        if etype == "ADDED" or etype == "MODIFIED":
            old = store.update(obj)
            if old is None:
                self._emit_add(obj)
            else:
                self._emit_update(old, obj)
        elif etype == "DELETED":
            if store.strip_managed_fields:
                meta.pop("managedFields", None)
            store.delete(obj)
            self._emit_delete(obj)
        if rv:
            self.last_sync_resource_version = rv
            store.resource_version = rv

    async def _resync_loop(self) -> None:
        """Periodic on_update(obj, obj) for every cached object: a safety net for controllers
        whose reconcile depends on the outside world, not a substitute for correct watches."""
        assert self.resync is not None
        await self._synced.wait()
        while not self._stopped:
            await asyncio.sleep(self.resync)
            for obj in self.store:
                self._emit_update(obj, obj)


__all__ = ["EventHandler", "FuncHandler", "Informer", "ReflectorStats"]
