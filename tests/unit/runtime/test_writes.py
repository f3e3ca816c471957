"""Write-if-changed (kaito.runtime.writes): drift, Accepted, RecentWrites, Expectations and the Writer."""

from __future__ import annotations

import copy
from typing import Any

from kaito.envtest import eventually
from kaito.runtime import Accepted, RecentWrites, drift, revert_patch, stamp

SVC: dict[str, Any] = stamp(
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "ws",
            "namespace": "default",
            "labels": {"kaito.sh/workspace": "ws"},
            "ownerReferences": [{"kind": "Workspace", "name": "ws", "uid": "u1", "controller": True}],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"kaito.sh/workspace": "ws"},
            "ports": [{"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"}],
            "template": {"volumes": [{"name": "dshm", "emptyDir": {}}]},
        },
    }
)


def stored() -> dict[str, Any]:
    """What the apiserver gives back: our fields plus defaults, status and others' fields."""
    obj = copy.deepcopy(SVC)
    del obj["apiVersion"], obj["kind"]
    obj["metadata"].update(uid="s1", resourceVersion="7", creationTimestamp="2026-01-01T00:00:00Z")
    obj["metadata"]["labels"]["team"] = "someone-else"
    obj["metadata"]["ownerReferences"].append({"kind": "Other", "name": "x", "uid": "u2"})
    obj["spec"].update(clusterIP="10.0.0.7", clusterIPs=["10.0.0.7"], sessionAffinity="None")
    obj["spec"]["template"]["volumes"][0]["emptyDir"] = {"medium": ""}
    obj["status"] = {"loadBalancer": {}}
    return obj


def test_defaults_and_other_fields_are_no_drift() -> None:
    assert not drift(SVC, stored())


def test_a_changed_removed_or_added_field_we_set_is_drift() -> None:
    edited = stored()
    edited["spec"]["ports"][0]["port"] = 8080
    assert drift(SVC, edited)
    edited = stored()
    del edited["spec"]["selector"]
    assert drift(SVC, edited)
    edited = stored()
    edited["spec"]["ports"].append({"name": "extra", "port": 81, "targetPort": 81, "protocol": "TCP"})
    assert drift(SVC, edited)
    edited = stored()
    edited["spec"]["ports"][0]["targetPort"] = "5000"  # same text, another type
    assert drift(SVC, edited)


def test_revert_patch_sets_our_fields_and_leaves_owner_refs_alone() -> None:
    patch = revert_patch(SVC)
    assert "ownerReferences" not in patch["metadata"] and "apiVersion" not in patch
    assert patch["spec"]["ports"] == SVC["spec"]["ports"]
    patch["spec"]["ports"][0]["port"] = 1  # a copy: the desired manifest is untouched
    assert SVC["spec"]["ports"][0]["port"] == 80


def test_accepted_covers_a_value_the_apiserver_rewrites() -> None:
    desired = copy.deepcopy(SVC)
    desired["spec"]["resources"] = {"cpu": 0.5}
    answered = stored()
    answered["spec"]["resources"] = {"cpu": "500m"}  # the apiserver's canonical form
    accepted = Accepted()
    assert not accepted.converged("Service", desired, answered)  # never written by us: drift
    accepted.record("Service", desired, answered)
    assert accepted.converged("Service", desired, answered)
    later = copy.deepcopy(answered)
    later["metadata"]["resourceVersion"] = "9"  # others' changes do not matter
    assert accepted.converged("Service", desired, later)
    later["spec"]["ports"][0]["port"] = 8080  # a hand edit still does
    assert not accepted.converged("Service", desired, later)
    accepted.forget("Service", "default", "ws")
    assert len(accepted) == 0


class _Informer:
    """Just what RecentWrites uses of an informer: its handlers and its store's version."""

    def __init__(self) -> None:
        self.handlers: list[Any] = []
        self.store = type("S", (), {"resource_version": ""})()

    def add_handler(self, handler: Any) -> None:
        self.handlers.append(handler)


class _Cache:
    def __init__(self) -> None:
        self.objs: dict[str, dict[str, Any]] = {}

    def get(self, gvk: Any, name: str, namespace: str | None) -> dict[str, Any] | None:
        return self.objs.get(name)


def _obj(name: str, rv: str, uid: str = "u") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "uid": uid}}


def test_recent_writes_are_dropped_by_the_informers_events() -> None:
    """Issue 20, bug 9: an entry goes once the tracked informer shows the write or its deletion,
    without anyone reading it again."""
    inf = _Informer()
    recent = RecentWrites(_Cache())
    recent.track("SVC", inf)
    (h,) = inf.handlers
    recent.remember("SVC", _obj("a", "10"))
    recent.remember("SVC", _obj("b", "12"))
    recent.remember("SVC", _obj("c", "14", uid="c1"))
    h.on_update(_obj("a", "9"), _obj("a", "9"))  # an older state: still needed
    assert len(recent) == 3
    h.on_add(_obj("a", "10"))
    h.on_update(_obj("b", "11"), _obj("b", "13"))
    assert len(recent) == 1
    h.on_delete(_obj("c", "13", uid="c1"))  # found gone by a relist: last known state is older
    assert len(recent) == 0
    recent.remember("SVC", _obj("d", "20", uid="d2"))
    h.on_delete(_obj("d", "19", uid="d1"))  # an earlier object of that name: ours stays
    assert len(recent) == 1
    inf.store.resource_version = "25"  # the event came before our answer: nothing to keep
    recent.remember("SVC", _obj("e", "24"))
    assert len(recent) == 1


# --------------------------------------------------------------------------- Writer
# The semantics of the public write-if-changed module, against an in-process client that answers
# like the apiserver (a resourceVersion per write) and a cache the test moves by hand; the
# cluster tests (tests/integration/controllers) cover the same paths against a real apiserver.

import asyncio  # noqa: E402

import pytest  # noqa: E402

from kaito.runtime import (  # noqa: E402
    GVK,
    Controller,
    Expectations,
    NotOwnedError,
    Request,
    Slots,
    Writer,
    WriterOptions,
    manifest_hash,
    up_to_date,
)

CM = GVK("", "v1", "ConfigMap")


class _Client:
    """Records writes; answers each with the object at the next resourceVersion."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.rv = 100
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def _answer(self, verb: str, obj: dict[str, Any]) -> dict[str, Any]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.calls.append((verb, obj["metadata"]["name"]))
        self.rv += 1
        out = copy.deepcopy(obj)
        out["metadata"]["resourceVersion"] = str(self.rv)
        return out

    async def apply(self, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        return await self._answer("apply", obj)

    async def patch(
        self, gvk: Any, name: str, patch: dict[str, Any], namespace: Any, **_: Any
    ) -> dict[str, Any]:
        return await self._answer("patch", {**patch, "metadata": {**patch["metadata"], "name": name}})


def _cm(name: str = "c", value: str = "1", owner: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "ns"},
        "data": {"k": value},
    }
    if owner:
        obj["metadata"]["ownerReferences"] = [{"kind": "X", "name": "o", "uid": owner, "controller": True}]
    return obj


class _SyncedCache(_Cache):
    """A cache whose informers report the resourceVersion they have caught up with, as the
    real one does (RecentWrites reads it to tell "not seen yet" from "deleted since")."""

    def __init__(self) -> None:
        super().__init__()
        self.informer = _Informer()

    def get_informer(self, gvk: Any) -> _Informer:
        return self.informer


def _writer(client: _Client, cache: _Cache, **options: Any) -> Writer:
    return Writer(client, cache, WriterOptions(field_manager="test", **options))  # type: ignore[arg-type]


def test_stamp_is_idempotent_and_the_hash_ignores_its_own_annotation() -> None:
    once = stamp(_cm())
    twice = stamp(copy.deepcopy(once))
    assert once == twice
    assert manifest_hash(once) == manifest_hash(_cm())
    assert up_to_date(stamp(_cm()), once) and not up_to_date(stamp(_cm(value="2")), once)


async def test_fingerprint_skip_writes_only_what_changed() -> None:
    """A desired manifest whose fingerprint the stored object carries costs no request, even
    once the cache holds the object in its stored form (defaults added); a changed manifest is
    one apply; a hand edit of a field we set is one merge patch putting it back."""
    client, cache = _Client(), _SyncedCache()
    writer = _writer(client, cache)
    written = await writer.apply(CM, _cm())
    assert client.calls == [("apply", "c")]
    assert await writer.apply(CM, _cm()) is written  # our own write, not yet in the cache
    stored_form = copy.deepcopy(written)
    stored_form["metadata"].update(uid="u", creationTimestamp="2026-01-01T00:00:00Z")
    cache.objs["c"] = stored_form  # the cache caught up, with the apiserver's additions
    await writer.apply(CM, _cm())
    assert client.calls == [("apply", "c")]
    await writer.apply(CM, _cm(value="2"))
    assert client.calls == [("apply", "c"), ("apply", "c")]
    edited = copy.deepcopy(writer.get(CM, "c", "ns"))
    assert edited is not None
    edited["data"]["k"] = "by hand"
    edited["metadata"]["resourceVersion"] = "999"
    cache.objs["c"] = edited
    await writer.apply(CM, _cm(value="2"))
    assert client.calls[-1] == ("patch", "c")
    assert len(client.calls) == 3


async def test_concurrent_applies_of_one_object_send_one_write() -> None:
    """A shared object (no owner) written by many reconciles at once: the first writes, the
    others find its write."""
    client, cache = _Client(), _SyncedCache()
    writer = _writer(client, cache)
    await asyncio.gather(*(writer.apply(CM, _cm()) for _ in range(5)))
    assert client.calls == [("apply", "c")]


async def test_an_object_controlled_by_another_owner_is_not_written() -> None:
    client, cache = _Client(), _SyncedCache()
    theirs = _cm(owner="someone")
    theirs["metadata"]["resourceVersion"] = "5"
    cache.objs["c"] = theirs
    writer = _writer(client, cache, not_owned_hint="rename it")
    with pytest.raises(NotOwnedError, match="controlled by X o; rename it"):
        await writer.apply(CM, _cm(), owner_uid="me")
    assert client.calls == []


def test_own_write_is_newer_than_the_cache_until_the_cache_shows_it() -> None:
    cache = _Cache()
    recent = RecentWrites(cache)
    cache.objs["a"] = _obj("a", "5")
    mine = _obj("a", "7")
    recent.remember(CM, mine)
    assert recent.get(CM, "a", "ns") is mine  # the cache is behind our write
    cache.objs["a"] = _obj("a", "7")
    assert recent.get(CM, "a", "ns") is cache.objs["a"]  # caught up: the cache again
    assert len(recent) == 0
    cache.objs["a"] = _obj("a", "9")
    recent.remember(CM, _obj("a", "8"))  # older than what the cache already shows
    assert recent.get(CM, "a", "ns") is cache.objs["a"]
    cache.objs["b"] = _obj("b", "3")
    recent.remember(CM, _obj("b", "not-a-number"))  # no ordering known: the cache wins
    assert recent.get(CM, "b", "ns") is cache.objs["b"]


async def test_background_writes_are_cancelled_with_the_controller() -> None:
    """A write left running after a reconcile belongs to the controller: cancelling the
    controller (leadership lost) cancels it before it is sent."""
    client, cache = _Client(), _SyncedCache()
    client.gate = asyncio.Event()
    writer = _writer(client, cache)
    ctrl: Controller | None = None

    async def reconcile(req: Request) -> None:
        writer.apply_in_background(CM, _cm(req.name), retry=req)

    ctrl = Controller("writes", reconcile)
    writer.bind(ctrl)
    src = _Source([_cm("held")])
    ctrl.watch(CM, src, lambda o: (Request.from_object(o),), ())
    task = asyncio.create_task(ctrl.start(asyncio.Event()))
    await _eventually(lambda: writer.in_flight == 1)
    writer.apply_in_background(CM, _cm("held"))  # one per object: a second call is a no-op
    assert writer.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _eventually(lambda: writer.in_flight == 0)
    client.gate.set()
    await asyncio.sleep(0)
    assert client.calls == []  # never sent


async def test_a_background_write_waits_for_leadership_and_reports_failures() -> None:
    client, cache = _Client(), _SyncedCache()
    writer = _writer(client, cache, max_background_writes=1)
    ctrl = Controller("writes2", lambda req: None)  # type: ignore[arg-type, return-value]
    leader = False
    ctrl.may_act = lambda: leader
    writer.bind(ctrl)
    src = _Source([])
    ctrl.watch(CM, src, lambda o: (Request.from_object(o),), ())
    stop = asyncio.Event()
    task = asyncio.create_task(ctrl.start(stop))
    await asyncio.wait_for(ctrl.started.wait(), 5)
    writer.apply_in_background(CM, _cm("a"))
    await _eventually(lambda: writer.in_flight == 0)
    assert client.calls == []  # not the leader: nothing sent
    leader = True
    client.fail = RuntimeError("apiserver says no")
    writer.apply_in_background(CM, _cm("a"), retry=Request("ns", "a"))
    await _eventually(lambda: writer.in_flight == 0)
    assert writer.background_error(CM, "a", "ns") == "RuntimeError: apiserver says no"
    client.fail = None
    writer.apply_in_background(CM, _cm("a"))
    await _eventually(lambda: writer.in_flight == 0)
    assert client.calls == [("apply", "a")] and writer.background_error(CM, "a", "ns") is None
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_slots_serve_urgent_waiters_first_and_in_order() -> None:
    """One slot, held; three ordinary waiters then two urgent ones: each release hands the slot
    to the urgent waiters first (in their order), then to the others (in theirs)."""
    slots = Slots(1)
    order: list[str] = []
    release = {name: asyncio.Event() for name in ("first", "a", "b", "c", "u1", "u2")}

    async def hold(name: str, urgent: bool = False) -> None:
        async with slots.hold(urgent=urgent):
            order.append(name)
            await release[name].wait()

    first = asyncio.create_task(hold("first"))
    await _eventually(lambda: order == ["first"])
    tasks = [asyncio.create_task(hold(n)) for n in ("a", "b", "c")]
    await _eventually(lambda: slots.waiting == 3)
    tasks += [asyncio.create_task(hold(n, urgent=True)) for n in ("u1", "u2")]
    await _eventually(lambda: slots.waiting == 5)
    for name in ("first", "u1", "u2", "a", "b", "c"):
        release[name].set()
    await asyncio.gather(first, *tasks)
    assert order == ["first", "u1", "u2", "a", "b", "c"]
    assert slots.free == 1 and slots.waiting == 0


async def test_a_cancelled_waiter_gives_its_slot_on() -> None:
    """A waiter cancelled while waiting, or just as it was handed the slot, does not keep it."""
    slots = Slots(1)

    async def waiter() -> None:
        async with slots.hold():
            pass

    async with slots.hold():
        gone = asyncio.create_task(waiter())
        await _eventually(lambda: slots.waiting == 1)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        handed = asyncio.create_task(waiter())
        await _eventually(lambda: slots.waiting == 1)
    # The release handed the slot to `handed` (skipping the cancelled one); cancelled before it
    # ran, it passes the slot on.
    assert slots.free == 0
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert slots.free == 1 and slots.waiting == 0
    with pytest.raises(ValueError):
        Slots(0)


async def test_urgent_background_writes_go_before_waiting_ordinary_ones() -> None:
    """With every slot taken, an urgent background write (the Service a Workspace's Ready
    waits on) is sent before the ordinary ones queued before it."""
    client, cache = _Client(), _SyncedCache()
    client.gate = asyncio.Event()
    writer = _writer(client, cache, max_background_writes=1)
    writer.apply_in_background(CM, _cm("busy"))
    await _eventually(lambda: writer._slots.free == 0)  # "busy" takes the slot and waits at the gate
    for name in ("h1", "h2"):
        writer.apply_in_background(CM, _cm(name))
    writer.apply_in_background(CM, _cm("ready-gate"), urgent=True)
    client.gate.set()
    await _eventually(lambda: writer.in_flight == 0)
    assert [name for _, name in client.calls] == ["busy", "ready-gate", "h1", "h2"]


def test_expectations_hold_names_until_settled() -> None:
    exp: Expectations[tuple[str, str]] = Expectations()
    key = ("ns", "ws")
    exp.expect(key, "claim-a")
    exp.expect(key, "claim-b")
    assert exp.pending(key) == {"claim-a", "claim-b"} and len(exp) == 2
    exp.settle(key, "claim-a")
    assert exp.keep_only(key, {"claim-b", "other"}) == {"claim-b"}
    assert exp.keep_only(key, set()) == set() and len(exp) == 0
    assert exp.pending(key) == set()


class _Source:
    """An in-process event source for a Controller (the informer's part it needs)."""

    def __init__(self, objs: list[dict[str, Any]]) -> None:
        self.handlers: list[Any] = []
        self.objs = objs

    def add_handler(self, h: Any) -> None:
        self.handlers.append(h)

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        return True

    @property
    def has_synced(self) -> bool:
        return True

    @property
    def store(self) -> _Source:
        return self

    def list(self) -> list[dict[str, Any]]:
        return self.objs


async def _eventually(cond: Any, limit_s: float = 10.0) -> None:
    await eventually(cond, "the writer's state", timeout=limit_s, interval=0.005)
