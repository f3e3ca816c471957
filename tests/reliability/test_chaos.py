"""Suite 1 of issue #14, chaos rollout: Workspaces are created, resized and deleted in a seeded
random sequence while faults land at random points:

  sigkill        ``kaito controller`` or ``kaito node-provisioner`` (real processes, kwok cloud)
                 is SIGKILLed and restarted;
  lost response  the controller talks to the apiserver through the loopback fault proxy
                 (tests/integration/runtime/faultproxy.py); armed, it lets the next NodeClaim
                 create reach the apiserver (201) and drops the connection before the answer
                 reaches the controller: the claim exists, the controller saw an error;
  watch lag      the proxy holds the bytes of the controller's NodeClaim watch for a few
                 seconds, then releases them: its NodeClaim cache trails the server while
                 Workspaces are created and deleted (issue 20).

Whatever happened when, at the end every live Workspace is Ready with exactly its nodes, every
deleted one is fully gone, and nothing leaked, was provisioned twice or is stuck on a finalizer.

Size: ``KAITO_CHAOS_WORKSPACES`` (default 50), ``KAITO_CHAOS_KILLS`` (default 24),
``KAITO_CHAOS_LOST_RESPONSES`` (default 8) and ``KAITO_CHAOS_WATCH_LAGS`` (default 8);
``KAITO_RELIABILITY_SEED`` replays a sequence.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from reliability_stack import (
    AksInThread,
    ApiProxyInThread,
    AuditTail,
    ClaimFaults,
    ClaimLedger,
    KaitoProcess,
    controller,
    create_workspace,
    delete_workspace,
    emit,
    end_state_problems,
    load,
    node_provisioner,
    pod_problems,
    set_count,
    wait_converged,
    wait_for,
)

from kaito.envtest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.full_cluster, pytest.mark.timeout(1500)]

WORKSPACES = int(os.environ.get("KAITO_CHAOS_WORKSPACES", "50"))
KILLS = int(os.environ.get("KAITO_CHAOS_KILLS", "24"))
LOST_RESPONSES = int(os.environ.get("KAITO_CHAOS_LOST_RESPONSES", "8"))
WATCH_LAGS = int(os.environ.get("KAITO_CHAOS_WATCH_LAGS", "8"))
#: How long one watch lag holds the controller's NodeClaim events back (seconds, uniform).
LAG_S = (2.0, 8.0)
#: After the last fault, how long the operator may take to converge (2-core machine under load).
CONVERGE_S = float(os.environ.get("KAITO_CHAOS_CONVERGE_S", "420"))
#: Where nodes come from: kwok (make test) and/or aks (the AKS emulator: agent pools over ARM).
CLOUDS = os.environ.get("KAITO_CHAOS_CLOUDS", "kwok").split(",")


@dataclass(frozen=True)
class Op:
    verb: str  # create | resize | delete
    name: str
    count: int = 0


def plan_ops(rng: random.Random, n: int) -> list[Op]:
    """n creates interleaved with resizes (count 1 <-> 2) and deletes of a third of them."""
    ops: list[Op] = []
    live: dict[str, int] = {}
    created = deleted = 0
    max_deletes = n // 3
    while created < n:
        r = rng.random()
        if r < 0.55 or not live:
            name = f"ws-{created:03d}"
            count = 2 if rng.random() < 0.2 else 1
            ops.append(Op("create", name, count))
            live[name] = count
            created += 1
        elif r < 0.8:
            name = rng.choice(sorted(live))
            live[name] = 3 - live[name]
            ops.append(Op("resize", name, live[name]))
        elif deleted < max_deletes:
            name = rng.choice(sorted(live))
            del live[name]
            ops.append(Op("delete", name))
            deleted += 1
    return ops


def plan_kills(rng: random.Random, k: int) -> dict[str, list[float]]:
    """Per process, the delays (after it is Ready) of its kills: k in all, split evenly."""
    return {
        "controller": [rng.uniform(0.0, 3.0) for _ in range(k - k // 2)],
        "node-provisioner": [rng.uniform(0.0, 3.0) for _ in range(k // 2)],
    }


def plan_api_faults(
    rng: random.Random, ops: list[Op], lost: int, lags: int
) -> dict[int, list[tuple[str, float]]]:
    """Op index -> the proxy faults armed just before that op: ("lost", 0) or ("lag", seconds).
    Both go before creates (a claim POST follows, and its watch event is the one held back), in
    the first 80% of the sequence, so an armed lost response always meets a create to drop."""
    creates = [i for i, op in enumerate(ops) if op.verb == "create" and i < 0.8 * len(ops)]
    plan: dict[int, list[tuple[str, float]]] = {}
    for _ in range(lost):
        plan.setdefault(rng.choice(creates), []).append(("lost", 0.0))
    for _ in range(lags):
        plan.setdefault(rng.choice(creates), []).append(("lag", round(rng.uniform(*LAG_S), 1)))
    return plan


@pytest.mark.parametrize("cloud", CLOUDS)
def test_chaos_rollout_survives_sigkills(
    reliability_cluster: Cluster, seed: int, tmp_path: Path, cloud: str
) -> None:
    if cloud not in ("kwok", "aks"):
        raise ValueError(f"KAITO_CHAOS_CLOUDS: {cloud!r} is not kwok or aks")
    with contextlib.ExitStack() as stack:
        aks = stack.enter_context(AksInThread(reliability_cluster)) if cloud == "aks" else None
        run_chaos(reliability_cluster, seed, tmp_path, cloud, aks, stack)


def run_chaos(
    cluster: Cluster,
    seed: int,
    tmp_path: Path,
    cloud: str,
    aks: AksInThread | None,
    stack: contextlib.ExitStack,
) -> None:
    rng = random.Random(seed)
    ns = f"chaos-{cloud}-{seed % 100000}"
    cluster.kubectl("create", "namespace", ns)
    ops = plan_ops(rng, WORKSPACES)
    kills = plan_kills(rng, KILLS)
    pace = [rng.uniform(0.05, 0.5) for _ in ops]
    api_faults = plan_api_faults(rng, ops, LOST_RESPONSES, WATCH_LAGS)

    audit = AuditTail(cluster.audit_log)
    audit.poll()  # earlier suites' writes are not ours
    ledger = ClaimLedger(audit, ns)
    procs = {
        "controller": controller(cluster, tmp_path, f"chaos-{cloud}-controller"),
        "node-provisioner": node_provisioner(cluster, tmp_path, f"chaos-{cloud}-node-provisioner", aks),
    }
    # The controller reaches the apiserver only through the proxy (as its own user still).
    faults = ClaimFaults()
    proxy = stack.enter_context(ApiProxyInThread(procs["controller"].kubeconfig, faults))
    procs["controller"].kubeconfig = proxy.kubeconfig()
    failure: list[BaseException] = []
    kill_log: list[tuple[str, float]] = []
    stop = threading.Event()

    def chaos(target: str) -> None:
        """Each kill lands a random 0-3 s after the target last became Ready (so it is mid-work,
        not mid-start); the process is restarted at once. One thread per process."""
        p: KaitoProcess = procs[target]
        try:
            for n, delay in enumerate(kills[target], 1):
                wait_for(p.ready, f"{p.name} Ready before its kill {n}", 180, 0.2)
                if stop.wait(delay):
                    return
                p.kill()
                kill_log.append((target, time.monotonic()))
                p.start()
        except BaseException as exc:
            failure.append(exc)

    t0 = time.monotonic()
    live: dict[str, int] = {}
    deleted: set[str] = set()
    threads = [threading.Thread(target=chaos, args=(t,), name=f"chaos-{t}", daemon=True) for t in procs]
    try:
        for p in procs.values():
            p.start()
        for t in threads:
            t.start()
        for i, op in enumerate(ops):
            if failure:
                raise failure[0]
            for kind, seconds in api_faults.get(i, ()):
                if kind == "lost":
                    faults.arm_lost_create()
                else:
                    faults.lag_watch(seconds)
            if op.verb == "create":
                ledger.grant(op.name, op.count)
                create_workspace(cluster, op.name, ns, op.count)
                live[op.name] = op.count
            elif op.verb == "resize":
                ledger.grant(op.name, op.count - live[op.name])
                set_count(cluster, op.name, ns, op.count)
                live[op.name] = op.count
            else:
                delete_workspace(cluster, op.name, ns)
                del live[op.name]
                deleted.add(op.name)
            if i % 10 == 0:
                ledger.check()  # the first duplicate fails the suite there and then
            time.sleep(pace[i])
        ops_s = time.monotonic() - t0
        # Every planned kill happens (the last ones while the rollout converges).
        wait_for(lambda: failure or not any(t.is_alive() for t in threads), "all kills done", 600, 0.5)
        if failure:
            raise failure[0]
        # ... and every armed lost response met its create.
        wait_for(lambda: faults.armed() == 0, "every armed lost response fired", 300, 0.5)
        faults_s = time.monotonic() - t0
        converge_s = wait_converged(
            cluster, ns, live, deleted, CONVERGE_S, procs=procs.values(), ledger=ledger, aks=aks
        )
        ledger.check()
        # Then everything goes, through the same (restarted many times) processes.
        t_del = time.monotonic()
        survivors = dict(live)
        for name in survivors:
            delete_workspace(cluster, name, ns)
            deleted.add(name)
        live.clear()
        wait_converged(cluster, ns, {}, deleted, CONVERGE_S, procs=procs.values(), ledger=ledger, aks=aks)
        delete_all_s = time.monotonic() - t_del
        figures = {
            "suite": "chaos",
            "cloud": cloud,
            "seed": seed,
            "workspaces": WORKSPACES,
            "ops": len(ops),
            "creates": sum(o.verb == "create" for o in ops),
            "resizes": sum(o.verb == "resize" for o in ops),
            "deletes": len(deleted) - len(survivors),
            "live_at_end": len(survivors),
            "nodes_at_end": sum(survivors.values()),
            "sigkills": {t: sum(k == t for k, _ in kill_log) for t in procs},
            "faults_fired": {
                "sigkill_controller": sum(k == "controller" for k, _ in kill_log),
                "sigkill_node_provisioner": sum(k == "node-provisioner" for k, _ in kill_log),
                "lost_response": len(faults.lost),
                "watch_lag": faults.lags,
            },
            "lost_response_claims": faults.lost,
            "watch_chunks_held": faults.held_chunks,
            "claims_created": ledger.total,
            "duplicate_claims": 0,
            "leaked_nodeclaims": 0,
            "leaked_nodes": 0,
            "agent_pool_puts": aks.pool_puts() if aks is not None else None,
            "leaked_agent_pools": 0 if aks is not None else None,
            "stuck_finalizers": 0,
            "ops_s": round(ops_s, 1),
            "faults_s": round(faults_s, 1),
            "converge_after_last_fault_s": round(converge_s, 1),
            "delete_all_s": round(delete_all_s, 1),
            "wall_s": round(time.monotonic() - t0, 1),
            "tracebacks_in_logs": sum(p.tracebacks() for p in procs.values()),
            "load": load(),
        }
        emit(figures)
        assert len(kill_log) == KILLS
        assert (len(faults.lost), faults.lags) == (LOST_RESPONSES, WATCH_LAGS)
    finally:
        stop.set()
        # The proxy faults' timeline, to set beside the ledger and the logs when this fails.
        print("\nproxy faults:\n  " + "\n  ".join(faults.log))
        for t in threads:
            t.join(60)
        # After a failure, start the deletions (nothing waits: the failure is reported at once).
        try:
            with contextlib.suppress(AssertionError):
                for name in list(live):
                    delete_workspace(cluster, name, ns)
        finally:
            for p in procs.values():
                p.stop()


def test_the_end_checks_catch_a_planted_duplicate_and_leaks(reliability_cluster: Cluster, seed: int) -> None:
    """The checks above can fail: a second claim for a one-node Workspace, a claim and a kwok-cloud
    Node nobody owns, planted by hand (no operator running), are each reported."""
    from kaito.nodes import NodeRequest
    from kaito.provisioners.gpu_provisioner import nodeclaim_manifest

    cluster = reliability_cluster
    ns = f"planted-{seed % 100000}"
    cluster.kubectl("create", "namespace", ns)
    audit = AuditTail(cluster.audit_log)
    audit.poll()
    ledger = ClaimLedger(audit, ns)
    ledger.grant("ghost", 1)
    claims = [
        nodeclaim_manifest(
            NodeRequest(workspace="ghost", namespace=ns, uid="u", instance_type="Standard_NC6s_v3", count=1)
        )
        for _ in range(2)
    ]
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"planted-{seed % 100000}",
            "labels": {"kaito.sh/kwok-cloud": "true", "kaito.sh/workspacenamespace": ns},
        },
    }
    try:
        for obj in [*claims, node]:
            cluster.kubectl("create", "-f", "-", input=json.dumps(obj))
        with pytest.raises(AssertionError, match="duplicate NodeClaims"):
            wait_for(lambda: ledger.check() or ledger.total >= 2, "both creates in the audit log", 60)
        problems = end_state_problems(cluster, ns, {}, ())
        assert any("leaked NodeClaims of ghost" in p for p in problems), problems
        assert any(f"leaked Node {node['metadata']['name']}" in p for p in problems), problems
        assert pod_problems(cluster, ns) == []  # the non-convergence report's pod part runs too
    finally:
        for obj in claims:
            cluster.kubectl("delete", "nodeclaim", obj["metadata"]["name"], "--ignore-not-found", check=False)
        cluster.kubectl("delete", "node", node["metadata"]["name"], "--ignore-not-found", check=False)
