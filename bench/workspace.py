"""The workspace controller at scale: N inference Workspaces applied at once on the local cluster.

    python bench/workspace.py            # 100 Workspaces, 30 s converged window
    python bench/workspace.py --small    # 10 Workspaces, 10 s window (run by `make test`)

A real control plane (apiserver + kcm + scheduler + kwok) with an audit log; one BYO kwok GPU
node per Workspace is created and Ready before the clock starts (provisioning is excluded).
``kaito controller --node-provisioner byo`` runs as its own process. Then N Workspaces are
created concurrently and the clock runs until every one has WorkspaceReady=True.

Reported (JSON on the last line):
  seconds_to_all_ready    first create -> last Workspace Ready
  p50_s / p99_s           per Workspace, from its own create to its Ready
  writes_per_workspace    the controller's write requests (audit log, by user agent) per
                          Workspace, from start until the end of the converged window; events
                          included; ``writes_by_resource`` breaks them down
  requests_per_converged_reconcile
                          all API requests (reads too) the controller made per reconcile while
                          every Workspace was converged; reconciles are provoked by relabelling
                          every node (a label no selector uses), counted from its /metrics
  rss_mb / cpu_s          the controller process at the end (VmRSS; user+system CPU seconds)
  kcm_statefulset_controller
                          kcm's StatefulSet controller's writes (audit log): it creates every
                          pod through one client limited to 20 requests/s, burst 30, shared with
                          its status updates; ``floor_s`` is the earliest its last pod create
                          could have been given the writes before it

No upstream Go controller can run here; ``upstream_reference`` repeats the figures measured
the same way on this kind of cluster (../shared/UPSTREAM.md), labelled as a reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from kaito.envtest import Cluster, ClusterOptions  # noqa: E402
from kaito.provisioners.byo import gpu_node_manifest  # noqa: E402
from kaito.runtime import GVK, Client  # noqa: E402

WORKSPACE = GVK("kaito.sh", "v1beta1", "Workspace")
NODE = GVK("", "v1", "Node")
UA = "kaito-controller"
NS = "bench"
UPSTREAM = {
    "label": "upstream Kaito v0.12 Go controller, 100 Workspaces, measured the same way on this kind of "
    "cluster (../shared/UPSTREAM.md); not re-run here",
    "seconds_to_all_ready": 35.9,
    "p50_s": 32.0,
    "writes_per_workspace": 11.5,
    "writes_per_converged_reconcile": 1,
    "rss_mb": 75,
    "cpu_s": 3.2,
}
TARGETS = {
    "seconds_to_all_ready": 10.0,
    "writes_per_workspace": 8,
    "requests_per_converged_reconcile": 0,
    "rss_mb": 120,
}
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["get", "list", "watch"]
  - level: Metadata
"""


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


def _first_writes(path: Path, resource: str) -> dict[str, float]:
    """Wall-clock time of the controller's first write of each object of ``resource``."""
    out: dict[str, float] = {}
    for file in sorted(path.parent.glob(path.name + "*")):
        for line in file.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ref = ev.get("objectRef") or {}
            if (
                str(ev.get("userAgent", "")).startswith(UA)
                and ref.get("resource") == resource
                and not ref.get("subresource")
                and ev.get("verb") in ("create", "patch")
            ):
                name, at = ref.get("name", ""), _ts(ev["requestReceivedTimestamp"])
                out[name] = min(out.get(name, at), at)
    return out


def _audit_writes(path: Path) -> tuple[Counter[str], dict[str, dict[str, float]]]:
    """The controller's writes by verb and resource, and how long the apiserver took for each
    kind of write (received -> response complete; p50/p90/max ms): where the time goes."""
    by_resource: Counter[str] = Counter()
    took: dict[str, list[float]] = {}
    for file in sorted(path.parent.glob(path.name + "*")):
        for line in file.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if not str(ev.get("userAgent", "")).startswith(UA):
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


#: kube-controller-manager's client defaults (``--kube-api-qps`` / ``--kube-api-burst``); each of its
#: controllers has a client, and so a token bucket, of its own.
KCM_QPS, KCM_BURST = 20.0, 30


def _kcm_statefulset_writes(path: Path, t0: float) -> dict[str, Any]:
    """What kcm's StatefulSet controller wrote after the first create: every pod of the run is
    created by it, through one client limited to 20 requests/s (burst 30), which also carries its
    StatefulSet status updates. ``floor_s`` is when that bucket allows its last pod create at the
    earliest, given the writes it made before it: the time no Workspace controller can beat."""
    at: list[tuple[float, str]] = []
    for file in sorted(path.parent.glob(path.name + "*")):
        for line in file.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
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
        "floor_s": round(max(0.0, upto_last - KCM_BURST) / KCM_QPS, 2),
    }


async def _wait(check: Any, what: str, timeout: float, interval: float = 0.1) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def _ready(ws: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "WorkspaceReady" and c.get("status") == "True"
        for c in (ws.get("status") or {}).get("conditions") or ()
    )


async def run(n: int, window: float, workdir: Path, extra_args: tuple[str, ...] = ()) -> dict[str, Any]:
    audit_log = workdir / "audit.log"
    policy = workdir / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
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
        )
    )
    cluster.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        for crd in sorted((REPO / "config" / "crd").glob("*.yaml")):
            if crd.name != "kustomization.yaml":
                cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        cluster.kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=60s")
        cluster.kubectl("create", "namespace", NS)
        async with Client(cluster.client_configuration(), user_agent="kaito-bench") as client:
            names = [f"bench-{i:03d}" for i in range(n)]
            await asyncio.gather(
                *(
                    client.create(gpu_node_manifest(f"node-{nm}", "Standard_NC6s_v3", {"apps": nm}))
                    for nm in names
                )
            )

            async def nodes_ready() -> bool:
                nodes = await client.list(NODE, label_selector="type=kwok", cached=False)
                ready = [
                    n
                    for n in nodes
                    if any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in n["status"].get("conditions") or []
                    )
                ]
                return len(ready) >= n

            await _wait(nodes_ready, "the GPU nodes Ready", 120)
            port = _free_port()
            log = (workdir / "controller.log").open("wb")
            proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock
                [
                    sys.executable, "-m", "kaito.cli.main", "controller",
                    "--kubeconfig", str(cluster.kubeconfig),
                    "--metrics-bind-address", f"127.0.0.1:{port}",
                    "--health-probe-bind-address", "0",
                    "--log-format", "json",
                    *extra_args,
                ],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
            )  # fmt: skip

            async def started() -> bool:
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"controller exited; see {workdir / 'controller.log'}")
                try:
                    return _metrics(port)["started"] > 0
                except OSError:
                    return False

            await _wait(started, "the controller", 60)
            created: dict[str, float] = {}
            created_wall: dict[str, float] = {}
            ready_at: dict[str, float] = {}

            async def create(nm: str) -> None:
                body = {
                    "apiVersion": "kaito.sh/v1alpha1",
                    "kind": "Workspace",
                    "metadata": {"name": nm, "namespace": NS},
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
                now = time.monotonic()
                for ws in await client.list(WORKSPACE, NS, cached=False):
                    nm = ws["metadata"]["name"]
                    if nm not in ready_at and _ready(ws):
                        ready_at[nm] = now
                return len(ready_at) == n

            # Polled every 0.5 s (a LIST of N Workspaces is not free for a 2-core apiserver).
            await _wait(all_ready, "every Workspace Ready", 300, interval=0.5)
            t_all = max(ready_at.values()) - t0
            per_ws = [ready_at[nm] - created[nm] for nm in names]

            # Converged window: provoke one reconcile per Workspace (relabel its node), then idle.
            await asyncio.sleep(2.0)
            before = _metrics(port)
            await asyncio.gather(
                *(
                    client.patch(NODE, f"node-{nm}", {"metadata": {"labels": {"bench/poke": "1"}}})
                    for nm in names
                )
            )
            await asyncio.sleep(window)
            after = _metrics(port)
            rss_mb, cpu_s = _proc_figures(proc.pid)
            components = {name: round(_proc_figures(pid)[1], 1) for name, pid in cluster.pids().items()}
            components["bench (this process)"] = round(time.process_time(), 1)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.stop()
    await asyncio.sleep(0)
    writes, latency = _audit_writes(audit_log)
    # How long each Workspace waited for its StatefulSet (the controller's share of the time;
    # the rest is kcm, scheduler and kwok bringing the pod up, then the Ready status write).
    sts_at = _first_writes(audit_log, "statefulsets")
    to_sts = [sts_at[nm] - created_wall[nm] for nm in created_wall if nm in sts_at]
    kcm = _kcm_statefulset_writes(audit_log, min(created_wall.values()))
    reconciles = after["reconciles"] - before["reconciles"]
    return {
        "workspaces": n,
        "seconds_to_all_ready": round(t_all, 2),
        "p50_s": round(statistics.median(per_ws), 2),
        "p99_s": round(_percentile(per_ws, 0.99), 2),
        "writes_per_workspace": round(sum(writes.values()) / n, 2),
        "statefulset_written_s": {
            "p50": round(statistics.median(to_sts), 2) if to_sts else None,
            "max": round(max(to_sts), 2) if to_sts else None,
        },
        "writes_by_resource": dict(sorted(writes.items())),
        "kcm_statefulset_controller": kcm,
        "write_latency_ms": latency,
        "load_average": load_average,
        "converged_window_s": window,
        "converged_reconciles": reconciles,
        "requests_per_converged_reconcile": (
            round((after["requests"] - before["requests"]) / reconciles, 3) if reconciles else None
        ),
        "rss_mb": round(rss_mb, 1),
        "cpu_s": round(cpu_s, 2),
        "cluster_cpu_s": components,
        "targets": TARGETS,
        "upstream_reference": UPSTREAM,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--small", action="store_true", help="10 Workspaces, 10 s window (make test)")
    parser.add_argument("--workspaces", type=int, default=None)
    parser.add_argument("--window", type=float, default=None, help="converged window in seconds")
    parser.add_argument("--keep", type=Path, default=None, help="keep the audit and controller logs here")
    parser.add_argument("--controller-arg", action="append", default=[], help="extra `kaito controller` flag")
    args = parser.parse_args()
    n = args.workspaces or (10 if args.small else 100)
    window = args.window if args.window is not None else (10.0 if args.small else 30.0)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run(n, window, args.keep, tuple(args.controller_arg)))
    else:
        with tempfile.TemporaryDirectory(prefix="kaito-bench-ws-") as tmp:
            result = asyncio.run(run(n, window, Path(tmp), tuple(args.controller_arg)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
