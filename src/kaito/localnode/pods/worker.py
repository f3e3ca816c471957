"""One pod on the local node: its lifecycle from image pull to cleanup, and the status it writes.

Why one asyncio task per container and per probe: a container's life (start, wait, back off,
start again) is a straight line of awaits, and probes are independent timers; the pod's status
is recomputed from that in-memory state after every change and written whole, as the kubelet
does, so readers (kube-controller-manager's EndpointSlices, the workspace controller) see the
same fields and reasons they see on a real node.

The parts live beside this module: volumes, env, identity (securityContext), supervision (the
restart loop), probes and status; the worker owns the pod's state and hands each part what it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from kaito.localnode import STANDIN_ANNOTATION
from kaito.localnode.images import ImagePlan, ImagePullError, ImageResolver
from kaito.localnode.pods.env import container_env, field_value
from kaito.localnode.pods.identity import run_as
from kaito.localnode.pods.launch import container_spec as launch_spec
from kaito.localnode.pods.probes import Prober
from kaito.localnode.pods.sources import ConfigError, ObjectSource
from kaito.localnode.pods.status import ContainerState, now, pod_status
from kaito.localnode.pods.supervision import signal_container, supervise
from kaito.localnode.pods.volumes import PodVolumes
from kaito.localnode.sandbox import AddressPool, AddressTaken, ContainerSpec, PodNetwork, write_private
from kaito.runtime import POD, Client, NotFoundError, get_logger

Obj = dict[str, Any]
log = get_logger("kaito.localnode")

#: how often a pod start retries when another agent routed the address it took at the same moment
_ADDRESS_ATTEMPTS = 8


class PodWorker:
    """Runs one pod until it is deleted (or, for restartPolicy Never/OnFailure, finishes)."""

    def __init__(
        self,
        client: Client,
        pod: Obj,
        *,
        pods_dir: Path,
        shm_dir: Path,
        resolver: ImageResolver,
        addresses: AddressPool,
        http: aiohttp.ClientSession,
        standin: Callable[[], Awaitable[None]],
    ) -> None:
        self.client = client
        self.pod = pod
        meta = pod["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.dir = pods_dir / f"{self.namespace}_{self.name}_{self.uid}"
        self.shm = shm_dir / self.uid
        self.resolver = resolver
        self.addresses = addresses
        self.http = http
        self.ensure_standin = standin
        self.source = ObjectSource(client, self.namespace)
        spec = pod.get("spec") or {}
        self.spec: Obj = spec
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        self.inits = {
            c["name"]: ContainerState(c["name"], c.get("image", "")) for c in spec.get("initContainers") or []
        }
        self.containers = {
            c["name"]: ContainerState(c["name"], c.get("image", "")) for c in spec.get("containers") or []
        }
        for s in self.inits.values():
            s.state = {"waiting": {"reason": "PodInitializing"}}
        self.initialized = not self.inits
        self.ip = ""
        self.net: PodNetwork | None = None
        self.start_time = now()
        self.stopping = asyncio.Event()
        self.phase = "Pending"
        self.standin = ""
        self._status_lock = asyncio.Lock()
        self._last_written: Obj | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def names(self) -> dict[str, str]:
        """name, namespace and uid, as the pod's parts take them."""
        return {"name": self.name, "namespace": self.namespace, "uid": self.uid}

    @property
    def where(self) -> str:
        """The kubelet's name for the pod in messages: ``name_namespace(uid)``."""
        return f"{self.name}_{self.namespace}({self.uid})"

    # ----- status

    def build_status(self) -> Obj:
        return pod_status(
            self.pod.get("status") or {},
            phase=self.phase,
            initialized=self.initialized,
            ip=self.ip,
            start_time=self.start_time,
            inits=list(self.inits.values()),
            containers=list(self.containers.values()),
        )

    async def write_status(self) -> None:
        async with self._status_lock:
            status = self.build_status()
            comparable = {
                **status,
                "conditions": [{**c, "lastTransitionTime": ""} for c in status["conditions"]],
            }
            if comparable == self._last_written:
                return
            try:
                self.pod = await self.client.patch(
                    POD, self.name, {"status": status}, self.namespace, subresource="status"
                )
                self._last_written = comparable
            except NotFoundError:
                self.stopping.set()
            except Exception as exc:  # the next change writes again
                log.warning("pod status write failed", pod=f"{self.namespace}/{self.name}", error=str(exc))

    # ----- lifecycle

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pod-{self.namespace}/{self.name}")

    async def _run(self) -> None:
        try:
            await self._run_pod()
        except Exception as exc:
            log.error("pod failed", pod=f"{self.namespace}/{self.name}", error=f"{type(exc).__name__}: {exc}")
            for c in [*self.inits.values(), *self.containers.values()]:
                if "running" not in c.state:
                    c.state = {"waiting": {"reason": "CreateContainerError", "message": str(exc)}}
            await self.write_status()

    async def _run_pod(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # The agent's user only, as the kubelet's /var/lib/kubelet/pods: the pod's folder holds
        # its containers' specs (Secret env values), Secret volumes and pull credentials.
        self.dir.chmod(0o700)
        plans: dict[str, ImagePlan] = {}
        pull_failed = False
        for c in [*(self.spec.get("initContainers") or []), *(self.spec.get("containers") or [])]:
            state = self.inits.get(c["name"]) or self.containers[c["name"]]
            argv = [*(c.get("command") or []), *(c.get("args") or [])]
            try:
                plans[c["name"]] = self.resolver.resolve(c.get("image", ""), argv)
            except ImagePullError as exc:
                state.state = {"waiting": {"reason": "ErrImagePull", "message": str(exc)}}
                pull_failed = True
        for name, plan in plans.items():
            if plan.pull and not pull_failed:
                state = self.inits.get(name) or self.containers[name]
                try:
                    await self.resolver.pull(plan, await self._docker_config())
                except ImagePullError as exc:
                    state.state = {"waiting": {"reason": "ErrImagePull", "message": str(exc)}}
                    pull_failed = True
        if pull_failed:
            await self.write_status()
            return  # the image map is fixed, so a retry cannot succeed: stay as the kubelet shows it
        notes = {p.standin for p in plans.values() if p.standin}
        if notes:
            self.standin = notes.pop()
            await self.ensure_standin()
            with contextlib.suppress(Exception):
                await self.client.patch(
                    POD,
                    self.name,
                    {"metadata": {"annotations": {STANDIN_ANNOTATION: self.standin}}},
                    self.namespace,
                )
        link = "kl" + self.uid.replace("-", "")[:12]
        for attempt in range(_ADDRESS_ATTEMPTS):
            self.ip = self.addresses.take()
            try:
                self.net = await PodNetwork.create(self.ip, link)
                break
            except AddressTaken:
                # the route now exists, so take() skips this address from here on
                self.addresses.give_back(self.ip)
                if attempt == _ADDRESS_ATTEMPTS - 1:
                    raise
        self.record_pids()
        volumes = await self._mount_volumes()
        if volumes is None:
            return
        await self.write_status()
        for c in self.spec.get("initContainers") or []:
            ok = await supervise(self, c, self.inits[c["name"]], plans[c["name"]], volumes, init=True)
            if not ok:
                if self.restart_policy == "Never" and not self.stopping.is_set():
                    self.phase = "Failed"
                    await self.write_status()
                return
        self.initialized = True
        self.phase = "Running"
        runs = [
            asyncio.create_task(supervise(self, c, self.containers[c["name"]], plans[c["name"]], volumes))
            for c in self.spec.get("containers") or []
        ]
        await self.write_status()
        results = await asyncio.gather(*runs)
        if not self.stopping.is_set():
            self.phase = "Succeeded" if all(results) else "Failed"
            await self.write_status()

    async def _docker_config(self) -> Path | None:
        """The pod's first imagePullSecret as a docker config file for the pull."""
        for ref in self.spec.get("imagePullSecrets") or []:
            data = await self.source.data("Secret", ref["name"], optional=True)
            if data and ".dockerconfigjson" in data:
                path = self.dir / "dockerconfig.json"
                _write(path, data[".dockerconfigjson"])
                return path
        return None

    async def _mount_volumes(self) -> dict[str, str] | None:
        """Retry until every volume source exists, as the kubelet does (the pod stays
        ContainerCreating): a Workspace's ConfigMap may land just after its StatefulSet."""
        delay = 0.5
        while not self.stopping.is_set():
            try:
                return await PodVolumes(
                    self.client,
                    self.source,
                    self.spec,
                    **self.names,
                    pod_dir=self.dir,
                    shm=self.shm,
                    field=self.field,
                ).build()
            except ConfigError as exc:
                for s in [*self.inits.values(), *self.containers.values()]:
                    s.state = {"waiting": {"reason": "ContainerCreating", "message": f"MountVolume: {exc}"}}
                await self.write_status()
                await self.sleep(delay)
                delay = min(delay * 2, 10.0)
        return None

    async def terminate(self, grace: float) -> None:
        """SIGTERM every container, SIGKILL what is left after ``grace``, then free the sandbox."""
        self.stopping.set()
        procs = [
            s.proc
            for s in [*self.inits.values(), *self.containers.values()]
            if s.proc is not None and s.proc.returncode is None
        ]
        for proc in procs:
            await signal_container(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), max(0.0, deadline - time.monotonic()))
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()  # unshare --kill-child ends the container's PID namespace
                await proc.wait()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.cleanup()

    async def cleanup(self) -> None:
        if self.net is not None:
            await self.net.destroy()
            self.net = None
        if self.ip:
            self.addresses.give_back(self.ip)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.shm, ignore_errors=True)

    def record_pids(self) -> None:
        """pids.json: the sandbox's host pids, for ``kaito local`` diagnostics and the tests that
        prove nothing outlives the pod."""
        pids = {
            "pause": self.net.pause.pid if self.net and self.net.pause else None,
            "containers": {
                s.name: s.proc.pid for s in [*self.inits.values(), *self.containers.values()] if s.proc
            },
            "ip": self.ip,
            "link": self.net.link if self.net else None,
        }
        with contextlib.suppress(OSError):
            (self.dir / "pids.json").write_text(json.dumps(pids))

    # ----- what the parts of a pod ask of it (supervision.PodHost)

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    def field(self, path: str) -> str:
        return field_value(path, self.pod["metadata"], self.spec, self.ip)

    async def container_spec(self, c: Obj, plan: ImagePlan, volumes: dict[str, str]) -> ContainerSpec:
        ident = run_as(self.spec, c, self.where)
        env = await container_env(
            c, plan.env, self.standin, self.source, self.pod["metadata"], self.spec, self.ip
        )
        return launch_spec(
            c,
            plan,
            volumes,
            env,
            ident,
            pod_spec=self.spec,
            pod_name=self.name,
            pod_dir=self.dir,
            shm_root=self.shm,
        )

    def log_path(self, container: str, restart: int) -> Path:
        return self.dir / "logs" / container / f"{restart}.log"

    def probes(
        self, c: Obj, st: ContainerState, proc: asyncio.subprocess.Process, killed: list[str]
    ) -> list[asyncio.Task[None]]:
        prober = Prober(
            self.http, self.resolver, self.spec, **self.names, ip=self.ip, changed=self.write_status
        )
        return prober.start(c, st, proc, killed)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, data, 0o600)
