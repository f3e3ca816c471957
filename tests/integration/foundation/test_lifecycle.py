"""Clusters start side by side and leave nothing behind, even when their owner is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kaito.envtest import Cluster, ClusterOptions
from kaito.envtest.cluster import iter_processes

pytestmark = pytest.mark.cluster


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = list(iter_processes(pids))
        if not alive:
            return []
        time.sleep(0.1)
    return list(iter_processes(pids))


def test_second_cluster_alongside_and_clean_teardown(kube_cluster: Cluster) -> None:
    with Cluster(ClusterOptions()) as other:
        assert other.apiserver_port != kube_cluster.apiserver_port
        assert other.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        pids = list(other.pids().values())
        assert len(pids) == 2
        workdir = other.workdir
    assert _wait_gone(pids) == []
    assert not workdir.exists()
    assert kube_cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_killed_owner_takes_its_processes_down(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys, time
        from kaito.envtest import Cluster, ClusterOptions
        c = Cluster(ClusterOptions())
        c.start()
        print(json.dumps(list(c.pids().values())), flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    pids = json.loads(owner.stdout.readline())
    assert len(list(iter_processes(pids))) == 2
    os.kill(owner.pid, signal.SIGKILL)  # no atexit, no finally: only PDEATHSIG can clean up
    owner.wait()
    assert _wait_gone(pids) == []


def test_kaito_local_up_status_down(tmp_path: Path) -> None:
    kaito = [sys.executable, "-m", "kaito.cli.main", "local"]
    state = tmp_path / "state"
    up = subprocess.run(
        [*kaito, "up", "--state-dir", str(state)], capture_output=True, text=True, timeout=240
    )
    assert up.returncode == 0, up.stderr
    kubeconfig = up.stdout.strip().splitlines()[-1]
    assert "kubectl" in up.stderr and kubeconfig in up.stderr
    info = json.loads((state / "state.json").read_text())
    # As root, `kaito local up` also runs the node agent that really runs kaito's pods.
    expected = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    if os.geteuid() == 0:
        expected.add("node-agent")
    assert set(info["pids"]) == expected
    ns = subprocess.run(
        [info["kubectl"], "--kubeconfig", kubeconfig, "get", "namespaces", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "namespace/kube-system" in ns.stdout
    again = subprocess.run([*kaito, "up", "--state-dir", str(state)], capture_output=True, text=True)
    assert again.returncode == 0 and json.loads((state / "state.json").read_text()) == info  # idempotent
    status = subprocess.run([*kaito, "status", "--state-dir", str(state)], capture_output=True, text=True)
    assert status.returncode == 0 and "kube-apiserver" in status.stderr
    down = subprocess.run(
        [*kaito, "down", "--state-dir", str(state)], capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 0
    assert _wait_gone([info["supervisor_pid"], *info["pids"].values()]) == []
    gone = subprocess.run([*kaito, "status", "--state-dir", str(state)], capture_output=True, text=True)
    assert gone.returncode == 3
