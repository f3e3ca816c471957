"""`kaito local up` with the node agent: `down` and a killed supervisor leave no process, mount or
network namespace of a running pod behind.

Its own control plane (a `kaito local` state dir), not the session cluster: killing the
supervisor is the point.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import local_node_manifest, netns_pids, pod_manifest, still_running, wait_for
from kaito.envtest import local as local_cluster
from kaito.localnode.cli import AGENT_SUBDIR, agent_command
from kaito.runtime import NODE, POD, Client, load_configuration

HTTP = ["python", "-m", "http.server", "5000", "--bind", "0.0.0.0"]


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


async def _start_pod(state: local_cluster.LocalState, root: Path) -> dict[str, Any]:
    """A Ready pod on a local node of this cluster; returns its sandbox (pids.json) plus pids."""
    config = await load_configuration(state.kubeconfig)
    async with Client(config, user_agent="kaito-tests") as client:
        with_status = local_node_manifest("life-node")
        try:
            await client.create(with_status)
        except Exception:
            await client.get(NODE, "life-node")
        pod = pod_manifest("life", "life-node", {"command": HTTP})
        pod["metadata"]["namespace"] = "default"
        await client.create(pod)

        async def ready() -> bool:
            p = await client.get(POD, "life", "default")
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions") or []
            )

        await wait_for(ready, "pod Ready on the local node", timeout=120)
    pod_dir = next((root / AGENT_SUBDIR / "pods").glob("default_life_*"))
    sandbox = json.loads((pod_dir / "pids.json").read_text())
    sandbox["pids"] = netns_pids(sandbox["pause"])
    sandbox["dir"] = str(pod_dir)
    return sandbox


async def _assert_nothing_left(sandbox: dict[str, Any], state: local_cluster.LocalState) -> None:
    pids = [*sandbox["pids"], state.pids["node-agent"]]
    await wait_for(lambda: not still_running(pids), "every pod and agent process gone", timeout=90)
    assert sandbox["link"] not in _links()
    assert not _leftovers(sandbox["dir"])


def _leftovers(pod_dir: str) -> list[str]:
    """Mounts naming the pod's folder, and the folder itself."""
    found = [line for line in Path("/proc/mounts").read_text().splitlines() if pod_dir in line]
    return found + ([pod_dir] if Path(pod_dir).exists() else [])


@pytest.mark.parametrize("how", ["down", "kill-supervisor"])
async def test_nothing_survives(tmp_path: Path, how: str) -> None:
    if not agent_command():
        pytest.fail("the node agent needs root")
    root = tmp_path / "local"
    state = await asyncio.to_thread(local_cluster.up, root, extra=agent_command())
    try:
        assert "node-agent" in state.pids
        sandbox = await _start_pod(state, root)
        assert len(sandbox["pids"]) >= 2
        if how == "down":
            assert await asyncio.to_thread(local_cluster.down, root)
        else:
            os.kill(state.supervisor_pid, signal.SIGKILL)
        await _assert_nothing_left(sandbox, state)
    finally:
        await asyncio.to_thread(local_cluster.down, root)
