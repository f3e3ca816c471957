"""One pod on the local node: volumes, env, init containers, containers with probes and restarts,
and the status a kubelet would write for them.

Why one asyncio task per container and per probe: a container's life (start, wait, back off,
start again) is a straight line of awaits, and probes are independent timers; the pod's status
is recomputed from that in-memory state after every change and written whole, as the kubelet
does, so readers (kube-controller-manager's EndpointSlices, the workspace controller) see the
same fields and reasons they see on a real node.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import pwd
import re
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from kaito.localnode import STANDIN_ANNOTATION
from kaito.localnode.images import ImagePlan, ImagePullError, ImageResolver
from kaito.localnode.sandbox import (
    GATEWAY,
    GRANTABLE_CAPABILITIES,
    AddressPool,
    AddressTaken,
    ContainerSpec,
    PodNetwork,
    container_pid,
    die_with_parent,
    launch_argv,
    run_in,
    unprivileged_argv,
    write_private,
    write_spec,
)
from kaito.runtime import CONFIGMAP, POD, SECRET, Client, NotFoundError, get_logger

Obj = dict[str, Any]
log = get_logger("kaito.localnode")

#: The kubelet's crash-loop back-off: 10 s doubling to 5 min, reset after 10 min of running.
BACKOFF_INITIAL = 10.0
#: how often a pod start retries when another agent routed the address it took at the same moment
_ADDRESS_ATTEMPTS = 8
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0
#: Host folders bound read-write into every container at the same path: model and compile
#: caches stay warm across restarts as a node's image cache would. Only these caches, not all of
#: ~/.cache: kaito's own cache there holds the control-plane binaries the host runs as root.
SHARED_CACHES = tuple(
    str(Path(os.environ.get("HOME", "/root")) / ".cache" / name) for name in ("huggingface", "vllm", "torch")
)
#: the checkout whose kaito the images' interpreter imports (an editable install points here);
#: bound into every container like the venv, since a checkout under /tmp would otherwise vanish
#: behind the container's own empty /tmp and the image's command would not be found (exit 127)
KAITO_SOURCE = str(Path(__file__).resolve().parents[2])
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, others stay as is."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR_REF.sub(sub, text)


class ConfigError(Exception):
    """CreateContainerConfigError: a referenced Secret/ConfigMap/key is missing, or the
    securityContext asks for what the local node refuses."""


@dataclass(frozen=True)
class RunAs:
    """Who a container's process is: user, group, supplementary groups, kept capabilities."""

    user: int
    group: int
    groups: list[int]
    capabilities: list[int]
    read_only_root: bool = False


def _primary_group(uid: int) -> int:
    """The user's group in the image's /etc/passwd (this host's), else 0, as container runtimes
    choose a group for a runAsUser without runAsGroup."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return 0


def run_as(pod_spec: Obj, c: Obj, pod: str) -> RunAs:
    """The container's user from its and the pod's securityContext, as the kubelet resolves it.

    The images here are this host's files, whose user is root, so without runAsUser a container
    runs as uid 0 (with no capability). Refused, naming the field: runAsNonRoot with no non-zero
    runAsUser (the kubelet refuses an image whose user is root the same way), ``privileged``
    (here it would be root on this machine with its devices: no isolation left) and any added
    capability but NET_BIND_SERVICE (the others reach past the pod: mounts, the host's files,
    modules). ``pod`` is the kubelet's ``name_namespace(uid)``."""
    psc: Obj = pod_spec.get("securityContext") or {}
    csc: Obj = c.get("securityContext") or {}
    name = c.get("name", "")

    def pick(key: str) -> Any:
        return csc[key] if csc.get(key) is not None else psc.get(key)

    if csc.get("privileged"):
        raise ConfigError(
            f"securityContext.privileged is true (pod: {pod!r}, container: {name}): the local node runs "
            "containers as host processes, where privileged would mean root on this machine; "
            "run the pod on a real node"
        )
    caps = []
    for cap in (csc.get("capabilities") or {}).get("add") or []:
        key = str(cap).upper().removeprefix("CAP_")
        if key not in GRANTABLE_CAPABILITIES:
            raise ConfigError(
                f"securityContext.capabilities.add: {cap} is refused (pod: {pod!r}, container: {name}): "
                f"the local node grants only {', '.join(GRANTABLE_CAPABILITIES)}"
            )
        caps.append(GRANTABLE_CAPABILITIES[key])
    user = pick("runAsUser")
    uid = int(user) if user is not None else 0
    if pick("runAsNonRoot") and uid == 0:
        if user is None:
            raise ConfigError(
                f"container has runAsNonRoot and image will run as root (pod: {pod!r}, container: {name}): "
                "securityContext.runAsNonRoot is true and no securityContext.runAsUser is set; the "
                "local node's images are this host's files, whose user is root: set runAsUser"
            )
        raise ConfigError(
            f"container's runAsUser breaks non-root policy (pod: {pod!r}, container: {name}): "
            "securityContext.runAsNonRoot is true and securityContext.runAsUser is 0"
        )
    group = pick("runAsGroup")
    gid = int(group) if group is not None else _primary_group(uid)
    extra = [*(psc.get("supplementalGroups") or [])]
    if psc.get("fsGroup") is not None:
        extra.append(psc["fsGroup"])  # the kubelet adds the volumes' group to every container
    groups = list(dict.fromkeys([gid, *(int(g) for g in extra)]))
    return RunAs(uid, gid, groups, caps, bool(csc.get("readOnlyRootFilesystem")))


def subpath(volume: str, sub: str) -> str:
    """``volume``/``sub`` on the host, refused when it resolves outside the volume: a container
    can plant a symlink in an emptyDir (``ln -s / x``) and a second container's ``subPath: x``
    would otherwise bind the host's root."""
    base = os.path.realpath(volume)
    full = os.path.realpath(os.path.join(base, sub))
    if full != base and not full.startswith(base + os.sep):
        raise ConfigError(f'subPath "{sub}" resolves outside its volume')
    return full


@dataclass
class ContainerState:
    name: str
    image: str
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    proc: asyncio.subprocess.Process | None = None
    run_id: str = ""

    def status(self) -> Obj:
        return {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "containerID": f"kaito-local://{self.run_id}" if self.run_id else None,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


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

    # ----- status

    def build_status(self) -> Obj:
        mains = list(self.containers.values())
        all_ready = bool(mains) and all(c.ready for c in mains)
        t = now()

        def cond(kind: str, ok: bool, reason: str | None = None) -> Obj:
            c: Obj = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": t}
            if not ok and reason:
                c["reason"] = reason
            return c

        previous = {c["type"]: c for c in ((self.pod.get("status") or {}).get("conditions") or [])}
        conditions = [
            cond("PodReadyToStartContainers", bool(self.ip)),
            cond("Initialized", self.initialized, "ContainersNotInitialized"),
            cond("Ready", all_ready, "ContainersNotReady"),
            cond("ContainersReady", all_ready, "ContainersNotReady"),
            cond("PodScheduled", True),
        ]
        for c in conditions:  # keep transition times of unchanged conditions
            old = previous.get(c["type"])
            if old is not None and old.get("status") == c["status"] and old.get("lastTransitionTime"):
                c["lastTransitionTime"] = old["lastTransitionTime"]
        status: Obj = {
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": GATEWAY,
            "hostIPs": [{"ip": GATEWAY}],
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in mains],
        }
        if self.inits:
            status["initContainerStatuses"] = [c.status() for c in self.inits.values()]
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return status

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
        self._record_pids()
        volumes = await self._mount_volumes()
        if volumes is None:
            return
        await self.write_status()
        for c in self.spec.get("initContainers") or []:
            ok = await self._supervise(c, self.inits[c["name"]], plans[c["name"]], volumes, init=True)
            if not ok:
                if self.restart_policy == "Never" and not self.stopping.is_set():
                    self.phase = "Failed"
                    await self.write_status()
                return
        self.initialized = True
        self.phase = "Running"
        runs = [
            asyncio.create_task(self._supervise(c, self.containers[c["name"]], plans[c["name"]], volumes))
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
            data = await self._data("Secret", ref["name"], optional=True)
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
                return await self._volumes()
            except ConfigError as exc:
                for s in [*self.inits.values(), *self.containers.values()]:
                    s.state = {"waiting": {"reason": "ContainerCreating", "message": f"MountVolume: {exc}"}}
                await self.write_status()
                await self._sleep(delay)
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
            await _signal_container(proc, signal.SIGTERM)
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

    def _record_pids(self) -> None:
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

    # ----- volumes and env

    async def _get(self, kind: str, name: str) -> Obj | None:
        gvk = CONFIGMAP if kind == "ConfigMap" else SECRET
        try:
            return await self.client.get(gvk, name, self.namespace, cached=False)
        except NotFoundError:
            return None

    async def _data(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        obj = await self._get(kind, name)
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind.lower()} "{name}" not found')
        out = (
            {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            if kind == "ConfigMap"
            else {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        )
        if kind == "ConfigMap":
            out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out

    def _volume_owner(self) -> tuple[int, int, bool, bool]:
        """Who owns the pod's Secret, ConfigMap, projected and emptyDir folders: (uid, gid, the
        group may read, others may read). The uid every container runs as (so a runAsUser
        container reads its Secret and token, still owner-only), the pod's fsGroup as group (as
        the kubelet does); when the containers run as several users and no fsGroup joins them,
        the files keep the requested mode's read bits, as on a real node (the pod's own 0700
        folder keeps the host's other users out)."""
        users, gids = set(), set()
        where = f"{self.name}_{self.namespace}({self.uid})"
        for c in [*(self.spec.get("initContainers") or []), *(self.spec.get("containers") or [])]:
            with contextlib.suppress(ConfigError):  # refused later, by name, when it starts
                ident = run_as(self.spec, c, where)
                users.add(ident.user)
                gids.add(ident.group)
        fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
        uid = next(iter(users)) if len(users) == 1 else 0
        gid = int(fs_group) if fs_group is not None else (next(iter(gids)) if len(gids) == 1 else 0)
        return uid, gid, fs_group is not None, len(users) > 1 and fs_group is None

    async def _volumes(self) -> dict[str, str]:
        """Each volume as a host folder (or file); returns name -> host path."""
        paths: dict[str, str] = {}
        uid, gid, group_read, shared = self._volume_owner()
        dir_mode = 0o700 | (0o050 if group_read else 0) | (0o055 if shared else 0)
        for vol in self.spec.get("volumes") or []:
            name = vol["name"]
            target = self.dir / "volumes" / name
            if "emptyDir" in vol:
                if (vol["emptyDir"] or {}).get("medium") == "Memory":
                    target = self.shm / name  # /dev/shm is memory already: no mount to undo
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o1777)
            elif "configMap" in vol or "secret" in vol:
                kind = "ConfigMap" if "configMap" in vol else "Secret"
                src = vol.get("configMap") or vol.get("secret") or {}
                ref = src.get("name") if kind == "ConfigMap" else src.get("secretName")
                data = await self._data(kind, str(ref), bool(src.get("optional")))
                secret = kind == "Secret"
                target.mkdir(parents=True, exist_ok=True)
                if secret:
                    target.chmod(dir_mode)
                items = src.get("items") or [{"key": k, "path": k} for k in (data or {})]
                for item in items:
                    if data is None:
                        break
                    if item["key"] not in data:
                        if src.get("optional"):
                            continue
                        raise ConfigError(f'{kind.lower()} "{ref}": key "{item["key"]}" not found')
                    f = target / item["path"]
                    f.parent.mkdir(parents=True, exist_ok=True)
                    mode = int(item.get("mode") or src.get("defaultMode") or 0o644)
                    if secret:
                        f.parent.chmod(dir_mode)
                        file_mode = secret_file_mode(mode, group=group_read, shared=shared)
                        write_private(f, data[item["key"]], file_mode)
                    else:
                        f.write_bytes(data[item["key"]])
                        f.chmod(mode)
            elif "projected" in vol:
                await self._projected(vol["projected"], target, dir_mode, group_read, shared)
            elif "hostPath" in vol:
                paths[name] = str(Path(vol["hostPath"]["path"]))
                continue
            else:
                raise ConfigError(
                    f'volume "{name}": only emptyDir, configMap, secret and hostPath run locally'
                )
            _chown_tree(target, uid, gid)
            paths[name] = str(target)
        return paths

    async def _projected(self, src: Obj, target: Path, dir_mode: int, group: bool, shared: bool) -> None:
        """The service-account volume every pod gets: a token from the TokenRequest API, the
        cluster CA (kube-root-ca.crt) and the namespace."""
        private = secret_file_mode(0o400, group=group, shared=shared)
        _mkdir(target, dir_mode)  # a service-account token and Secret items: the pod's user only
        for source in src.get("sources") or []:
            if "serviceAccountToken" in source:
                sat = source["serviceAccountToken"]
                sa = self.spec.get("serviceAccountName") or "default"
                body = {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {
                        "expirationSeconds": int(sat.get("expirationSeconds", 3607)),
                        "boundObjectRef": {
                            "kind": "Pod",
                            "apiVersion": "v1",
                            "name": self.name,
                            "uid": self.uid,
                        },
                    },
                }
                token = ""
                with contextlib.suppress(Exception):
                    got = await self.client.raw_request(
                        "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token", body=body
                    )
                    token = str(got["status"]["token"])
                write_private(target / sat.get("path", "token"), token.encode(), private)
            for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if key in source:
                    ref = source[key]
                    data = await self._data(kind, ref["name"], bool(ref.get("optional")))
                    for item in ref.get("items") or [{"key": k, "path": k} for k in (data or {})]:
                        if data is not None and item["key"] in data:
                            f = target / item["path"]
                            f.parent.mkdir(parents=True, exist_ok=True)
                            if kind == "Secret":
                                write_private(f, data[item["key"]], private)
                            else:
                                f.write_bytes(data[item["key"]])
            if "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    if "fieldRef" in item:
                        (target / item["path"]).write_text(self._field(item["fieldRef"]["fieldPath"]))

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.spec.get("nodeName", ""),
            "spec.serviceAccountName": self.spec.get("serviceAccountName", ""),
            "status.podIP": self.ip,
            "status.hostIP": GATEWAY,
        }
        if path not in simple:
            raise ConfigError(f"fieldRef {path!r} is not supported on the local node")
        return str(simple[path])

    def _resource(self, c: Obj, ref: Obj) -> str:
        res = ref["resource"]
        kind, _, what = res.partition(".")
        raw = str(((c.get("resources") or {}).get(kind) or {}).get(what) or "")
        if what == "cpu":
            cores = float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw or os.cpu_count() or 1)
            return str(math.ceil(cores))
        return raw or "0"

    async def _env(self, c: Obj, plan: ImagePlan) -> dict[str, str]:
        env = dict(plan.env)
        if self.standin:
            env["KAITO_STANDIN"] = self.standin
        for src in c.get("envFrom") or []:
            kind = "ConfigMap" if "configMapRef" in src else "Secret"
            ref = src.get("configMapRef") or src.get("secretRef") or {}
            data = await self._data(kind, ref["name"], bool(ref.get("optional")))
            for k, v in (data or {}).items():
                env[src.get("prefix", "") + k] = v.decode(errors="replace")
        for e in c.get("env") or []:
            if "valueFrom" not in e:
                env[e["name"]] = expand(str(e.get("value", "")), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[e["name"]] = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                env[e["name"]] = self._resource(c, vf["resourceFieldRef"])
            else:
                kind = "ConfigMap" if "configMapKeyRef" in vf else "Secret"
                ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef") or {}
                data = await self._data(kind, ref["name"], bool(ref.get("optional")))
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'{kind.lower()} "{ref["name"]}": key "{ref["key"]}" not found')
                env[e["name"]] = data[ref["key"]].decode(errors="replace")
        return env

    # ----- containers

    async def _supervise(
        self, c: Obj, st: ContainerState, plan: ImagePlan, volumes: dict[str, str], *, init: bool = False
    ) -> bool:
        """Run one container under the restart policy; True when it ended with exit code 0."""
        backoff = BACKOFF_INITIAL
        while not self.stopping.is_set():
            try:
                spec = await self._container_spec(c, plan, volumes)
            except ConfigError as exc:
                st.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
                await self.write_status()
                await self._sleep(backoff)
                continue
            started = time.monotonic()
            rc, reason = await self._run_once(c, st, spec, init)
            ran = time.monotonic() - started
            if self.stopping.is_set():
                return rc == 0
            restart = self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and rc != 0)
            if init and rc == 0:
                return True
            if not restart:
                return rc == 0
            if ran >= BACKOFF_RESET:
                backoff = BACKOFF_INITIAL
            st.last_state = st.state
            st.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {int(backoff)}s restarting failed container={st.name} "
                    f"pod={self.name}_{self.namespace}({self.uid})",
                }
            }
            log.info(
                "container back-off",
                pod=f"{self.namespace}/{self.name}",
                container=st.name,
                exit_code=rc,
                reason=reason,
                backoff=backoff,
            )
            await self.write_status()
            await self._sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            st.restart_count += 1
        return False

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _container_spec(self, c: Obj, plan: ImagePlan, volumes: dict[str, str]) -> ContainerSpec:
        ident = run_as(self.spec, c, f"{self.name}_{self.namespace}({self.uid})")
        env = await self._env(c, plan)
        command = c.get("command") or plan.entrypoint
        argv = [expand(a, env) for a in [*command, *(c.get("args") or [])]]
        mounts = list(plan.mounts)
        for m in c.get("volumeMounts") or []:
            if m["name"] not in volumes:
                raise ConfigError(f'volumeMount "{m["name"]}": no volume of that name in the pod')
            src = volumes[m["name"]]
            if m.get("subPath"):
                src = subpath(src, m["subPath"])
            mounts.append((src, m["mountPath"], bool(m.get("readOnly"))))
        return ContainerSpec(
            argv=argv,
            env=env,
            scratch=str(self.dir / "rootfs" / c["name"]),
            hostname=self.spec.get("hostname") or self.name,
            workdir=c.get("workingDir") or "/",
            mounts=mounts,
            shared=_shared_caches(),
            image_paths=list(dict.fromkeys([*plan.paths, KAITO_SOURCE])),
            shm=str(self._pod_shm()),
            user=ident.user,
            group=ident.group,
            groups=ident.groups,
            capabilities=ident.capabilities,
            read_only_root=ident.read_only_root,
        )

    def _pod_shm(self) -> Path:
        """The pod's /dev/shm, one folder its containers share (a volume name cannot hold "_")."""
        shm: Path = self.shm / "_dev_shm"
        shm.mkdir(parents=True, exist_ok=True)
        self.shm.chmod(0o700)  # the pod's memory volumes: not for the host's other users
        shm.chmod(0o1777)
        return shm

    def log_path(self, container: str, restart: int) -> Path:
        return self.dir / "logs" / container / f"{restart}.log"

    async def _run_once(self, c: Obj, st: ContainerState, spec: ContainerSpec, init: bool) -> tuple[int, str]:
        assert self.net is not None
        logf = self.log_path(st.name, st.restart_count)
        logf.parent.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / f"{st.name}.spec.json"
        write_spec(spec, spec_file)
        _mkdir(Path(spec.scratch))
        with logf.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *launch_argv(self.net.netns, self.net.ipcns, spec_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent,
            )
        st.proc = proc
        self._record_pids()
        st.run_id = f"{self.uid}-{st.name}-{st.restart_count}"
        started_at = now()
        st.state = {"running": {"startedAt": started_at}}
        has_startup = bool(c.get("startupProbe")) and not init
        st.started = not has_startup
        st.ready = not init and not c.get("readinessProbe") and not has_startup
        await self.write_status()
        killed: list[str] = []
        probes = [] if init else self._probe_tasks(c, st, proc, killed)
        rc = await proc.wait()
        for t in probes:
            t.cancel()
        st.ready = False
        st.started = False
        if rc < 0:
            rc = 128 - rc
        reason = "Completed" if rc == 0 else "Error"
        term: Obj = {
            "exitCode": rc,
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": now(),
            "containerID": f"kaito-local://{st.run_id}",
        }
        if rc != 0:
            tail = _tail(logf)
            if killed:
                term["message"] = killed[0]
            elif tail:
                term["message"] = tail
        st.state = {"terminated": term}
        st.proc = None
        await self.write_status()
        return rc, reason

    # ----- probes

    def _probe_tasks(
        self, c: Obj, st: ContainerState, proc: asyncio.subprocess.Process, killed: list[str]
    ) -> list[asyncio.Task[None]]:
        started = asyncio.Event()
        if not c.get("startupProbe"):
            started.set()

        async def kill(why: str) -> None:
            killed.append(why)
            log.info("container restart", pod=f"{self.namespace}/{self.name}", container=st.name, why=why)
            await _signal_container(proc, signal.SIGTERM)
            grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

        async def startup(p: Obj) -> None:
            if await self._probe_loop(c, p, proc, until_success=True):
                st.started = True
                if not c.get("readinessProbe"):
                    st.ready = True
                started.set()
                await self.write_status()
            else:
                await kill(f"Startup probe failed {p.get('failureThreshold', 3)} times")

        async def liveness(p: Obj) -> None:
            await started.wait()
            if not await self._probe_loop(c, p, proc, until_success=False):
                await kill(f"Liveness probe failed {p.get('failureThreshold', 3)} times")

        async def readiness(p: Obj) -> None:
            await started.wait()
            await self._probe_loop(c, p, proc, until_success=False, readiness=st)

        tasks = []
        for key, fn in (
            ("startupProbe", startup),
            ("livenessProbe", liveness),
            ("readinessProbe", readiness),
        ):
            if c.get(key):
                tasks.append(asyncio.create_task(fn(c[key])))
        return tasks

    async def _probe_loop(
        self,
        c: Obj,
        p: Obj,
        proc: asyncio.subprocess.Process,
        *,
        until_success: bool,
        readiness: ContainerState | None = None,
    ) -> bool:
        """Probe every periodSeconds. ``until_success``: True at the first success, False after
        failureThreshold failures in a row (startup). Otherwise run until failureThreshold
        failures (liveness: returns False) or forever, flipping ``readiness.ready``."""
        await asyncio.sleep(float(p.get("initialDelaySeconds", 0)))
        period = float(p.get("periodSeconds", 10))
        fail_limit = int(p.get("failureThreshold", 3))
        ok_limit = int(p.get("successThreshold", 1))
        fails = oks = 0
        while proc.returncode is None:
            ok = await self._probe_once(c, p, proc)
            fails, oks = (0, oks + 1) if ok else (fails + 1, 0)
            if until_success and ok:
                return True
            if readiness is not None:
                want = True if oks >= ok_limit else (False if fails >= fail_limit else readiness.ready)
                if want != readiness.ready:
                    readiness.ready = want
                    await self.write_status()
            elif fails >= fail_limit:
                return False
            await asyncio.sleep(period)
        return False

    async def _probe_once(self, c: Obj, p: Obj, proc: asyncio.subprocess.Process) -> bool:
        timeout = float(p.get("timeoutSeconds", 1))
        try:
            if "httpGet" in p:
                h = p["httpGet"]
                port = _port(c, h.get("port"))
                scheme = str(h.get("scheme", "HTTP")).lower()
                url = f"{scheme}://{h.get('host') or self.ip}:{port}{h.get('path', '/')}"
                headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
                async with self.http.get(
                    url,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                    ssl=False,
                    allow_redirects=False,
                ) as resp:
                    return 200 <= resp.status < 400
            if "tcpSocket" in p:
                port = _port(c, p["tcpSocket"].get("port"))
                _, writer = await asyncio.wait_for(asyncio.open_connection(self.ip, port), timeout)
                writer.close()
                return True
            if "exec" in p:
                pid = container_pid(proc.pid)
                if pid is None:
                    return False
                env = dict(self.resolver_env(c))
                ident = run_as(self.spec, c, f"{self.name}_{self.namespace}({self.uid})")
                argv = unprivileged_argv(ident.user, ident.group, ident.groups, list(p["exec"]["command"]))
                return await run_in(pid, argv, env, timeout) == 0
        except (OSError, TimeoutError, aiohttp.ClientError, ConfigError):
            return False
        return False

    def resolver_env(self, c: Obj) -> dict[str, str]:
        with contextlib.suppress(ImagePullError):
            return self.resolver.resolve(c.get("image", ""), []).env
        return {"PATH": "/usr/bin:/bin"}


def _port(c: Obj, port: Any) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in c.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise OSError(f"probe port {port!r} is not a port of container {c['name']}")


async def _signal_container(proc: asyncio.subprocess.Process, sig: int) -> None:
    """Signal the container's PID 1 (inside its PID namespace), not the ``unshare`` wrapper."""
    pid = container_pid(proc.pid)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_bytes()[-4096:].decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _mkdir(path: Path, mode: int | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if mode is not None:
        path.chmod(mode)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, data, 0o600)


def secret_file_mode(requested: int, *, group: bool = False, shared: bool = False) -> int:
    """A Secret volume file's mode on the local node: owner read (and execute, if asked), never
    write. The apiserver stores ``defaultMode: 0644`` on every pod that does not set one, so the
    requested mode cannot say whether the author wanted others to read; the file is owned by the
    user the pod's containers run as, so owner-only takes nothing from them. The default becomes
    0400, as a Secret should be on a machine shared with other users. ``group``: the pod's fsGroup
    owns it and may read (the kubelet's fsGroup); ``shared``: containers of several users without
    an fsGroup, so the requested read bits stay, as on a real node."""
    mode = (requested & 0o500) or 0o400
    if group:
        mode |= 0o040
    if shared:
        mode |= requested & 0o044
    return mode


def _shared_caches() -> list[str]:
    """SHARED_CACHES, made if missing (a bind needs its source)."""
    for cache in SHARED_CACHES:
        Path(cache).mkdir(parents=True, exist_ok=True)
    return list(SHARED_CACHES)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """Give a volume the pod's user and group (see PodWorker._volume_owner); symlinks untouched."""
    if (uid, gid) == (0, 0):
        return
    for dirpath, _dirs, files in os.walk(top):
        os.chown(dirpath, uid, gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
