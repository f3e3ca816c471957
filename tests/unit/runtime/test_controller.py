"""Controller logic against the real WorkQueue; the event source is a tiny in-process informer
stand-in (the real informer path is covered by tests/integration/runtime)."""

import asyncio
import io
import itertools
import json

import pytest

from kaito.runtime import (
    GVK,
    Controller,
    ControllerError,
    ControllerOptions,
    Metrics,
    Request,
    Result,
    TerminalError,
    configure_logging,
    generation_changed,
    get_logger,
)
from kaito.runtime.logging import reconcile_context

GVK_CM = GVK("", "v1", "ConfigMap")


class Source:
    def __init__(self, objs=()):
        self.handlers = []
        self.objs = list(objs)

    def add_handler(self, h):
        self.handlers.append(h)

    async def wait_for_sync(self, timeout=None):  # noqa: ASYNC109
        return True

    @property
    def has_synced(self):
        return True

    @property
    def store(self):
        return self

    def list(self):
        return self.objs

    def add(self, obj):
        for h in self.handlers:
            h.on_add(obj)


def cm(name, gen=1):
    return {"metadata": {"name": name, "namespace": "ns", "generation": gen}}


async def run_ctrl(ctrl, src, body):
    ctrl.watch(GVK_CM, src, lambda o: (Request.from_object(o),), ())
    stop = asyncio.Event()
    task = asyncio.create_task(ctrl.start(stop))
    await asyncio.wait_for(ctrl.started.wait(), 5)
    try:
        await body()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def eventually(cond, limit_s=10.0):
    """Poll ``cond`` until true; generous deadline (shared 2-core machine), no fixed sleeps."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def idle(ctrl):
    """Nothing queued, waiting, or being reconciled."""
    q = ctrl.queue
    return len(q) == 0 and q.num_waiting() == 0 and not q._processing


def value(metrics, metric, **labels):
    v = metrics.registry.get_sample_value(metric, labels)
    return v or 0.0


async def test_exception_retries_with_backoff_then_success_forgets():
    calls: list[float] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def reconcile(req):
        calls.append(loop.time())
        if len(calls) < 5:
            raise RuntimeError("boom")
        done.set()

    m = Metrics()
    ctrl = Controller("c", reconcile, metrics=m)

    async def body():
        ctrl.enqueue(Request("ns", "a"))
        await asyncio.wait_for(done.wait(), 5)
        await eventually(lambda: idle(ctrl))
        assert ctrl.queue.num_requeues(Request("ns", "a")) == 0  # success forgot the backoff

    await run_ctrl(ctrl, Source(), body)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(calls) == 5
    for i, gap in enumerate(gaps):  # 5, 10, 20, 40 ms
        assert gap >= 0.005 * 2**i * 0.9, gaps
    assert value(m, "controller_runtime_reconcile_errors_total", controller="c") == 4
    assert value(m, "controller_runtime_reconcile_total", controller="c", result="error") == 4
    assert value(m, "controller_runtime_reconcile_total", controller="c", result="success") == 1
    assert value(m, "workqueue_retries_total", controller="c", name="c") == 4


async def test_terminal_error_is_not_retried():
    calls = []

    async def reconcile(req):
        calls.append(req)
        raise TerminalError("spec is invalid")

    m = Metrics()
    ctrl = Controller("t", reconcile, metrics=m)

    async def body():
        ctrl.enqueue(Request("ns", "a"))
        await eventually(lambda: calls and idle(ctrl))
        # Nothing scheduled: no retry can come, whatever the wait.
        assert ctrl.queue.num_waiting() == 0 and ctrl.queue.num_requeues(Request("ns", "a")) == 0

    await run_ctrl(ctrl, Source(), body)
    assert len(calls) == 1
    assert value(m, "controller_runtime_terminal_reconcile_errors_total", controller="t") == 1
    assert value(m, "workqueue_retries_total", controller="t", name="t") == 0


async def test_requeue_after_and_initial_replay_and_predicates():
    seen: list[str] = []

    class R:
        async def reconcile(self, req):
            seen.append(req.name)
            if req.name == "a" and seen.count("a") == 1:
                return Result(requeue_after=0.05)
            return None

    src = Source([cm("a"), cm("b")])
    ctrl = Controller("r", R())
    ctrl.watch(GVK_CM, src, lambda o: (Request.from_object(o),), (generation_changed(),))
    stop = asyncio.Event()
    task = asyncio.create_task(ctrl.start(stop))
    await asyncio.wait_for(ctrl.started.wait(), 5)
    await eventually(lambda: seen.count("a") == 2 and "b" in seen and idle(ctrl))
    assert sorted(seen) == ["a", "a", "b"]  # replay of the store + one requeue_after
    for h in src.handlers:
        h.on_update(cm("b", 1), cm("b", 1))  # status-only: filtered (handlers enqueue synchronously)
    assert idle(ctrl)
    for h in src.handlers:
        h.on_update(cm("b", 1), cm("b", 2))
    await eventually(lambda: seen.count("b") == 2 and idle(ctrl))
    stop.set()
    await task


async def test_concurrency_limit_and_one_worker_per_key():
    active = 0
    peak = 0
    per_key: dict[str, int] = {}
    overlaps: list[str] = []  # recorded, not asserted in the reconcile (the controller would swallow it)
    runs: dict[str, int] = {}
    k0_running = asyncio.Event()

    async def reconcile(req):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        per_key[req.name] = per_key.get(req.name, 0) + 1
        if per_key[req.name] != 1:
            overlaps.append(req.name)
        if req.name == "k0":
            k0_running.set()
        await asyncio.sleep(0.02)
        runs[req.name] = runs.get(req.name, 0) + 1
        per_key[req.name] -= 1
        active -= 1

    ctrl = Controller("p", reconcile, max_concurrent_reconciles=3)

    async def body():
        for i in range(10):
            ctrl.enqueue(Request("ns", f"k{i}"))
            ctrl.enqueue(Request("ns", f"k{i}"))
        await asyncio.wait_for(k0_running.wait(), 5)
        ctrl.enqueue(Request("ns", "k0"))  # while k0 runs: exactly one rerun, never concurrent
        await eventually(lambda: len(runs) == 10 and idle(ctrl))

    await run_ctrl(ctrl, Source(), body)
    assert peak == 3
    assert overlaps == []
    assert runs["k0"] == 2 and all(runs[f"k{i}"] == 1 for i in range(1, 10))


async def test_reconcile_timeout_counts_as_error():
    calls = 0

    async def reconcile(req):
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)

    m = Metrics()
    ctrl = Controller("to", reconcile, metrics=m, reconcile_timeout=0.05)

    async def body():
        ctrl.enqueue(Request(None, "a"))
        await eventually(lambda: calls == 2 and idle(ctrl))

    await run_ctrl(ctrl, Source(), body)
    assert calls == 2
    assert value(m, "controller_runtime_reconcile_errors_total", controller="to") == 1


async def test_stop_drains_in_flight_and_starts_nothing_new():
    started, finished = [], []

    async def reconcile(req):
        started.append(req.name)
        await asyncio.sleep(0.2)
        finished.append(req.name)

    ctrl = Controller("d", reconcile)
    stop = asyncio.Event()
    ctrl.watch(GVK_CM, Source(), lambda o: (Request.from_object(o),))
    task = asyncio.create_task(ctrl.start(stop))
    await ctrl.started.wait()
    ctrl.enqueue(Request("ns", "a"))
    ctrl.enqueue(Request("ns", "b"))
    await eventually(lambda: started == ["a"])
    stop.set()
    await asyncio.wait_for(task, 5)
    assert started == ["a"] and finished == ["a"]


async def test_log_lines_carry_controller_key_and_reconcile_id():
    buf = io.StringIO()
    configure_logging("json", "DEBUG", stream=buf)
    log = get_logger("test")

    async def reconcile(req):
        log.info("inside")
        if req.name == "never":
            raise RuntimeError("x")

    ctrl = Controller("logc", reconcile)

    async def body():
        ctrl.enqueue(Request("ns", "a"))
        await eventually(lambda: '"inside"' in buf.getvalue() and idle(ctrl))

    try:
        await run_ctrl(ctrl, Source(), body)
    finally:
        configure_logging("console", "WARNING")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    inside = [line for line in lines if line["msg"] == "inside"]
    assert len(inside) == 1
    # controller-runtime's keys, in zap's order, so one log pipeline reads Go and kaito alike
    assert list(inside[0])[:4] == ["ts", "level", "logger", "msg"], inside[0]
    assert isinstance(inside[0]["ts"], float)
    assert inside[0]["level"] == "info" and inside[0]["logger"] == "test"
    assert inside[0]["controller"] == "logc"
    assert (inside[0]["namespace"], inside[0]["name"]) == ("ns", "a")
    assert len(inside[0]["reconcileID"]) == 16


def test_stdlib_records_are_written_in_the_same_json() -> None:
    """aiohttp, uvicorn, the Azure SDK and vLLM log through the standard library: their lines must
    reach the same stream in the same format, and the SDK's per-request INFO stays quiet."""
    import logging

    buf = io.StringIO()
    configure_logging("json", "INFO", stream=buf)
    try:
        logging.getLogger("aiohttp.client").warning("peer went away: %s", "reset")
        logging.getLogger("azure.core.pipeline").info("Request URL: ...")
        with reconcile_context("c", "ns/x", "0123456789abcdef"):
            logging.getLogger("vllm.engine").info("loaded")
    finally:
        configure_logging("console", "WARNING")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(ln["logger"], ln["level"], ln["msg"]) for ln in lines] == [
        ("aiohttp.client", "warning", "peer went away: reset"),
        ("vllm.engine", "info", "loaded"),
    ], lines
    assert lines[1]["reconcileID"] == "0123456789abcdef" and lines[1]["name"] == "x"
    assert all(list(ln)[:4] == ["ts", "level", "logger", "msg"] for ln in lines)


async def test_self_explanatory_failures_log_one_line_the_rest_a_traceback():
    """An apiserver that goes away mid-request (restart, failover) is retried like any failure,
    but its traceback says nothing the error line does not: one line. Anything unexpected keeps
    its traceback."""
    import aiohttp

    buf = io.StringIO()
    configure_logging("json", "DEBUG", stream=buf)
    raised = {
        "gone": aiohttp.ServerDisconnectedError(),
        "refused": ConnectionRefusedError(111, "Connection refused"),
        "bug": KeyError("status"),
    }
    seen: set[str] = set()

    async def reconcile(req):
        if req.name not in seen:
            seen.add(req.name)
            raise raised[req.name]

    ctrl = Controller("quiet", reconcile)

    async def body():
        for name in raised:
            ctrl.enqueue(Request("ns", name))
        await eventually(lambda: seen == set(raised) and idle(ctrl))

    try:
        await run_ctrl(ctrl, Source(), body)
    finally:
        configure_logging("console", "WARNING")
    failed = {
        f"{line['namespace']}/{line['name']}": line
        for line in map(json.loads, buf.getvalue().splitlines())
        if line["msg"] == "reconcile failed, will retry"
    }
    assert set(failed) == {"ns/gone", "ns/refused", "ns/bug"}, failed
    assert "stacktrace" not in failed["ns/gone"] and "ServerDisconnectedError" in failed["ns/gone"]["error"]
    assert "stacktrace" not in failed["ns/refused"]
    assert "Traceback" in failed["ns/bug"]["stacktrace"]


def test_bad_options():
    with pytest.raises(ValueError):
        Controller("x", lambda r: None, max_concurrent_reconciles=0)  # type: ignore[arg-type,return-value]


async def test_requeue_true_reruns_with_backoff():
    calls: list[str] = []

    async def reconcile(req):
        calls.append(req.name)
        return Result(requeue=True) if len(calls) < 3 else None

    m = Metrics()
    ctrl = Controller("rq", reconcile, metrics=m)

    async def body():
        ctrl.enqueue(Request("ns", "a"))
        await eventually(lambda: len(calls) == 3 and idle(ctrl))
        assert ctrl.queue.num_requeues(Request("ns", "a")) == 0  # the success forgot the backoff

    await run_ctrl(ctrl, Source(), body)
    assert calls == ["a", "a", "a"]
    assert value(m, "controller_runtime_reconcile_total", controller="rq", result="requeue") == 2
    assert value(m, "controller_runtime_reconcile_total", controller="rq", result="success") == 1
    assert value(m, "workqueue_retries_total", controller="rq", name="rq") == 2


async def test_stray_cancelled_error_is_a_panic_not_a_dead_worker():
    """Issue 8, bug 3: a CancelledError that is not the worker's own cancellation (here: an
    inner task someone cancelled, awaited by the reconcile) used to end the only worker, so the
    controller silently stopped while readiness passed. It is now counted and retried."""
    calls: list[str] = []

    async def reconcile(req):
        calls.append(req.name)
        if req.name == "a" and calls.count("a") == 1:
            inner = asyncio.ensure_future(asyncio.sleep(10))
            inner.cancel()
            await inner  # raises CancelledError into the reconcile
        return None

    m = Metrics()
    ctrl = Controller("panic", reconcile, metrics=m)  # one worker

    async def body():
        ctrl.enqueue(Request("ns", "a"))
        ctrl.enqueue(Request("ns", "b"))
        await eventually(lambda: calls.count("a") == 2 and "b" in calls and idle(ctrl))

    await run_ctrl(ctrl, Source(), body)
    assert value(m, "controller_runtime_reconcile_panics_total", controller="panic") == 1
    assert value(m, "controller_runtime_reconcile_errors_total", controller="panic") == 1


async def test_a_panic_without_recovery_fails_the_controller():
    """recover_panic=False: the worker ends, and the supervisor fails the controller (and with
    it the manager) instead of running on without workers."""

    class Boom(BaseException):
        pass

    async def reconcile(req):
        raise Boom()

    ctrl = Controller("fatal", reconcile, ControllerOptions(recover_panic=False))
    ctrl.watch(GVK_CM, Source(), lambda o: (Request.from_object(o),))
    stop = asyncio.Event()
    task = asyncio.create_task(ctrl.start(stop))
    await asyncio.wait_for(ctrl.started.wait(), 5)
    ctrl.enqueue(Request("ns", "a"))
    with pytest.raises(ControllerError):
        await asyncio.wait_for(task, 10)


async def test_spawned_work_is_drained_on_stop_and_cancelled_with_the_controller():
    """Issue 20, bug 7: work a reconcile leaves running belongs to the controller's run."""
    gate = asyncio.Event()
    outcome = []
    ctrl = None

    async def write(tag):
        try:
            await gate.wait()
            outcome.append(f"wrote:{tag}")
        except asyncio.CancelledError:
            outcome.append(f"cancelled:{tag}")
            raise

    async def reconcile(req):
        ctrl.spawn(write(req.name))

    ctrl = Controller("spawn", reconcile)
    src = Source([cm("drained")])
    ctrl.watch(GVK_CM, src, lambda o: (Request.from_object(o),), ())
    stop = asyncio.Event()
    task = asyncio.create_task(ctrl.start(stop))
    await eventually(lambda: len(ctrl._background) == 1)
    stop.set()  # a graceful stop waits for the spawned write ...
    await asyncio.sleep(0.05)
    assert not task.done()
    gate.set()
    await asyncio.wait_for(task, 10)
    assert outcome == ["wrote:drained"]

    gate.clear()
    src.objs = [cm("cancelled")]
    stop = asyncio.Event()
    task = asyncio.create_task(ctrl.start(stop))
    await eventually(lambda: len(ctrl._background) == 1)
    task.cancel()  # ... and cancelling the controller (leadership lost) cancels it
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["wrote:drained", "cancelled:cancelled"]
    with pytest.raises(ControllerError):
        ctrl.spawn(write("after"))
