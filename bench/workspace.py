"""The workspace controller at scale: kaito's against upstream Kaito's Go controller, live.

    python bench/workspace.py            # 100 Workspaces, 2 rounds, 30 s window, both kcm modes
    python bench/workspace.py --small    # 10 Workspaces, kaito only, 10 s window (`make test`)

One side = a real control plane (apiserver + kcm + scheduler + kwok) with an audit log, one BYO
kwok GPU node per Workspace created, Ready and schedulable before the clock starts (provisioning excluded),
the side's workspace controller started as its own process, then N inference Workspaces created
concurrently; the clock runs until every one is ready.

- kaito: ``kaito controller --node-provisioner byo``; ready = ``WorkspaceReady`` True.
- upstream: Kaito v0.12.0's ``cmd/workspace`` (Go), built from the source tarball in
  ``../shared/peers/kaito-v0.12.0/`` (``--upstream-tarball`` / ``KAITO_UPSTREAM_TARBALL``) into
  ``~/.cache/kaito/assets/upstream-kaito-0.12.0/kaito-workspace`` on first use (``go build``,
  Go modules from the proxy, minutes cold), or taken ready from ``KAITO_UPSTREAM_WORKSPACE_BIN``.
  Its CRDs and ``inference-params`` / ``lora-params`` / ``qlora-params`` ConfigMaps come from the
  same tarball's chart. It runs out of cluster in BYO mode as its README describes
  (``CLOUD_PROVIDER=azure``, ``--node-provisioner=byo --webhook=false``), the nodes carry
  ``nvidia.com/gpu.{product,count,memory}`` (both sides get the same nodes), and the Workspaces
  are annotated ``kaito.sh/disable-benchmark`` (its post-load benchmark reads pod logs through a
  kubelet that kwok nodes do not have). Ready = its ``WorkspaceSucceeded`` True.

Why one fresh cluster per side and round, started identically, rather than both controllers on
fresh namespaces of one cluster: the two CRD sets both define ``workspaces.kaito.sh`` with
different schemas, so one cluster would have to swap CRDs between rounds, and deleting a CRD
deletes every Workspace, which hangs on the finalizers of whichever controller was just stopped;
and every GPU of the N nodes is taken by the previous round's pods, so the next side would wait on
kwok tearing N pods down or need N more nodes (a larger cluster for whoever runs second). A fresh
cluster per side per round gives each controller the same empty etcd, the same N nodes, the same
kcm/scheduler/kwok and its own audit log; the order alternates (kaito first in odd rounds,
upstream first in even ones) so the machine's drift does not favour one side; medians over rounds.

kcm, the floor both controllers share, runs as real clusters run it
(``--use-service-account-credentials=true``, the envtest default: each kcm controller is its own
ServiceAccount with its own client). The whole comparison runs twice in one run: kcm at its
default client limits (20 requests/s, burst 30 per controller) and with
``--kube-api-qps=200 --kube-api-burst=300``.

Reported (one JSON line, the last): per kcm mode (``comparisons``), both sides' medians and
  ratio_seconds_to_all_ready   upstream's seconds ÷ kaito's (> 1: kaito faster)
  ratio_writes_per_workspace   upstream's writes ÷ kaito's, Events included (> 1: kaito fewer);
                               ``ratio_writes_per_workspace_no_events`` without Events
and per side:
  seconds_to_all_ready    first create -> last Workspace ready
  p50_s / p99_s           per Workspace, from its own create to its ready (``ready_s``: all of
                          them, sorted, for bench/plot.py's CDF)
  writes_per_workspace    the controller's write requests per Workspace (audit log, by the
                          controller's own client-certificate user; both sides get one), from
                          start to the end of the converged window; ``..._no_events`` without
                          Events; ``writes_by_resource`` breaks them down
  requests_per_converged_reconcile
                          all API requests (reads too) the controller made per reconcile while
                          every Workspace was converged; reconciles are provoked by relabelling
                          every node and annotating every Workspace (a label and an annotation
                          neither controller reads). Requests are counted from the audit log
                          (the controller's user; the policy logs its reads too), reconciles from
                          its /metrics (controller-runtime's and kaito's share the names);
                          ``converged_requests`` names them ("verb resource code": count) and
                          ``..._from_metrics`` is the controller's own rest_client_requests_total
  rss_mb / cpu_s          the controller process at the end (VmRSS; user+system CPU seconds)
  kcm_statefulset_controller
                          kcm's StatefulSet controller's writes (audit log): it creates every
                          pod through one client (20 requests/s, burst 30 by default), shared
                          with its status updates; ``floor_s`` is the earliest its last pod create
                          could have been given the writes before it
  stages                  each Workspace's way to Ready from the audit log (see ``STAGES``): the
                          controller's first write, its StatefulSet, its ``<ws>`` Service sent
                          and answered, kcm's pod create, the scheduler's bind, kwok's pod
                          status, the Ready status write; p50/p90/max after each create and
                          after the first, the gaps between consecutive stages, how many Readys
                          waited last for the pod and how many for the Service
                          (``ready_gated_by``), and the last Workspace's whole path
The top-level ``seconds_to_all_ready`` is kaito's median at kcm's default limits. ``--small``
runs kaito only (one round, default kcm; no Go build, no tarball) and says so in ``peer``.
``--kcm default|fast`` runs one kcm mode only (full and ``--kaito-only`` modes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from kaito.envtest import Cluster, ClusterOptions  # noqa: E402
from kaito.envtest.assets import cache_root  # noqa: E402
from kaito.provisioners.byo import gpu_node_manifest  # noqa: E402
from kaito.runtime import GVK, Client  # noqa: E402

WORKSPACE = GVK("kaito.sh", "v1beta1", "Workspace")
NODE = GVK("", "v1", "Node")
NS = "bench"
UPSTREAM_VERSION = "0.12.0"
TARBALL_ENV = "KAITO_UPSTREAM_TARBALL"
BINARY_ENV = "KAITO_UPSTREAM_WORKSPACE_BIN"
DEFAULT_TARBALL = (
    REPO.parent / "shared" / "peers" / f"kaito-v{UPSTREAM_VERSION}" / f"kaito-{UPSTREAM_VERSION}-src.tar.gz"
)
#: kcm's client limits in the second comparison (the first runs kcm at its defaults).
KCM_FAST = ("--kube-api-qps=200", "--kube-api-burst=300")
TARGETS = {
    "seconds_to_all_ready": 10.0,
    "writes_per_workspace": 8,
    "requests_per_converged_reconcile": 0,
    "rss_mb": 120,
}
#: Writes by everyone; reads only by the controller under test (``{user}``), so that the requests
#: it makes in the converged window can be named, not only counted.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    users: ["{user}"]
  - level: None
    verbs: ["get", "list", "watch"]
  - level: Metadata
"""


@dataclass(frozen=True)
class Side:
    """One controller under test: how to install its API, start it and read its readiness."""

    name: str
    #: the client-certificate user the controller runs as (its writes are counted by it)
    user: str
    ready_condition: str
    api_version: str
    annotations: dict[str, str]


KAITO = Side("kaito", "kaito-controller", "WorkspaceReady", "kaito.sh/v1alpha1", {})
UPSTREAM = Side(
    "upstream", "upstream-kaito-controller", "WorkspaceSucceeded", "kaito.sh/v1beta1",
    {"kaito.sh/disable-benchmark": "true"},
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def _metrics(port: int) -> dict[str, float]:
    """Sums of the counters we need from the controller's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {"requests": 0.0, "reconciles": 0.0, "started": 0.0}
    for line in text.splitlines():
        if line.startswith("rest_client_requests_total{"):
            out["requests"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("controller_runtime_reconcile_total{") and 'controller="workspace"' in line:
            out["reconciles"] += float(line.rsplit(" ", 1)[1])
        elif (
            line.startswith("controller_runtime_max_concurrent_reconciles{")
            and 'controller="workspace"' in line
        ):
            out["started"] = 1.0
    return out


def _proc_figures(pid: int) -> tuple[float, float]:
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return rss_kb / 1024, cpu


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _audit_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for file in sorted(path.parent.glob(path.name + "*")):
        for line in file.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def _by(ev: dict[str, Any], user: str) -> bool:
    return bool((ev.get("user") or {}).get("username") == user)


def _requests_between(events: list[dict[str, Any]], user: str, since: float, until: float) -> dict[str, int]:
    """``user``'s requests (reads too) that the apiserver received in [since, until], by verb,
    resource and code: what ``requests_per_converged_reconcile`` counted, named."""
    seen: Counter[str] = Counter()
    for ev in events:
        if not _by(ev, user) or ev.get("stage") not in ("ResponseComplete", "ResponseStarted", "Panic"):
            continue
        if ev.get("stage") == "ResponseComplete" and ev.get("verb") == "watch":
            continue  # a watch's end; its start (ResponseStarted) is the request
        if not since <= _ts(ev["requestReceivedTimestamp"]) <= until:
            continue
        ref = ev.get("objectRef") or {}
        code = (ev.get("responseStatus") or {}).get("code", "")
        seen[f"{ev.get('verb')} {ref.get('resource', ev.get('requestURI', ''))} {code}"] += 1
    return dict(sorted(seen.items()))


def _first_writes(events: list[dict[str, Any]], user: str, resource: str) -> dict[str, float]:
    """Wall-clock time of ``user``'s first write of each object of ``resource``."""
    out: dict[str, float] = {}
    for ev in events:
        ref = ev.get("objectRef") or {}
        if (
            _by(ev, user)
            and ref.get("resource") == resource
            and not ref.get("subresource")
            and ev.get("verb") in ("create", "patch", "update")
        ):
            name, at = ref.get("name", ""), _ts(ev["requestReceivedTimestamp"])
            out[name] = min(out.get(name, at), at)
    return out


def _audit_writes(
    events: list[dict[str, Any]], user: str
) -> tuple[Counter[str], dict[str, dict[str, float]]]:
    """``user``'s writes by verb and resource, and how long the apiserver took for each kind of
    write (received -> response complete; p50/p90/max ms): where the time goes."""
    by_resource: Counter[str] = Counter()
    took: dict[str, list[float]] = {}
    for ev in events:
        if not _by(ev, user):
            continue
        if ev.get("verb") in ("create", "update", "patch", "delete", "deletecollection"):
            ref = ev.get("objectRef") or {}
            key = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            by_resource[f"{ev['verb']} {key}"] += 1
            try:
                ms = (_ts(ev["stageTimestamp"]) - _ts(ev["requestReceivedTimestamp"])) * 1000
            except (KeyError, ValueError):
                continue
            took.setdefault(f"{ev['verb']} {key}", []).append(ms)
    latency = {
        k: {
            "p50": round(_percentile(v, 0.5), 1),
            "p90": round(_percentile(v, 0.9), 1),
            "max": round(max(v), 1),
        }
        for k, v in sorted(took.items())
    }
    return by_resource, latency


#: Each Workspace's way to Ready, in order (``stages`` in a side's JSON): the bench's create; the
#: controller's first write of it (finalizer patch); its StatefulSet; its ``<ws>`` Service sent
#: (``service``) and answered (``service_done``: ClusterIP allocated); kcm's StatefulSet
#: controller creating pod ``<ws>-0``; the scheduler binding it; kwok's last pod status write
#: before Ready; the controller's last Workspace status write before the bench saw it Ready.
#: Times from the audit log (request received; ``service_done``: response sent), seconds after
#: the Workspace's create.
STAGES = (
    "first_write", "statefulset", "service", "service_done", "pod_created", "pod_bound", "pod_ready",
    "status_ready",
)  # fmt: skip
#: Stages beside the path (written alongside the StatefulSet), left out of ``gaps``.
SIDE_STAGES = ("service", "service_done")


def _stage_times(
    events: list[dict[str, Any]], user: str, created_wall: dict[str, float], ready_wall: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Per Workspace, the wall-clock time of each of :data:`STAGES` (missing ones left out)."""
    out: dict[str, dict[str, float]] = {nm: {} for nm in created_wall}
    pods = {f"{nm}-0": nm for nm in created_wall}

    def first(nm: str, stage: str, at: float) -> None:
        if nm in out and stage not in out[nm]:
            out[nm][stage] = at

    def last_before(nm: str, stage: str, at: float) -> None:
        if nm in out and at <= ready_wall.get(nm, float("inf")):
            out[nm][stage] = max(out[nm].get(stage, at), at)

    for ev in sorted(events, key=lambda e: e.get("requestReceivedTimestamp", "")):
        verb = ev.get("verb")
        if verb not in ("create", "update", "patch"):
            continue
        ref = ev.get("objectRef") or {}
        resource, sub, name = ref.get("resource"), ref.get("subresource"), ref.get("name", "")
        if ref.get("namespace") != NS:
            continue
        at = _ts(ev["requestReceivedTimestamp"])
        agent = str(ev.get("userAgent", ""))
        if _by(ev, user):
            if resource == "workspaces" and not sub:
                first(name, "first_write", at)
            elif resource == "workspaces" and sub == "status":
                last_before(name, "status_ready", at)
            elif resource == "statefulsets" and not sub:
                first(name, "statefulset", at)
            elif resource == "services" and not sub:
                if name in out and "service" not in out[name]:
                    out[name]["service_done"] = _ts(ev["stageTimestamp"])
                first(name, "service", at)
        elif resource == "pods" and name in pods:
            nm = pods[name]
            if not sub and verb == "create" and "statefulset-controller" in agent:
                first(nm, "pod_created", at)
            elif sub == "binding":
                first(nm, "pod_bound", at)
            elif sub == "status" and "kwok" in agent:
                last_before(nm, "pod_ready", at)
    return out


def _stage_summary(
    times: dict[str, dict[str, float]], created_wall: dict[str, float], t0: float
) -> dict[str, Any]:
    """p50/p90/max of each stage after each Workspace's create and after the first create, the
    p50/p90/max gap between consecutive stages, how many Workspaces' Ready waited last for
    their pod and how many for their Service, and the last-ready Workspace's whole path."""
    since_create: dict[str, list[float]] = {s: [] for s in STAGES}
    since_t0: dict[str, list[float]] = {s: [] for s in STAGES}
    gaps: dict[str, list[float]] = {}
    gated_by: dict[str, int] = {}
    for nm, stages in times.items():
        prev, prev_at = "create", created_wall[nm]
        for stage in STAGES:
            if stage not in stages:
                continue
            at = stages[stage]
            since_create[stage].append(at - created_wall[nm])
            since_t0[stage].append(at - t0)
            if stage not in SIDE_STAGES:  # the Service is written beside the StatefulSet
                gaps.setdefault(f"{prev}->{stage}", []).append(at - prev_at)
                prev, prev_at = stage, at
        # What the Ready write waited for last: the pod (kcm, scheduler, kwok) or the Service
        # (the apiserver's ClusterIP allocation); the controller's own reaction is what follows.
        if "status_ready" in stages and ("pod_ready" in stages or "service_done" in stages):
            pod, svc = stages.get("pod_ready", 0.0), stages.get("service_done", 0.0)
            gate = "service_done" if svc > pod else "pod_ready"
            gated_by[gate] = gated_by.get(gate, 0) + 1
            gaps.setdefault("last_of(pod_ready,service_done)->status_ready", []).append(
                stages["status_ready"] - max(pod, svc)
            )

    def stats(v: list[float]) -> dict[str, float]:
        return {
            "p50": round(_percentile(v, 0.5), 2),
            "p90": round(_percentile(v, 0.9), 2),
            "max": round(max(v), 2),
        }

    last = max(times, key=lambda nm: times[nm].get("status_ready", 0.0)) if times else None
    return {
        "after_create": {s: stats(v) for s, v in since_create.items() if v},
        "after_first_create": {s: stats(v) for s, v in since_t0.items() if v},
        "gaps": {k: stats(v) for k, v in gaps.items()},
        "ready_gated_by": gated_by,
        "last_ready": (
            {"workspace": last, **{s: round(at - t0, 2) for s, at in times[last].items()}} if last else None
        ),
    }


#: kube-controller-manager's client defaults (``--kube-api-qps`` / ``--kube-api-burst``); each of its
#: controllers has a client, and so a token bucket, of its own.
KCM_QPS, KCM_BURST = 20.0, 30


def _kcm_limits(kcm_args: tuple[str, ...]) -> tuple[float, int]:
    qps, burst = KCM_QPS, KCM_BURST
    for arg in kcm_args:
        if arg.startswith("--kube-api-qps="):
            qps = float(arg.split("=", 1)[1])
        elif arg.startswith("--kube-api-burst="):
            burst = int(arg.split("=", 1)[1])
    return qps, burst


def _kcm_statefulset_writes(
    events: list[dict[str, Any]], t0: float, qps: float, burst: int
) -> dict[str, Any]:
    """What kcm's StatefulSet controller wrote after the first create: every pod of the run is
    created by it, through one client limited to ``qps`` requests/s (burst ``burst``), which also
    carries its StatefulSet status updates. ``floor_s`` is when that bucket allows its last pod
    create at the earliest, given the writes it made before it: the time no Workspace controller
    can beat."""
    at: list[tuple[float, str]] = []
    for ev in events:
        if "statefulset-controller" not in str(ev.get("userAgent", "")):
            continue
        if ev.get("verb") not in ("create", "update", "patch", "delete"):
            continue
        ref = ev.get("objectRef") or {}
        kind = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        at.append((_ts(ev["requestReceivedTimestamp"]) - t0, f"{ev['verb']} {kind}"))
    at.sort()
    if not at:
        return {"writes": 0}
    pod_creates = [t for t, what in at if what == "create pods"]
    upto_last = sum(1 for t, _ in at if pod_creates and t <= pod_creates[-1])
    per_second = Counter(int(t) for t, _ in at if t >= 0)
    return {
        "writes": len(at),
        "by_kind": dict(Counter(what for _, what in at)),
        "last_pod_created_s": round(pod_creates[-1], 2) if pod_creates else None,
        "writes_until_last_pod_create": upto_last,
        "peak_writes_per_s": max(per_second.values()) if per_second else 0,
        "client_limits": {"qps": qps, "burst": burst},
        "floor_s": round(max(0.0, upto_last - burst) / qps, 2),
    }


async def _wait(check: Any, what: str, timeout: float, interval: float = 0.1) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def _status_reports(nodes: list[dict[str, Any]], since: float, until: float) -> int:
    """Nodes whose last status report (the Ready condition's ``lastHeartbeatTime``) fell in
    [since, until]: the node updates every node watcher decoded in an idle window. A node
    reports every 4 to 6 min (envtest/kwok-stages.yaml), so at most once in a shorter window."""
    count = 0
    for node in nodes:
        for c in (node.get("status") or {}).get("conditions") or ():
            if c.get("type") == "Ready" and c.get("lastHeartbeatTime"):
                count += since <= _ts(c["lastHeartbeatTime"]) <= until  # whole seconds, rounded down
    return count


#: Taints kcm's node-lifecycle controller keeps on a node while its Ready condition is not True.
_CONDITION_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


def _ready(ws: dict[str, Any], condition: str) -> bool:
    return any(
        c.get("type") == condition and c.get("status") == "True"
        for c in (ws.get("status") or {}).get("conditions") or ()
    )


# -- upstream Kaito ------------------------------------------------------------------------------


class PeerMissing(RuntimeError):
    """Upstream's source tarball is not there; the message names the path and how to set it."""


def upstream_tarball(flag: Path | None) -> Path:
    path = flag or (Path(os.environ[TARBALL_ENV]) if os.environ.get(TARBALL_ENV) else DEFAULT_TARBALL)
    if not path.is_file():
        raise PeerMissing(
            f"bench/workspace.py: upstream Kaito v{UPSTREAM_VERSION}'s source tarball not found at {path}; "
            f"set {TARBALL_ENV} or --upstream-tarball (or run --small, kaito only)"
        )
    return path


def upstream_source(tarball: Path, into: Path) -> Path:
    """The tarball unpacked under ``into`` (its top folder, ``kaito-<version>``)."""
    with tarfile.open(tarball) as tar:
        tar.extractall(into, filter="data")
    return into / f"kaito-{UPSTREAM_VERSION}"


def upstream_binary(source: Path, log: Callable[[str], None]) -> Path:
    """Upstream's workspace controller: ``KAITO_UPSTREAM_WORKSPACE_BIN``, else the cached build,
    else ``go build ./cmd/workspace`` from ``source`` into the asset cache (kept for next runs)."""
    ready = os.environ.get(BINARY_ENV)
    if ready:
        path = Path(ready).expanduser()
        if not os.access(path, os.X_OK):
            raise PeerMissing(f"bench/workspace.py: {BINARY_ENV}={path} is not an executable file")
        return path
    target = cache_root() / f"upstream-kaito-{UPSTREAM_VERSION}" / "kaito-workspace"
    if os.access(target, os.X_OK):
        return target
    if shutil.which("go") is None:
        raise PeerMissing(
            f"bench/workspace.py: no Go toolchain to build upstream Kaito into {target}; "
            f"install Go or set {BINARY_ENV} to a built cmd/workspace"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    log(f"building upstream Kaito v{UPSTREAM_VERSION} cmd/workspace into {target} (minutes cold)")
    proc = subprocess.run(
        ["go", "build", "-o", str(partial), "./cmd/workspace"], cwd=source, capture_output=True, text=True
    )
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise PeerMissing(f"bench/workspace.py: go build of upstream Kaito failed: {tail}")
    partial.replace(target)
    return target


def _install_upstream_api(cluster: Cluster, source: Path) -> None:
    """Upstream's CRDs and the ConfigMaps its controller reads, from its own chart."""
    chart = source / "charts" / "kaito" / "workspace"
    crds = sorted((chart / "crds").glob("*.yaml")) + [
        chart / "templates" / f"kaito.sh_{name}.yaml"
        for name in ("workspaces", "inferencesets", "modelmirrors")
    ]
    for crd in crds:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cluster.kubectl("create", "namespace", "kaito-system")
    for name in ("inference-params", "lora-params", "qlora-params"):
        text = (
            (chart / "templates" / f"{name}.yaml")
            .read_text()
            .replace("{{ .Release.Namespace }}", "kaito-system")
        )
        cluster.kubectl("apply", "-f", "-", input=text)


def _install_kaito_api(cluster: Cluster) -> None:
    for crd in sorted((REPO / "config" / "crd").glob("*.yaml")):
        if crd.name != "kustomization.yaml":
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    cluster.kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=60s")


def _controller_command(
    side: Side, kubeconfig: Path, port: int, upstream_bin: Path | None, extra: tuple[str, ...]
) -> tuple[list[str], dict[str, str]]:
    if side is KAITO:
        return [
            sys.executable, "-m", "kaito.cli.main", "controller",
            "--kubeconfig", str(kubeconfig),
            "--metrics-bind-address", f"127.0.0.1:{port}",
            "--health-probe-bind-address", "0",
            "--log-format", "json",
            *extra,
        ], {**os.environ, "PYTHONPATH": str(REPO / "src")}  # fmt: skip
    assert upstream_bin is not None
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "CLOUD_PROVIDER": "azure",
        "RELEASE_NAMESPACE": "kaito-system",
        "PRESET_REGISTRY_NAME": "mcr.microsoft.com/aks/kaito",
        "CLUSTER_NAME": "kaito",
    }
    return [
        str(upstream_bin),
        "--node-provisioner=byo",
        "--webhook=false",
        "--leader-elect=false",
        f"--metrics-bind-address=127.0.0.1:{port}",
        f"--health-probe-bind-address=127.0.0.1:{_free_port()}",
    ], env


async def run_side(
    side: Side,
    n: int,
    window: float,
    workdir: Path,
    *,
    kcm_args: tuple[str, ...] = (),
    extra_args: tuple[str, ...] = (),
    upstream_src: Path | None = None,
    upstream_bin: Path | None = None,
    idle: float = 0.0,
) -> dict[str, Any]:
    """One side on a fresh cluster: N nodes Ready and schedulable, the controller up, N Workspaces, clock.

    ``idle`` > 0 adds a quiet window after the converged one: nothing is poked, and the
    controller's CPU and API requests over it are its cost of merely running (issue 24's
    "idle CPU over a minute once converged" at 1,000 Workspaces)."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before the cluster starts
    audit_log = workdir / "audit.log"
    policy = workdir / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY.format(user=side.user))
    cluster = Cluster(
        ClusterOptions(
            controller_manager=True,
            scheduler=True,
            kwok=True,
            workdir=workdir / "cluster",
            extra_apiserver_args=[
                f"--audit-policy-file={policy}",
                f"--audit-log-path={audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=500",
            ],
            extra_controller_manager_args=list(kcm_args),
            kcm_service_account_credentials=True,  # as real clusters: kcm's writes per controller
        )
    )
    cluster.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        if side is KAITO:
            _install_kaito_api(cluster)
        else:
            assert upstream_src is not None
            _install_upstream_api(cluster, upstream_src)
        cluster.kubectl("create", "namespace", NS)
        controller_kubeconfig = cluster.user_kubeconfig(side.user, ["system:masters"])
        async with Client(cluster.client_configuration(), user_agent="kaito-bench") as client:
            names = [f"bench-{i:03d}" for i in range(n)]
            await asyncio.gather(
                *(
                    client.create(gpu_node_manifest(f"node-{nm}", "Standard_NC6s_v3", {"apps": nm}))
                    for nm in names
                )
            )

            async def nodes_ready() -> bool:
                # Ready and schedulable: a new Node carries node.kubernetes.io/not-ready:NoSchedule
                # (the apiserver's TaintNodesByCondition) until kcm's node-lifecycle controller
                # removes it, at its own client's 20 requests/s by default. A real cluster's GPU
                # nodes have long lost it when Workspaces arrive; waiting only for the Ready
                # condition had kcm untainting nodes for the first 20 s of every default-limits
                # round, the scheduler binding pods as it went (created -> bound p90 13-14 s).
                nodes = await client.list(NODE, label_selector="type=kwok", cached=False)
                ready = [
                    n
                    for n in nodes
                    if any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in n["status"].get("conditions") or []
                    )
                    and not any(
                        t.get("key") in _CONDITION_TAINTS for t in (n.get("spec") or {}).get("taints") or []
                    )
                ]
                return len(ready) >= n

            # kwok marks nodes Ready at its own pace (about 10/s here), and kcm untaints them at
            # its own: scale the deadline with N
            await _wait(nodes_ready, "the GPU nodes Ready and schedulable", max(120.0, n * 0.3))
            port = _free_port()
            log = (workdir / "controller.log").open("wb")
            argv, env = _controller_command(side, controller_kubeconfig, port, upstream_bin, extra_args)
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: ASYNC220 - before the clock

            async def started() -> bool:
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{side.name} controller exited; see {workdir / 'controller.log'}")
                try:
                    return _metrics(port)["started"] > 0
                except OSError:
                    return False

            await _wait(started, f"the {side.name} controller", 60)
            created: dict[str, float] = {}
            created_wall: dict[str, float] = {}
            ready_at: dict[str, float] = {}
            ready_wall: dict[str, float] = {}

            async def create(nm: str) -> None:
                body = {
                    "apiVersion": side.api_version,
                    "kind": "Workspace",
                    "metadata": {
                        "name": nm,
                        "namespace": NS,
                        **({"annotations": side.annotations} if side.annotations else {}),
                    },
                    "resource": {
                        "instanceType": "Standard_NC6s_v3",
                        "labelSelector": {"matchLabels": {"apps": nm}},
                    },
                    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
                }
                start, wall = time.monotonic(), time.time()
                await client.create(body)
                created[nm] = start
                created_wall[nm] = wall

            t0 = time.monotonic()
            load_average = os.getloadavg()[0]
            await asyncio.gather(*(create(nm) for nm in names))

            async def all_ready() -> bool:
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(
                        f"{side.name} controller exited ({proc.returncode}) before every Workspace was "
                        f"ready: {len(ready_at)} of {n}; see {workdir / 'controller.log'}"
                    )
                now, wall = time.monotonic(), time.time()
                for ws in await client.list(WORKSPACE, NS, cached=False):
                    nm = ws["metadata"]["name"]
                    if nm not in ready_at and _ready(ws, side.ready_condition):
                        ready_at[nm] = now
                        ready_wall[nm] = wall
                return len(ready_at) == n

            # Polled every 0.5 s (a LIST of N Workspaces is not free for a 2-core apiserver).
            # kcm's StatefulSet controller alone needs about N / 4 s at its default 20 requests/s
            deadline = max(300.0, n * 0.6)
            try:
                await _wait(all_ready, f"every Workspace {side.ready_condition}", deadline, interval=0.5)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}: {len(ready_at)} of {n} after {deadline:.0f} s") from None
            t_all = max(ready_at.values()) - t0
            per_ws = [ready_at[nm] - created[nm] for nm in names]

            # Converged window: provoke reconciles with nothing to change, then idle. Each side
            # is poked the same two ways, since each reacts to a different one: every node is
            # relabelled (kaito watches the nodes a Workspace selects) and every Workspace gets an
            # annotation (upstream reconciles on any Workspace event); neither label nor
            # annotation is read by either controller.
            await asyncio.sleep(2.0)
            before, window_from = _metrics(port), time.time()
            poke = {"metadata": {"labels": {"bench/poke": "1"}}}
            await asyncio.gather(*(client.patch(NODE, f"node-{nm}", poke) for nm in names))
            poke = {"metadata": {"annotations": {"bench/poke": "1"}}}
            await asyncio.gather(*(client.patch(WORKSPACE, nm, poke, NS) for nm in names))
            await asyncio.sleep(window)
            after, window_to = _metrics(port), time.time()
            rss_mb, cpu_s = _proc_figures(proc.pid)
            idle_figures: dict[str, float | None] = {}
            if idle > 0:
                # Quiet means the pokes' reconciles are done: at 1,000 Workspaces they outlast
                # the converged window, and counting them would not be idling.
                settle_deadline, last, still = time.monotonic() + 300, after["reconciles"], 0
                while still < 5 and time.monotonic() < settle_deadline:
                    await asyncio.sleep(1.0)
                    now_reconciles = _metrics(port)["reconciles"]
                    still = still + 1 if now_reconciles == last else 0
                    last = now_reconciles
                quiet_from, cpu_from = _metrics(port), _proc_figures(proc.pid)[1]
                wall_from = int(time.time())  # heartbeats carry whole seconds
                await asyncio.sleep(idle)
                quiet_to = _metrics(port)
                rss_mb, cpu_s = _proc_figures(proc.pid)
                wall_to = time.time()
                # What the controller still had to decode: kwok's node status reports (every
                # node every 4 to 6 min; a first wave 4 to 6 min after the nodes came up), so
                # how many fell in the window says how representative it was (3.3/s steady).
                reports = _status_reports(await client.list(NODE, cached=False), wall_from, wall_to)
                idle_figures = {
                    "idle_window_s": idle,
                    "idle_cpu_percent": round((cpu_s - cpu_from) / idle * 100, 3),
                    "idle_requests": quiet_to["requests"] - quiet_from["requests"],
                    "idle_reconciles": quiet_to["reconciles"] - quiet_from["reconciles"],
                    "idle_node_status_reports": reports,
                    "idle_node_status_reports_per_s": round(reports / idle, 2),
                }
            components = {name: round(_proc_figures(pid)[1], 1) for name, pid in cluster.pids().items()}
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        cluster.stop()
    await asyncio.sleep(0)
    events = _audit_events(audit_log)
    writes, latency = _audit_writes(events, side.user)
    event_writes = sum(v for k, v in writes.items() if k.split(" ", 1)[1].split("/")[0] == "events")
    # How long each Workspace waited for its StatefulSet (the controller's share of the time;
    # the rest is kcm, scheduler and kwok bringing the pod up, then the ready status write).
    sts_at = _first_writes(events, side.user, "statefulsets")
    to_sts = [sts_at[nm] - created_wall[nm] for nm in created_wall if nm in sts_at]
    kcm = _kcm_statefulset_writes(events, min(created_wall.values()), *_kcm_limits(kcm_args))
    reconciles = after["reconciles"] - before["reconciles"]
    # Counted from the audit log, the same way for both sides: the controller's /metrics cannot
    # be trusted to (upstream's rest_client_requests_total did not move while the audit log
    # showed it updating every Workspace in the window).
    converged_requests = _requests_between(events, side.user, window_from, window_to)
    stages = _stage_summary(
        _stage_times(events, side.user, created_wall, ready_wall), created_wall, min(created_wall.values())
    )
    return {
        "side": side.name,
        "workspaces": n,
        "seconds_to_all_ready": round(t_all, 2),
        "p50_s": round(statistics.median(per_ws), 2),
        "p99_s": round(_percentile(per_ws, 0.99), 2),
        "ready_s": sorted(round(x, 2) for x in per_ws),  # every Workspace's create -> ready (bench/plot.py)
        "writes_per_workspace": round(sum(writes.values()) / n, 2),
        "writes_per_workspace_no_events": round((sum(writes.values()) - event_writes) / n, 2),
        "statefulset_written_s": {
            "p50": round(statistics.median(to_sts), 2) if to_sts else None,
            "max": round(max(to_sts), 2) if to_sts else None,
        },
        "writes_by_resource": dict(sorted(writes.items())),
        "kcm_statefulset_controller": kcm,
        "stages": stages,
        "write_latency_ms": latency,
        "load_average": load_average,
        "converged_window_s": window,
        "converged_reconciles": reconciles,
        "requests_per_converged_reconcile": (
            round(sum(converged_requests.values()) / reconciles, 3) if reconciles else None
        ),
        "converged_requests": converged_requests,
        "requests_per_converged_reconcile_from_metrics": (
            round((after["requests"] - before["requests"]) / reconciles, 3) if reconciles else None
        ),
        "rss_mb": round(rss_mb, 1),
        "cpu_s": round(cpu_s, 2),
        **idle_figures,
        "cluster_cpu_s": components,
    }


#: The figures a --kaito-only scale run prints per kcm mode.
SCALE_KEYS = (
    "seconds_to_all_ready", "p50_s", "p99_s", "writes_per_workspace", "requests_per_converged_reconcile",
    "rss_mb", "idle_cpu_percent", "idle_requests", "idle_reconciles", "idle_node_status_reports_per_s",
)  # fmt: skip
#: Issue 24's goals at 1,000 Workspaces.
SCALE_TARGETS = {"rss_mb": 300, "idle_cpu_percent": 1.0, "requests_per_converged_reconcile": 0}

#: Figures summarised as medians over rounds, per side.
MEDIAN_KEYS = (
    "seconds_to_all_ready", "p50_s", "p99_s", "writes_per_workspace", "writes_per_workspace_no_events",
    "requests_per_converged_reconcile", "rss_mb", "cpu_s",
)  # fmt: skip


def _median(rounds: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if isinstance(r.get(key), int | float)]
    return round(statistics.median(values), 3) if values else None


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {key: _median(rounds, key) for key in MEDIAN_KEYS}
    out["kcm_floor_s"] = round(
        statistics.median(r["kcm_statefulset_controller"].get("floor_s", 0) for r in rounds), 2
    )
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


async def compare(
    n: int,
    window: float,
    rounds: int,
    workdir: Path,
    kcm_args: tuple[str, ...],
    extra_args: tuple[str, ...],
    upstream_src: Path,
    upstream_bin: Path,
) -> dict[str, Any]:
    """Alternating rounds (kaito, upstream; upstream, kaito; ...), each side on a fresh cluster."""
    per_side: dict[str, list[dict[str, Any]]] = {"kaito": [], "upstream": []}
    for i in range(rounds):
        order = (KAITO, UPSTREAM) if i % 2 == 0 else (UPSTREAM, KAITO)
        for side in order:
            result = await run_side(
                side, n, window, workdir / f"round{i + 1}-{side.name}",
                kcm_args=kcm_args, extra_args=extra_args if side is KAITO else (),
                upstream_src=upstream_src, upstream_bin=upstream_bin,
            )  # fmt: skip
            print(json.dumps({"round": i + 1, **{k: result[k] for k in ("side", *MEDIAN_KEYS)}}), flush=True)
            per_side[side.name].append(result)
    kaito, upstream = _summary(per_side["kaito"]), _summary(per_side["upstream"])
    ratios = [
        u["seconds_to_all_ready"] / k["seconds_to_all_ready"]
        for k, u in zip(per_side["kaito"], per_side["upstream"], strict=True)
    ]
    return {
        "kcm_args": list(kcm_args) or ["(defaults: --kube-api-qps=20 --kube-api-burst=30)"],
        "ratio_seconds_to_all_ready": _ratio(upstream["seconds_to_all_ready"], kaito["seconds_to_all_ready"]),
        "ratio_seconds_per_round": [round(r, 3) for r in ratios],
        "ratio_writes_per_workspace": _ratio(upstream["writes_per_workspace"], kaito["writes_per_workspace"]),
        "ratio_writes_per_workspace_no_events": _ratio(
            upstream["writes_per_workspace_no_events"], kaito["writes_per_workspace_no_events"]
        ),
        "kaito": kaito,
        "upstream": upstream,
        "rounds": per_side,
    }


def _home(path: Path) -> str:
    """``path`` with the home folder written ``~`` (the JSON goes into docs, read elsewhere)."""
    home = str(Path.home())
    return "~" + str(path)[len(home) :] if str(path).startswith(home + "/") else str(path)


def _chosen(
    modes: tuple[tuple[str, tuple[str, ...]], ...], which: str
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The kcm modes ``--kcm`` asks for (``both``, ``default`` or ``fast``)."""
    if which == "both":
        return modes
    return tuple(m for m in modes if (m[0] == "kcm_default") == (which == "default"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--small", action="store_true", help="10 Workspaces, kaito only, 10 s window (make test)"
    )
    parser.add_argument("--workspaces", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side and kcm mode (full mode)")
    parser.add_argument("--window", type=float, default=None, help="converged window in seconds")
    parser.add_argument(
        "--kaito-only", action="store_true",
        help="kaito alone, one round per kcm mode, with an idle window (the 1,000-Workspace scale run)",
    )  # fmt: skip
    parser.add_argument(
        "--idle", type=float, default=None,
        help="quiet window after convergence, for idle CPU and requests (default 60 with --kaito-only)",
    )  # fmt: skip
    parser.add_argument(
        "--kcm", choices=("both", "default", "fast"), default="both",
        help="kcm modes to run: its default client limits, --kube-api-qps=200 --kube-api-burst=300, or both",
    )  # fmt: skip
    parser.add_argument("--keep", type=Path, default=None, help="keep the audit and controller logs here")
    parser.add_argument("--controller-arg", action="append", default=[], help="extra `kaito controller` flag")
    parser.add_argument(
        "--upstream-tarball", type=Path, default=None,
        help=f"upstream Kaito's source tarball (env {TARBALL_ENV}; default {DEFAULT_TARBALL})",
    )  # fmt: skip
    args = parser.parse_args()
    n = args.workspaces or (10 if args.small else 100)
    window = args.window if args.window is not None else (10.0 if args.small else 30.0)
    idle = args.idle if args.idle is not None else (60.0 if args.kaito_only else 0.0)
    if not args.small and not args.kaito_only:
        try:
            tarball = upstream_tarball(args.upstream_tarball)
        except PeerMissing as exc:
            raise SystemExit(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="kaito-bench-ws-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        load_start = os.getloadavg()
        started = time.monotonic()
        if args.small:
            result = asyncio.run(
                run_side(
                    KAITO, n, window, workdir / "kaito", extra_args=tuple(args.controller_arg), idle=idle
                )
            )
            out = {
                **result,
                "peer": f"upstream Kaito v{UPSTREAM_VERSION}'s controller runs in full mode only "
                "(it needs the Go build and its source tarball); --small runs kaito only",
                "targets": TARGETS,
            }
        elif args.kaito_only:
            # Scale, not a comparison: upstream at 1,000 Workspaces would take most of an hour
            # per round here; the ratio figures come from the 100-Workspace full runs.
            runs = {}
            # A thousand kwok nodes renew a thousand Leases; on a loaded 2-core machine some renew
            # late, kcm's node controller marks them NotReady and taints them, and every Workspace
            # on one flaps with it. That measures kwok's heartbeats, not the controller, so the
            # scale run gives kcm a grace period longer than the run.
            grace = ("--node-monitor-grace-period=10m",)
            modes: tuple[tuple[str, tuple[str, ...]], ...] = (
                ("kcm_default", grace),
                ("kcm_qps200_burst300", (*KCM_FAST, *grace)),
            )
            for mode, scale_kcm_args in _chosen(modes, args.kcm):
                runs[mode] = asyncio.run(
                    run_side(
                        KAITO, n, window, workdir / mode, kcm_args=scale_kcm_args,
                        extra_args=tuple(args.controller_arg), idle=idle,
                    )
                )  # fmt: skip
                print(json.dumps({"mode": mode, **{k: runs[mode].get(k) for k in SCALE_KEYS}}), flush=True)
            out = {
                "workspaces": n,
                "peer": "none: --kaito-only (a scale run; the ratios against upstream come from full mode)",
                **{mode: {k: r.get(k) for k in SCALE_KEYS} for mode, r in runs.items()},
                "runs": runs,
                "targets": SCALE_TARGETS,
            }
        else:
            try:
                source = upstream_source(tarball, Path(tmp) / "upstream")
                binary = upstream_binary(source, lambda msg: print(msg, file=sys.stderr, flush=True))
            except PeerMissing as exc:
                raise SystemExit(str(exc)) from None
            comparisons = {}
            full_modes: tuple[tuple[str, tuple[str, ...]], ...] = (
                ("kcm_default", ()),
                ("kcm_qps200_burst300", KCM_FAST),
            )
            for mode, kcm_args in _chosen(full_modes, args.kcm):
                comparisons[mode] = asyncio.run(
                    compare(
                        n,
                        window,
                        args.rounds,
                        workdir / mode,
                        kcm_args,
                        tuple(args.controller_arg),
                        source,
                        binary,
                    )
                )
            default = comparisons.get("kcm_default") or comparisons["kcm_qps200_burst300"]
            out = {
                "workspaces": n,
                "rounds": args.rounds,
                "converged_window_s": window,
                "peer": f"upstream Kaito v{UPSTREAM_VERSION} cmd/workspace ({_home(binary)}), same run",
                "kcm_service_account_credentials": True,
                "seconds_to_all_ready": default["kaito"]["seconds_to_all_ready"],
                "ratio_seconds_to_all_ready": default["ratio_seconds_to_all_ready"],
                "ratio_writes_per_workspace": default["ratio_writes_per_workspace"],
                "comparisons": comparisons,
                "targets": TARGETS,
            }
        out["load_average_start"] = [round(x, 2) for x in load_start]
        out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        out["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
