"""Fixtures for the local node agent: the agent as its own process on the session cluster, nodes
it owns, and polling with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kaito.envtest import Cluster, eventually
from kaito.localnode import AGENT_NODE_LABEL, AGENT_NODE_VALUE
from kaito.localnode.agent import default_venv
from kaito.provisioners.byo import gpu_node_manifest
from kaito.runtime import NODE, POD, Client, NotFoundError

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[3]
INFERENCE_IMAGE = "ghcr.io/kaito-project/kaito/inference:local"


class AgentProcess:
    def __init__(self, cluster: Cluster, root: Path) -> None:
        #: ``root`` plays the ``kaito local`` state dir; the agent keeps its pods in root/node
        self.root = root
        self.kubeconfig = cluster.kubeconfig
        self.state_dir = root / "node"
        #: where a test's local registry (hack/registry.sh) keeps its CA; read at pull time
        self.registry_dir = root / "registry"
        self.log = root / "agent.log"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kaito.localnode",
                    "--kubeconfig",
                    str(cluster.kubeconfig),
                    "--state-dir",
                    str(self.state_dir),
                    "--registry-ca",
                    str(self.registry_dir / "ca.crt"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def stop(self, timeout: float = 90.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def agent(kube_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    venv_python = default_venv() / "bin" / "python"
    if not venv_python.exists():
        # every pod would fail to "pull" its image and each test would wait out its deadline
        pytest.fail(
            f"{venv_python} is missing: the local node runs kaito's images with it; run `make inference-venv`"
        )
    running = AgentProcess(kube_cluster, tmp_path_factory.mktemp("localnode"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def kclient(kube_cluster: Cluster) -> AsyncIterator[Client]:
    async with Client(kube_cluster.client_configuration(), user_agent="kaito-tests") as client:
        yield client


async def wait_for(
    check: Callable[[], Awaitable[T] | T],
    what: str,
    *,
    timeout: float = 120.0,  # noqa: ASYNC109
    interval: float = 0.3,
) -> T:
    """Poll ``check`` until it returns something truthy (kaito.envtest.eventually)."""
    return await eventually(check, what, timeout=timeout, interval=interval)


def netns_pids(pause: int) -> list[int]:
    """Every host process in a pod's network namespace (pinned by its ``pause`` process)."""
    target = os.readlink(f"/proc/{pause}/ns/net")
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == target:
                    out.append(int(entry))
            except OSError:
                continue
    return out


def still_running(pids: list[int]) -> list[int]:
    """Those of ``pids`` that exist and are not zombies."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def local_node_manifest(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    node = gpu_node_manifest(
        name, "Standard_NC6s_v3", {AGENT_NODE_LABEL: AGENT_NODE_VALUE, **(labels or {})}, fake=False
    )
    node["metadata"]["labels"].pop("type", None)  # not a kwok node
    return node


@pytest.fixture(scope="session")
async def local_node(kube_cluster: Cluster, agent: AgentProcess) -> AsyncIterator[str]:
    """One node the agent owns, Ready (the agent's heartbeat, not kwok's)."""
    name = f"local-{uuid.uuid4().hex[:6]}"
    async with Client(kube_cluster.client_configuration(), user_agent="kaito-tests") as client:
        await client.create(local_node_manifest(name, {"apps": "localnode-tests"}))

        async def ready() -> bool:
            node = await client.get(NODE, name)
            conds = {c["type"]: c for c in node.get("status", {}).get("conditions") or []}
            return conds.get("Ready", {}).get("status") == "True"

        await wait_for(ready, f"node {name} Ready", timeout=60)
        yield name
        await client.delete(NODE, name, ignore_not_found=True)


def pod_manifest(name: str, node: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    base = {"name": "main", "image": INFERENCE_IMAGE, **container}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "containers": [base],
            "terminationGracePeriodSeconds": 5,
            "tolerations": [{"operator": "Exists"}],
            **spec,
        },
    }


async def get_pod(client: Client, name: str, ns: str) -> dict[str, Any] | None:
    try:
        return await client.get(POD, name, ns)
    except NotFoundError:
        return None


def container_status(pod: dict[str, Any] | None, name: str = "main") -> dict[str, Any]:
    for cs in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if cs["name"] == name:
            return dict(cs)
    return {}


def processes_in(state_dir: Path) -> list[int]:
    """Host pids whose command line names the agent's state dir (its containers' launchers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state_dir) in cmd:
            found.append(int(entry))
    return found
