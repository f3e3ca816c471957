"""Suite 6 of issue #14, soak: steady churn of Workspaces (a population kept around
``KAITO_SOAK_POPULATION``, one create, delete or resize every couple of seconds, each creating
or removing kwok nodes through kaito's node-provisioner) for ``KAITO_SOAK_SECONDS`` (120 in
``make test``; the long mode is the same test with e.g. 3600). Sampled every few seconds from
outside the process: the controller's RSS and open file descriptors (/proc) and its workqueue
depth (its own /metrics). Passes when memory and descriptors stay flat and, once churn stops
and everything is deleted, both processes' workqueues drain to 0 with nothing leaked.
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import threading
import time
from pathlib import Path

import pytest
from reliability_stack import (
    AuditTail,
    ClaimLedger,
    KaitoProcess,
    controller,
    create_workspace,
    delete_workspace,
    emit,
    load,
    node_provisioner,
    set_count,
    wait_converged,
    wait_for,
)

from kaito.envtest import Cluster

DURATION = float(os.environ.get("KAITO_SOAK_SECONDS", "120"))
POPULATION = int(os.environ.get("KAITO_SOAK_POPULATION", "8"))
LONG = DURATION >= 900
#: Samples taken before this are warm-up (imports, first lists, connection pools).
WARMUP = max(20.0, DURATION * 0.25)
SAMPLE_S = max(2.0, DURATION / 600)
#: Flatness limits. Short mode cannot resolve a slope under noise, so it bounds the growth
#: between the early and late post-warm-up windows; the long mode bounds the slope itself.
MAX_GROWTH_MB = float(os.environ.get("KAITO_SOAK_MAX_GROWTH_MB", "15"))
MAX_SLOPE_MB_H = float(os.environ.get("KAITO_SOAK_MAX_MB_PER_HOUR", "20"))
MAX_FD_GROWTH = 8

pytestmark = [pytest.mark.cluster, pytest.mark.full_cluster, pytest.mark.timeout(int(DURATION) + 900)]


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per hour."""
    if len(points) < 3:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den * 3600.0


def test_soak_churn_keeps_memory_fds_and_queue_flat(
    reliability_cluster: Cluster, seed: int, tmp_path: Path
) -> None:
    cluster = reliability_cluster
    rng = random.Random(seed)
    ns = f"soak-{seed % 100000}"
    cluster.kubectl("create", "namespace", ns)
    ctrl = controller(cluster, tmp_path, "soak-controller")
    np = node_provisioner(cluster, tmp_path, "soak-node-provisioner")
    procs: list[KaitoProcess] = [ctrl, np]
    audit = AuditTail(cluster.audit_log)
    audit.poll()
    ledger = ClaimLedger(audit, ns)
    samples: list[tuple[float, float, int, float, float]] = []  # t, rss, fds, depth, np rss
    stop = threading.Event()
    failure: list[BaseException] = []

    def sampler(t0: float) -> None:
        try:
            while not stop.is_set():
                depth = ctrl.metric("workqueue_depth")
                if depth is not None:
                    samples.append(
                        (time.monotonic() - t0, ctrl.rss_mb(), ctrl.open_fds(), depth, np.rss_mb())
                    )
                stop.wait(SAMPLE_S)
        except BaseException as exc:
            failure.append(exc)

    live: dict[str, int] = {}
    order: list[str] = []
    deleted: set[str] = set()
    created = resizes = 0
    try:
        for p in procs:
            p.start()
        for p in procs:
            wait_for(p.ready, f"{p.name} Ready", 180)
        t0 = time.monotonic()
        threading.Thread(target=sampler, args=(t0,), daemon=True).start()
        while time.monotonic() - t0 < DURATION:
            if failure:
                raise failure[0]
            for p in procs:
                if not p.alive():
                    raise AssertionError(f"{p.name} died:\n{p.log_tail()}")
            r = rng.random()
            if len(live) < POPULATION or (r < 0.45 and len(live) < POPULATION + 2):
                name = f"soak-{created:05d}"
                count = 2 if rng.random() < 0.2 else 1
                ledger.grant(name, count)
                create_workspace(cluster, name, ns, count)
                live[name] = count
                order.append(name)
                created += 1
            elif r < 0.8:
                name = order.pop(0)  # the oldest goes: every Workspace lives a bounded time
                delete_workspace(cluster, name, ns)
                del live[name]
                deleted.add(name)
            else:
                name = rng.choice(order)
                ledger.grant(name, 1 if live[name] == 1 else 0)
                live[name] = 3 - live[name]
                set_count(cluster, name, ns, live[name])
                resizes += 1
            ledger.check()
            time.sleep(rng.uniform(1.0, 3.0))
        churn_s = time.monotonic() - t0
        ready_s = wait_converged(cluster, ns, live, deleted, 300, procs=procs, ledger=ledger)
        for name in list(live):
            delete_workspace(cluster, name, ns)
            deleted.add(name)
        drained_s = wait_converged(cluster, ns, {}, deleted, 300, procs=procs, ledger=ledger)

        def drained() -> tuple[float, float] | None:
            c, n = ctrl.metric("workqueue_depth"), np.metric("workqueue_depth")
            return (c, n) if c == 0 and n == 0 else None

        queues = wait_for(drained, "both workqueues empty", 120)
        stop.set()
        if failure:
            raise failure[0]
        final_fds, final_rss = ctrl.open_fds(), ctrl.rss_mb()

        warm = [s for s in samples if s[0] >= WARMUP and s[0] <= churn_s]
        assert len(warm) >= 6, f"only {len(warm)} samples after warm-up"
        third = max(2, len(warm) // 3)
        early, late = warm[:third], warm[-third:]
        growth = statistics.median(s[1] for s in late) - statistics.median(s[1] for s in early)
        rss_slope = slope_per_hour([(s[0], s[1]) for s in warm])
        np_slope = slope_per_hour([(s[0], s[4]) for s in warm])
        fd_growth = max(s[2] for s in late) - max(s[2] for s in early)
        figures = {
            "suite": "soak",
            "mode": "long" if LONG else "short",
            "seed": seed,
            "churn_s": round(churn_s, 1),
            "population": POPULATION,
            "workspaces_created": created,
            "workspaces_deleted": len(deleted),
            "resizes": resizes,
            "claims_created": ledger.total,
            "samples": len(samples),
            "rss_mb_start_end": [round(warm[0][1], 1), round(warm[-1][1], 1)],
            "rss_growth_mb": round(growth, 1),
            "rss_slope_mb_per_hour": round(rss_slope, 1),
            "node_provisioner_rss_slope_mb_per_hour": round(np_slope, 1),
            "fds_min_max": [min(s[2] for s in warm), max(s[2] for s in warm)],
            "fd_growth": fd_growth,
            "fds_after_drain": final_fds,
            "rss_after_drain_mb": round(final_rss, 1),
            "max_workqueue_depth": max(s[3] for s in samples),
            "workqueue_depth_end": list(queues),
            "converge_s": round(ready_s, 1),
            "drain_s": round(drained_s, 1),
            "leaked_nodeclaims": 0,
            "leaked_nodes": 0,
            "load": load(),
        }
        emit(figures)
        assert fd_growth <= MAX_FD_GROWTH, f"open fds grew by {fd_growth}: {figures}"
        if LONG:
            assert rss_slope <= MAX_SLOPE_MB_H, (
                f"RSS slope {rss_slope:.1f} MB/h > {MAX_SLOPE_MB_H}: {figures}"
            )
        else:
            assert growth <= MAX_GROWTH_MB, f"RSS grew {growth:.1f} MB during churn: {figures}"
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            for name in list(live):
                delete_workspace(cluster, name, ns)
        for p in procs:
            with contextlib.suppress(Exception):
                p.stop()
