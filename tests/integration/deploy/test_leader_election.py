"""Two ``kaito controller --leader-elect`` processes as the installed ServiceAccount: one
reconciles, the other waits; SIGKILL the leader (no Lease release) and the other takes over
within a lease duration plus a retry period, then acts (it finalizes a Workspace deletion)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import yaml
from deploy_helpers import (
    NAMESPACE,
    REPO,
    SA,
    ControllerProcess,
    install,
    kubectl_binary,
    kustomize,
    service_account_kubeconfig,
    wait,
)

from kaito.envtest import Cluster
from kaito.provisioners.byo import gpu_node_manifest

LEASE, RENEW, RETRY = 8.0, 5.0, 1.0
#: Room for a loaded 2-core machine on top of lease + retry (process scheduling, cache sync).
SLACK = 15.0


def reconciles(p: ControllerProcess) -> float:
    return p.metric("controller_runtime_reconcile_total", controller="workspace")


def leading(p: ControllerProcess) -> bool:
    return p.metric("leader_election_master_status") == 1


def test_one_leader_reconciles_and_a_killed_leader_is_replaced(
    audited_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = audited_cluster
    install(cluster, kustomize(REPO / "config" / "default", kubectl_binary(cluster)), webhook_port=None)
    kubeconfig = service_account_kubeconfig(cluster, tmp_path / "sa.kubeconfig", NAMESPACE, SA)
    args = [
        "--leader-elect",
        f"--leader-election-namespace={NAMESPACE}",
        f"--lease-duration={LEASE}",
        f"--renew-deadline={RENEW}",
        f"--retry-period={RETRY}",
    ]
    procs = [ControllerProcess(kubeconfig, tmp_path, name, list(args)) for name in ("a", "b")]
    ns = "election"
    try:
        for p in procs:
            p.start()
        for p in procs:
            wait(
                lambda p=p: p.alive() and p.metric("leader_election_master_status") >= 0, f"{p.name} serving"
            )
        leader = wait(lambda: next((p for p in procs if leading(p)), None), "a leader")
        follower = next(p for p in procs if p is not leader)
        cluster.kubectl("create", "namespace", ns)
        cluster.kubectl(
            "create",
            "-f",
            "-",
            input=yaml.safe_dump(gpu_node_manifest("gpu-el", "Standard_NC6s_v3", {"apps": "el"})),
        )
        ws = {
            "apiVersion": "kaito.sh/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "ws-el", "namespace": ns},
            "resource": {
                "instanceType": "Standard_NC6s_v3",
                "labelSelector": {"matchLabels": {"apps": "el"}},
            },
            "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
        }
        cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(ws))

        def ready() -> bool:
            out = cluster.kubectl("get", "workspace", "ws-el", "-n", ns, "-o", "json").stdout
            conds = (yaml.safe_load(out).get("status") or {}).get("conditions") or []
            return any(c["type"] == "WorkspaceReady" and c["status"] == "True" for c in conds)

        wait(ready, "ws-el ready", timeout=240)
        assert reconciles(leader) > 0
        assert reconciles(follower) == 0 and not leading(follower)

        killed_at = time.monotonic()
        leader.stop(signal.SIGKILL)
        wait(lambda: leading(follower), "the follower to take the lease", timeout=LEASE + RETRY + SLACK)
        takeover = time.monotonic() - killed_at
        print(f"LEADER takeover_s={takeover:.1f} lease={LEASE} retry={RETRY}")
        assert takeover <= LEASE + RETRY + SLACK

        # The new leader acts: it runs the deletion to the end (finalizer removed).
        cluster.kubectl("delete", "workspace", "ws-el", "-n", ns, "--wait=false")
        wait(
            lambda: cluster.kubectl("get", "workspace", "ws-el", "-n", ns, check=False).returncode != 0,
            "ws-el deleted by the new leader",
            timeout=240,
        )
        assert reconciles(follower) > 0
    finally:
        for p in procs:
            p.stop(signal.SIGTERM, timeout=60)
        cluster.kubectl("delete", "node", "gpu-el", "--ignore-not-found", check=False)
