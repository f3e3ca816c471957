"""The agent: the Nodes it owns (Lease, Ready condition) and a PodWorker per pod bound to them.

Why it watches Nodes by label instead of registering its own: whoever creates a node (``make
run``, the kwok cloud provider, a test) decides its name, instance type and labels, exactly as on
a cluster; the label ``kaito.sh/node-agent=local`` hands it to this agent and kwok leaves it
alone. The agent then does a kubelet's share: heartbeat, pod lifecycle, final pod deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from kaito.localnode import AGENT_NODE_LABEL, AGENT_NODE_VALUE
from kaito.localnode.images import ImageResolver
from kaito.localnode.pods import PodWorker, now
from kaito.localnode.sandbox import GATEWAY, AddressPool, guard_network, unguard_network
from kaito.runtime import (
    LEASE,
    NODE,
    POD,
    AlreadyExistsError,
    Client,
    FuncHandler,
    Informer,
    NotFoundError,
    get_logger,
)

Obj = dict[str, Any]
log = get_logger("kaito.localnode")
HEARTBEAT_SECONDS = 10.0
LEASE_SECONDS = 40
#: Pod memory volumes live here (tmpfs already, so no mount to undo).
SHM_ROOT = Path("/dev/shm/kaito-localnode")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Agent:
    def __init__(self, client: Client, state_dir: Path, resolver: ImageResolver) -> None:
        self.client = client
        self.state_dir = state_dir
        self.pods_dir = state_dir / "pods"
        self.shm_dir = SHM_ROOT / str(os.getpid())
        self.resolver = resolver
        self.addresses = AddressPool()
        self.nodes: dict[str, Obj] = {}
        self.workers: dict[str, PodWorker] = {}
        self.stop_event = asyncio.Event()
        self._standin_lock = asyncio.Lock()
        self._deleting: set[str] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self.http: aiohttp.ClientSession | None = None

    # ----- stand-in weights

    async def ensure_standin(self) -> None:
        """Build the random-weight stand-in once (cached across runs), in the inference venv."""
        target = self.resolver.standin_dir
        async with self._standin_lock:
            if (target / "config.json").exists():
                return
            log.info("building the random-weight stand-in model (once)", path=str(target))
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            code = (
                "import sys; from pathlib import Path; "
                "from kaito.contract.tinymodel import build_tiny_model; "
                "build_tiny_model(Path(sys.argv[1]), max_position_embeddings=4096)"
            )
            proc = await asyncio.create_subprocess_exec(
                str(self.resolver.venv / "bin" / "python"),
                "-c",
                code,
                str(tmp),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
            )
            _, err = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"building the stand-in model failed: {err.decode()[-500:]}")
            tmp.rename(target)

    # ----- nodes

    def _on_node(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        first = name not in self.nodes
        self.nodes[name] = node
        if first:
            log.info("node owned", node=name)
            self._spawn(self._heartbeat_one(name))

    def _on_node_gone(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        self.nodes.pop(name, None)
        for w in list(self.workers.values()):
            if w.spec.get("nodeName") == name:
                self._spawn(self._finish(w, 0))

    def _node_status(self, node: Obj) -> Obj:
        status = node.get("status") or {}
        defaults = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 1024}Ki",
            "pods": "110",
            "ephemeral-storage": "100Gi",
        }
        capacity = {**defaults, **(status.get("capacity") or {})}
        allocatable = {**capacity, **(status.get("allocatable") or {})}
        t = now()
        born = node["metadata"].get("creationTimestamp") or t

        def cond(kind: str, ok: bool, reason: str, message: str) -> Obj:
            previous = next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)
            value = "True" if ok else "False"
            changed = previous is None or previous.get("status") != value
            return {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": t,
                "lastTransitionTime": t if changed else previous.get("lastTransitionTime", born),  # type: ignore[union-attr]
            }

        return {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                cond("MemoryPressure", False, "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
                cond("DiskPressure", False, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", False, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", True, "KubeletReady", "kaito local node agent is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": GATEWAY},
                {"type": "Hostname", "address": node["metadata"]["name"]},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "kaito local node",
                "kernelVersion": os.uname().release,
                "kubeletVersion": "kaito-localnode",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "kaito-local://namespaces",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    async def _heartbeat_one(self, name: str) -> None:
        while name in self.nodes and not self.stop_event.is_set():
            node = self.nodes[name]
            try:
                self.nodes[name] = await self.client.patch(
                    NODE, name, {"status": self._node_status(node)}, subresource="status"
                )
                await self._renew_lease(node)
            except NotFoundError:
                self.nodes.pop(name, None)
                return
            except Exception as exc:
                log.warning("node heartbeat failed", node=name, error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), HEARTBEAT_SECONDS)

    async def _renew_lease(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": _micro_now()}
        try:
            await self.client.patch(LEASE, name, {"spec": spec}, "kube-node-lease")
        except NotFoundError:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
                    ],
                },
                "spec": spec,
            }
            with contextlib.suppress(AlreadyExistsError):
                await self.client.create(lease)

    # ----- pods

    def _on_pod(self, pod: Obj) -> None:
        spec = pod.get("spec") or {}
        if spec.get("nodeName") not in self.nodes:
            return
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if pod["metadata"].get("deletionTimestamp"):
            if uid not in self._deleting:
                self._deleting.add(uid)
                grace = pod["metadata"].get("deletionGracePeriodSeconds")
                grace = spec.get("terminationGracePeriodSeconds", 30) if grace is None else grace
                self._spawn(self._finish(worker, float(grace), pod))
            return
        if worker is not None:
            worker.pod["metadata"] = pod["metadata"]
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        assert self.http is not None
        worker = PodWorker(
            self.client,
            pod,
            pods_dir=self.pods_dir,
            shm_dir=self.shm_dir,
            resolver=self.resolver,
            addresses=self.addresses,
            http=self.http,
            standin=self.ensure_standin,
        )
        self.workers[uid] = worker
        log.info("pod starting", pod=f"{worker.namespace}/{worker.name}", node=spec.get("nodeName"))
        worker.start()

    def _on_pod_gone(self, pod: Obj) -> None:
        worker = self.workers.get(pod["metadata"]["uid"])
        if worker is not None:
            self._spawn(self._finish(worker, 0))

    async def _finish(self, worker: PodWorker | None, grace: float, pod: Obj | None = None) -> None:
        """Stop the pod's processes, free its sandbox, then remove the object (the kubelet's
        final delete with grace 0)."""
        if worker is not None:
            await worker.terminate(grace)
            self.workers.pop(worker.uid, None)
            log.info("pod stopped", pod=f"{worker.namespace}/{worker.name}")
        if pod is not None:
            meta = pod["metadata"]
            with contextlib.suppress(NotFoundError):
                await self.client.delete(
                    POD,
                    meta["name"],
                    meta["namespace"],
                    grace_period_seconds=0,
                    preconditions={"uid": meta["uid"]},
                )
            self._deleting.discard(meta["uid"])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # ----- main

    def sweep(self) -> None:
        """Remove what a previous agent killed with SIGKILL could not (files only: its processes
        and namespaces died with it)."""
        shutil.rmtree(self.pods_dir, ignore_errors=True)
        if SHM_ROOT.exists():
            for d in SHM_ROOT.iterdir():
                if not Path(f"/proc/{d.name}").exists():
                    shutil.rmtree(d, ignore_errors=True)

    async def run(self) -> None:
        self.sweep()
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        await guard_network()
        self.http = aiohttp.ClientSession()
        nodes = Informer(self.client, NODE, label_selector=f"{AGENT_NODE_LABEL}={AGENT_NODE_VALUE}")
        nodes.add_handler(
            FuncHandler(add=self._on_node, update=lambda _o, n: self._on_node(n), delete=self._on_node_gone)
        )
        pods = Informer(self.client, POD)
        pods.add_handler(
            FuncHandler(add=self._on_pod, update=lambda _o, n: self._on_pod(n), delete=self._on_pod_gone)
        )
        nodes.start_nowait()
        await nodes.wait_for_sync()
        pods.start_nowait()
        log.info("kaito local node agent running", pid=os.getpid(), state_dir=str(self.state_dir))
        try:
            await self.stop_event.wait()
        finally:
            await pods.stop()
            await nodes.stop()
            await asyncio.gather(*(self._finish(w, 10.0) for w in list(self.workers.values())))
            for node in list(self.nodes):
                # the node goes NotReady at once rather than after the lease runs out
                with contextlib.suppress(Exception):
                    await self.client.patch(
                        NODE,
                        node,
                        {
                            "status": {
                                "conditions": [
                                    {
                                        "type": "Ready",
                                        "status": "Unknown",
                                        "reason": "NodeStatusUnknown",
                                        "message": "kaito local node agent stopped",
                                        "lastHeartbeatTime": now(),
                                        "lastTransitionTime": now(),
                                    }
                                ]
                            }
                        },
                        subresource="status",
                    )
            await self.http.close()
            await unguard_network()
            shutil.rmtree(self.shm_dir, ignore_errors=True)
            log.info("kaito local node agent stopped")


def default_venv() -> Path:
    """The project's `.venv-inference` beside this checkout's src/ folder."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / ".venv-inference").is_dir():
            return parent / ".venv-inference"
    return Path(sys.prefix).parent / ".venv-inference"
