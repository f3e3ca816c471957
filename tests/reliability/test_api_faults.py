"""Suite 2 (issue 14): the real operator under API faults during rollouts.

The kaito operator (Manager, informers, workspace controller, BYO provisioner) runs in this event
loop against a control plane of its own (etcd, kube-apiserver without the watch cache so etcd
compaction reaches watchers as 410, kcm, scheduler, kwok GPU nodes). It talks to the apiserver
through the loopback fault proxy of the informer tests (tests/integration/runtime/faultproxy.py)
as a user of its own, so API Priority and Fairness treats it as an ordinary client.

Phases, each a rollout of ``K`` new Workspaces on fresh kwok GPU nodes:

  calm          no fault: the reference figure of requests per Workspace;
  restart       kube-apiserver stopped and started on the same port mid-rollout;
  compaction    etcd compacted past every watch's resourceVersion and the watches ended: each
                informer must get 410 and relist;
  cut-watches   watch streams cut in the middle of an event line;
  429-storm     a FlowSchema sends the operator's user to a reject-only priority level with no
                seats: every request it makes is answered 429 by the real APF, until removed;
  503           the proxy answers 503 + Retry-After to a share of the requests (not forwarded).

After each phase every Workspace of every phase is Ready (nothing missed), and the phase's
requests per Workspace (relist LISTs and the refused-and-resent requests counted apart) stay
within 2x the calm figure (no reconcile storm). One JSON figures line at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from rel_support import LogCapture, install_crds, metric, running_operator, until
from reliability_stack import emit

from faultproxy import Chunks, FaultProxy, Seen, user_flow_schema  # isort: skip  (found through rel_support's path)
from kaito.api import names
from kaito.controllers.workspace import WORKSPACE
from kaito.envtest import Cluster, ClusterOptions
from kaito.envtest.certs import issue_client_cert
from kaito.operator import Operator, OperatorOptions
from kaito.provisioners.byo import gpu_node_manifest
from kaito.runtime import GVK, NODE, POD, STATEFULSET, ApiError, Client

pytestmark = pytest.mark.cluster

K = int(os.environ.get("KAITO_FAULTS_WORKSPACES", "3"))
USER = "kaito-chaos-operator"
PHASE_TIMEOUT = 300.0
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


#: The request the current proxy handler task serves (set by ``Faults.before``, read by Proxy).
_CURRENT: contextvars.ContextVar[Seen] = contextvars.ContextVar("seen")
UNREACHED = 0  # status recorded for a request the apiserver never got (it was down)


class Proxy(FaultProxy):
    """The fault proxy, plus: when the apiserver cannot be reached (it is restarting) the client's
    connection is dropped, as a real apiserver's going away drops it, instead of a 500 that no
    apiserver would send; and each answer's status is recorded (``status[id(seen)]``), so a
    phase can tell requests the apiserver served from those refused or never delivered."""

    status: dict[int, int]

    async def __aenter__(self) -> Proxy:
        self.status = {}
        await super().__aenter__()
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            resp = await super()._handle(request)
        except web.HTTPException as exc:
            self._record(exc.status)
            raise
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError):
            self._record(UNREACHED)
            if request.transport is not None:
                request.transport.close()
            raise
        self._record(resp.status)
        return resp

    def _record(self, status: int) -> None:
        seen = _CURRENT.get(None)
        if seen is not None:
            self.status[id(seen)] = status


@dataclass
class Faults:
    """What the proxy does to the operator's traffic right now."""

    cut: asyncio.Event = field(default_factory=asyncio.Event)
    mid_event_cuts: int = 0
    refuse_every: int = 0
    refuse_left: int = 0
    refused: int = 0
    cut_streams: int = 0
    _n: int = 0

    async def before(self, seen: Seen) -> None:
        """503 + Retry-After before forwarding: the request was not processed, resending is safe."""
        _CURRENT.set(seen)
        if seen.is_watch or self.refuse_left <= 0:
            return
        self._n += 1
        if self._n % self.refuse_every == 0:
            self.refuse_left -= 1
            self.refused += 1
            raise web.HTTPServiceUnavailable(
                headers={"Retry-After": "1"},
                content_type="application/json",
                text='{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"ServiceUnavailable",'
                '"message":"rollout of the apiserver in progress","code":503}',
            )

    async def fault(self, seen: Seen, chunks: Chunks) -> Chunks | None:
        if not seen.is_watch:
            return None
        if self.mid_event_cuts > 0:
            self.mid_event_cuts -= 1
            return self._until_cut(self._half_event(chunks), self.cut)
        return self._until_cut(chunks, self.cut)

    async def _half_event(self, chunks: Chunks) -> AsyncIterator[bytes]:
        buf = b""
        async for chunk in chunks:
            buf += chunk
            if b"\n" in buf:
                line = buf.split(b"\n", 1)[0]
                self.cut_streams += 1
                yield line[: len(line) // 2]
                return

    async def _until_cut(self, chunks: Chunks, cut: asyncio.Event) -> AsyncIterator[bytes]:
        """Relay a watch until ``cut`` is set, then end it (the server closing the stream)."""
        it = aiter(chunks)
        waiter = asyncio.ensure_future(cut.wait())
        try:
            while True:
                nxt = asyncio.ensure_future(anext(it))
                done, _ = await asyncio.wait({nxt, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    self.cut_streams += 1
                    return
                try:
                    chunk = nxt.result()
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            waiter.cancel()

    def cut_all_watches(self) -> None:
        old, self.cut = self.cut, asyncio.Event()
        old.set()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A control plane of this module's own: it is restarted, compacted and throttled."""
    with Cluster(ClusterOptions(controller_manager=True, scheduler=True, kwok=True, watch_cache=False)) as c:
        install_crds(c)
        assert c.pki is not None
        admin = ("create", "clusterrolebinding", "kaito-chaos", "--clusterrole=cluster-admin")
        c.kubectl(*admin, f"--user={USER}")
        yield c


def _user_config(cluster: Cluster) -> Any:
    """The operator's own identity (not system:masters, which APF exempts)."""
    assert cluster.pki is not None
    cert, key = issue_client_cert(cluster.pki, cluster.workdir / "pki", USER, ["kaito-chaos"])
    cfg = copy.copy(cluster.client_configuration())
    cfg.cert_file, cfg.key_file = str(cert), str(key)
    return cfg


def _ready(ws: dict[str, Any]) -> bool:
    for c in (ws.get("status") or {}).get("conditions") or []:
        if c.get("type") == names.WORKSPACE_READY:
            return bool(c.get("status") == "True")
    return False


@dataclass
class Phase:
    name: str
    workspaces: list[str]
    requests: int = 0
    lists: int = 0
    relists_410: int = 0
    refused: int = 0
    unreached: int = 0
    seconds: float = 0.0

    @property
    def per_workspace(self) -> float:
        """Requests the apiserver served per Workspace, relist LISTs apart: what the controller
        chose to do. Requests refused (429, 503) or never delivered (apiserver down) are the
        faults' own cost, resent as told, and counted apart in ``refused``."""
        return (self.requests - self.refused - self.lists) / len(self.workspaces)


def _lists(op: Operator) -> tuple[int, int]:
    infs = op.manager.cache.informers
    return sum(i.stats.lists for i in infs), sum(i.stats.relists_410 for i in infs)


def _apf_objects(level: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": level},
            "spec": {
                "type": "Limited",
                "limited": {
                    "nominalConcurrencyShares": 0,
                    "lendablePercent": 0,
                    "borrowingLimitPercent": 0,
                    "limitResponse": {"type": "Reject"},
                },
            },
        },
        user_flow_schema(level, USER, non_resource=True),
    ]


async def _apf_rejected(admin: Client, level: str) -> float:
    text = await admin.session.get(admin.base_url + "/metrics")
    body = await text.text()
    text.release()
    total = 0.0
    for line in body.splitlines():
        name = "apiserver_flowcontrol_rejected_requests_total"
        if line.startswith(name) and f'priority_level="{level}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_operator_converges_through_api_faults(cluster: Cluster) -> None:
    start = time.monotonic()
    faults = Faults()
    ns = f"faults-{uuid.uuid4().hex[:6]}"
    run = Run(ns=ns, faults=faults)
    logs = LogCapture("INFO")  # the operator's own log: kept out of the test output, counted
    async with (
        Client(cluster.client_configuration()) as admin,
        Proxy(_user_config(cluster), fault=faults.fault, before=faults.before) as proxy,
    ):
        await admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        options = OperatorOptions(metrics_bind_address="0", health_probe_bind_address="0")
        with logs:
            async with running_operator(proxy.configuration(), options) as op:
                try:
                    await _phases(cluster, admin, proxy, op, run)
                except AssertionError as exc:
                    # The operator's log is kept out of the output while all goes well; a phase
                    # that never converges is read from it, and from the state it left.
                    tail = "\n".join(logs.text().splitlines()[-300:])
                    state = await _state(admin, op, ns)
                    raise AssertionError(
                        f"{exc}\n--- the operator's last 300 lines ---\n{tail}\n--- state ---\n{state}"
                    ) from None
    phases = run.phases
    calm = phases[0].per_workspace
    figures = {
        "suite": "api-faults",
        "workspaces": len(run.all_ws),
        "calm_requests_per_workspace": round(calm, 1),
        "phases": {
            p.name: {
                "requests_per_workspace": round(p.per_workspace, 1),
                "all_requests_per_workspace": round(p.requests / len(p.workspaces), 1),
                "ratio_to_calm": round(p.per_workspace / calm, 2),
                "lists": p.lists,
                "relists_410": p.relists_410,
                "refused_or_unreached": p.refused,
                "unreached": p.unreached,
                "seconds": p.seconds,
            }
            for p in phases
        },
        "apf_429s": run.storm,
        "watch_streams_cut": faults.cut_streams,
        "watch_streams_cut_mid_event": run.cut_mid_event,
        "informers": run.informers,
        "panics": run.panics,
        "operator_warnings": logs.text().count('"level": "warning"'),
        "seconds": round(time.monotonic() - start, 1),
    }
    emit(figures)
    assert run.panics == 0, figures
    for p in phases[1:]:
        assert p.per_workspace <= 2 * calm, f"reconcile storm in {p.name}: {figures}"


@dataclass
class Run:
    ns: str
    faults: Faults
    phases: list[Phase] = field(default_factory=list)
    all_ws: list[str] = field(default_factory=list)
    storm: float = 0.0
    cut_mid_event: int = 0
    informers: int = 0
    panics: float = 0.0


async def _phases(cluster: Cluster, admin: Client, proxy: Proxy, op: Operator, run: Run) -> None:
    ns, faults, all_ws = run.ns, run.faults, run.all_ws
    ctrl = op.workspace.controller
    assert ctrl is not None
    run.informers = len(op.manager.cache.informers)

    async def all_ready() -> bool:
        try:
            items = await admin.list(WORKSPACE, ns, cached=False)
        except (ApiError, aiohttp.ClientError, OSError):
            return False  # the apiserver may be restarting
        ready = {w["metadata"]["name"] for w in items if _ready(w)}
        return set(all_ws) <= ready

    async def quiet() -> bool:
        """Converged: queue empty and no request through the proxy for 2 s."""
        before = len(proxy.seen)
        if ctrl.queue is None or len(ctrl.queue) > 0:
            return False
        await asyncio.sleep(2.0)
        return len(proxy.seen) == before and len(ctrl.queue) == 0

    async def schedulable(nodes: list[str]) -> bool:
        for name in nodes:
            node = await admin.get(NODE, name, cached=False)
            taints = (node.get("spec") or {}).get("taints") or []
            if any(t.get("key") == NOT_READY_TAINT for t in taints):
                return False
        return True

    async def rollout(name: str) -> Phase:
        phase = Phase(name, [f"{name}-{i}" for i in range(K)])
        nodes = [f"node-{ws}" for ws in phase.workspaces]
        for node, ws in zip(nodes, phase.workspaces, strict=True):
            await admin.create(gpu_node_manifest(node, "Standard_NC6s_v3", {"apps": ws}))
        # BYO nodes are in place before the Workspaces that select them, as in a real cluster.
        # Waiting here also keeps a kube-controller-manager quirk out of the restart phase: its
        # node-lifecycle controller drops a failed removal of the not-ready taint (the apiserver
        # was down) until the node's next update, which kwok, like a kubelet, sends only every
        # 4-10 minutes; the pods would stay Pending that long whatever the operator does.
        await until(lambda: schedulable(nodes), f"the {name} nodes to lose the not-ready taint", 60)
        for ws in phase.workspaces:
            await admin.create(
                {
                    "apiVersion": "kaito.sh/v1beta1",
                    "kind": "Workspace",
                    "metadata": {"name": ws, "namespace": ns},
                    "resource": {
                        "instanceType": "Standard_NC6s_v3",
                        "labelSelector": {"matchLabels": {"apps": ws}},
                    },
                    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
                }
            )
        all_ws.extend(phase.workspaces)
        return phase

    @contextlib.asynccontextmanager
    async def measured(phase_name: str, arm: Any = None) -> AsyncIterator[Phase]:
        t0, seen0 = time.monotonic(), len(proxy.seen)
        lists0, gone0 = _lists(op)
        if arm is not None:
            await arm()  # a fault on the traffic the rollout is about to cause
        phase = await rollout(phase_name)
        yield phase
        await until(all_ready, f"every Workspace Ready after {phase_name}", PHASE_TIMEOUT, 0.5)
        await until(quiet, f"the operator to go quiet after {phase_name}", PHASE_TIMEOUT, 0.1)
        lists1, gone1 = _lists(op)
        served = [s for s in proxy.seen[seen0:] if not s.is_watch]
        phase.requests = len(served)
        phase.lists, phase.relists_410 = lists1 - lists0, gone1 - gone0
        phase.refused = sum(1 for s in served if proxy.status.get(id(s), 200) in (UNREACHED, 429, 503))
        phase.unreached = sum(1 for s in served if proxy.status.get(id(s)) == UNREACHED)
        phase.seconds = round(time.monotonic() - t0, 1)
        run.phases.append(phase)

    async with measured("calm"):
        pass

    async with measured("restart"):
        await asyncio.to_thread(cluster.restart_apiserver)

    async with measured("compaction"):
        # advance etcd past the watches' resourceVersions with writes of a kind the operator
        # does not watch, compact, then end every watch: those behind must get 410 and relist
        for i in range(3):
            await admin.create(
                {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": f"advance-{i}", "namespace": ns},
                    "template": {"spec": {"containers": [{"name": "c", "image": "x"}]}},
                }
            )
        gone_before = _lists(op)[1]
        await asyncio.to_thread(cluster.compact_etcd)
        faults.cut_all_watches()
        # An informer whose last event came after the compaction point resumes without a 410
        # (the rollout races the compaction); the others relist.
        await until(lambda: _lists(op)[1] > gone_before, "a relist after 410", PHASE_TIMEOUT)

    # These two faults hit the traffic the rollout itself causes; the phase ends when the rollout
    # has converged, whatever share of the fault budget it used.
    async def arm_cuts() -> None:
        faults.mid_event_cuts = 3 * K
        faults.cut_all_watches()  # the informers watch again, and those new streams get cut

    async with measured("cut-watches", arm_cuts):
        cuts0 = faults.cut_streams
    faults.mid_event_cuts = 0
    run.cut_mid_event = faults.cut_streams - cuts0
    assert run.cut_mid_event >= 1, "no watch stream was cut mid-event"

    level = f"kaito-reject-{uuid.uuid4().hex[:4]}"
    base = await _apf_rejected(admin, level)

    async def arm_storm() -> None:
        for obj in _apf_objects(level):
            await admin.create(obj)
        # the apiserver's APF controller applies new objects within a moment: wait for the level
        await until(lambda: _apf_level_known(admin, level), "the reject-only priority level", 60)
        faults.cut_all_watches()  # re-watches meet the storm too

    async with measured("429-storm", arm_storm):

        async def storming() -> bool:
            # keep the operator's informers coming back (re-watching, all at once) until the
            # storm has answered enough of its requests with 429
            faults.cut_all_watches()
            return await _429s(admin, level, base, 20)

        try:
            await until(storming, "20 APF rejections", PHASE_TIMEOUT, interval=1.0)
        finally:
            for obj in reversed(_apf_objects(level)):
                await admin.delete(GVK("flowcontrol.apiserver.k8s.io", "v1", obj["kind"]), level)
        run.storm = await _apf_rejected(admin, level) - base

    async def arm_refusals() -> None:
        faults.refuse_every, faults.refuse_left = 3, 10 * K

    async with measured("503", arm_refusals):
        pass
    faults.refuse_left = 0
    assert run.phases[-1].refused >= 1, "no request was refused with 503"

    await until(all_ready, "every Workspace still Ready", PHASE_TIMEOUT, 0.5)
    assert run.phases[2].relists_410 >= 1, "no relist after compaction"
    run.panics = metric(op, "reconcile_panics_total")
    # the Workspaces go away while the operator still runs (it owns their finalizers)
    for ws in all_ws:
        await admin.delete(WORKSPACE, ws, ns)

    async def gone() -> bool:
        return not await admin.list(WORKSPACE, ns, cached=False)

    await until(gone, "the Workspaces to be finalized", PHASE_TIMEOUT)


async def _state(admin: Client, op: Operator, ns: str) -> str:
    """What a stuck phase left: each Workspace's conditions, its StatefulSet and Pods, and the
    controller's queue (queued, in progress, waiting to retry and how many retries)."""
    lines: list[str] = []
    try:
        sts = {s["metadata"]["name"]: s for s in await admin.list(STATEFULSET, ns, cached=False)}
        pods = await admin.list(POD, ns, cached=False)
        for ws in await admin.list(WORKSPACE, ns, cached=False):
            name = ws["metadata"]["name"]
            conds = [
                f"{c.get('type')}={c.get('status')}({c.get('reason')}: {c.get('message', '')[:80]})"
                for c in (ws.get("status") or {}).get("conditions") or []
            ]
            st = (sts.get(name) or {}).get("status")
            mine = [
                f"{p['metadata']['name']}@{p['spec'].get('nodeName')}:{(p.get('status') or {}).get('phase')}"
                for p in pods
                if p["metadata"]["name"].startswith(f"{name}-")
            ]
            lines.append(f"{name}: {' '.join(conds)} | sts {st} | pods {mine}")
    except (ApiError, aiohttp.ClientError, OSError) as exc:
        lines.append(f"(cluster not readable: {exc})")
    ctrl = op.workspace.controller
    queue = ctrl.queue if ctrl is not None else None
    if queue is not None:
        now = time.monotonic()
        waiting = {str(k): round(t - now, 1) for k, t in queue._waiting.items()}
        lines.append(
            f"queue: {len(queue)} queued {[str(r) for r in queue._queue]}, in progress "
            f"{[str(r) for r in queue._processing]}, waiting (s left) {waiting}, retries "
            f"{ {str(k): queue.num_requeues(k) for k in queue._waiting} }"
        )
    for task in asyncio.all_tasks():
        # a reconcile that never returns: where each busy worker waits
        frames = task.get_stack()
        if "-worker-" in task.get_name() and len(frames) > 2:
            where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames[-6:]))
            lines.append(f"{task.get_name()}: {where}")
    return "\n".join(lines)


async def _apf_level_known(admin: Client, level: str) -> bool:
    resp = await admin.session.get(admin.base_url + "/metrics")
    body = await resp.text()
    resp.release()
    return f'apiserver_flowcontrol_nominal_limit_seats{{priority_level="{level}"}}' in body


async def _429s(admin: Client, level: str, base: float, n: int) -> bool:
    return await _apf_rejected(admin, level) - base >= n
