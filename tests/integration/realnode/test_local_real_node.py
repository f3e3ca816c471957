"""``kaito local up --node real``: the supervisor runs the control plane and a real node; ``down``
leaves nothing, and an ``up`` after a killed supervisor clears what the dead one left."""

from __future__ import annotations

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


def test_up_real_node_runs_pods_and_a_killed_supervisor_is_cleared_by_the_next_up(tmp_path: Path) -> None:
    assert not missing_requirements(), missing_requirements()
    root = tmp_path / "local"
    state = local_cluster.up(root, real_node=True)
    try:
        assert {"containerd", "kubelet", "kube-proxy"} <= set(state.pids)
        node = kubectl(
            state, "get", "node", "kaito-node", "-o", "jsonpath={.status.nodeInfo.containerRuntimeVersion}"
        )
        assert node.startswith("containerd://")
        kubectl(
            state,
            "run",
            "web",
            "--restart=Never",
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
        assert shims(str(root / "real-node")), "no shim runs the pod"
        netns_before = set(os.listdir("/run/netns"))
        os.kill(first.supervisor_pid, signal.SIGKILL)
        wait_for(lambda: not alive(first.supervisor_pid), "the supervisor dead", timeout=10)

        state = local_cluster.up(root, real_node=True)
        for name in ("containerd", "kubelet", "kube-proxy"):
            assert not alive(first.pids[name]), f"the killed run's {name} survived the next up"
        # The pod (kept in etcd) runs again on the new node's containerd, in a new shim.
        wait_for(
            lambda: kubectl(state, "get", "pod", "web", "-o", "jsonpath={.status.phase}") == "Running",
            "the pod running again",
        )
    finally:
        local_cluster.down(root)
    assert not shims(str(root / "real-node"))
    left = {n for n in set(os.listdir("/run/netns")) - netns_before if n.startswith("cni-")}
    assert not left, f"pod network namespaces left behind: {left}"
    assert not [n for n in netns_before if n.startswith("cni-") and n in os.listdir("/run/netns")], (
        "the killed run's pod network namespace survived"
    )
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line]
    assert not any(alive(pid) for pid in state.pids.values())
