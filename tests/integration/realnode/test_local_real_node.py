"""``kaito local up --node real``: the supervisor runs the control plane and a real node; ``down``
leaves nothing, and an ``up`` after a killed supervisor clears what the dead one left."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from kaito.envtest import local as local_cluster
from kaito.envtest.realnode import HELLO_IMAGE, missing_requirements
from kaito.envtest.waiting import eventually_blocking

pytestmark = [pytest.mark.cluster]


def kubectl(state: local_cluster.LocalState, *args: str) -> str:
    return subprocess.run(
        [state.kubectl, "--kubeconfig", state.kubeconfig, *args], capture_output=True, text=True, check=True
    ).stdout


def wait_for(probe: Callable[[], object], what: str, timeout: float = 90.0) -> None:
    eventually_blocking(probe, what, timeout=timeout)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def shims(marker: str) -> list[int]:
    """containerd shims working in a bundle under ``marker``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if b"containerd-shim" in cmd and marker in cwd:
                out.append(int(entry.name))
    return out


def pod_netns(workdir: Path) -> set[str]:
    """The pod network namespaces (``/run/netns/cni-*``) holding a process of the node working
    in ``workdir``, found by its cgroup root (``RealNode.cgroup_root``): other real nodes on
    this machine (other test runs) have pods of their own, which are not this test's."""
    marker = "/kaito-node-" + hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:10] + "/"
    inodes = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cgroup").read_text():
                    inodes.add(os.stat(entry / "ns" / "net").st_ino)
            except OSError:
                continue
    found = set()
    for name in os.listdir("/run/netns"):
        try:
            if name.startswith("cni-") and os.stat(f"/run/netns/{name}").st_ino in inodes:
                found.add(name)
        except OSError:
            continue
    return found


def test_up_real_node_runs_pods_and_a_killed_supervisor_is_cleared_by_the_next_up(tmp_path: Path) -> None:
    assert not missing_requirements(), missing_requirements()
    root = tmp_path / "local"
    state = local_cluster.up(root, real_node=True)
    try:
        assert {"containerd", "kubelet", "kube-proxy"} <= set(state.pids)
        assert (state.dns, state.dns_error) == ("10.96.0.10", ""), "cluster DNS (CoreDNS) not running"
        node = kubectl(
            state, "get", "node", "kaito-node", "-o", "jsonpath={.status.nodeInfo.containerRuntimeVersion}"
        )
        assert node.startswith("containerd://")
        kubectl(
            state,
            "run",
            "web",
            # Always, as a Deployment's pod: the next node runs it again (a Never pod whose
            # container died with its node stays terminated).
            "--restart=Always",
            f"--image={HELLO_IMAGE}",
            "--image-pull-policy=Never",
            "--",
            "serve",
            "8080",
        )
        wait_for(
            lambda: kubectl(state, "get", "pod", "web", "-o", "jsonpath={.status.phase}") == "Running",
            "the pod running",
        )
        first = state
        running = "jsonpath={.status.containerStatuses[0].state.running.startedAt}"
        first_container = kubectl(
            state, "get", "pod", "web", "-o", "jsonpath={.status.containerStatuses[0].containerID}"
        )
        assert shims(str(root / "real-node")), "no shim runs the pod"
        netns_before = pod_netns(root / "real-node")
        assert len(netns_before) == 2, f"web and CoreDNS each in a pod network namespace: {netns_before}"
        os.kill(first.supervisor_pid, signal.SIGKILL)
        wait_for(lambda: not alive(first.supervisor_pid), "the supervisor dead", timeout=10)

        state = local_cluster.up(root, real_node=True)
        for name in ("containerd", "kubelet", "kube-proxy"):
            assert not alive(first.pids[name]), f"the killed run's {name} survived the next up"
        # The pod (kept in etcd) runs again on the new node's containerd: a new container (its
        # status in etcd says Running from the dead run until the new kubelet has synced it).
        wait_for(
            lambda: (
                kubectl(state, "get", "pod", "web", "-o", running)
                and kubectl(
                    state, "get", "pod", "web", "-o", "jsonpath={.status.containerStatuses[0].containerID}"
                )
                != first_container
            ),
            "the pod running again in a new container",
        )
        netns_second = eventually_blocking(
            lambda: n if len(n := pod_netns(root / "real-node")) == 2 else set(),
            "web and CoreDNS in network namespaces again",
            timeout=90,
        )
        assert not netns_second & netns_before, (netns_before, netns_second)
    finally:
        local_cluster.down(root)
    assert not shims(str(root / "real-node"))
    left = netns_second & set(os.listdir("/run/netns"))
    assert not left, f"pod network namespaces left behind: {left}"
    assert not [n for n in netns_before if n in os.listdir("/run/netns")], (
        "the killed run's pod network namespace survived"
    )
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line]
    assert not any(alive(pid) for pid in state.pids.values())
