"""The real operator as the reliability suites run it, and the checks they end with.

Processes: ``python -m kaito.cli.main controller --node-provisioner gpu-provisioner`` and
``python -m kaito.cli.main node-provisioner --cloud kwok``, each with its own client-certificate
user, so the audit log says which process made each write. Reads go through the real kubectl.
Nothing here sleeps a fixed time and then counts: every wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kaito.envtest import Cluster

# The fault proxy of the informer tests is reused, not repeated.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "integration" / "runtime"))
from faultproxy import Chunks, Cut, FaultProxy, Seen  # isort: skip

WS_LABEL = "kaito.sh/workspace"
NS_LABEL = "kaito.sh/workspacenamespace"
KWOK_CLOUD_LABEL = "kaito.sh/kwok-cloud"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], what: str, timeout: float, interval: float = 0.5) -> Any:
    """Poll ``check`` until truthy; fail naming ``what`` and the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def load() -> float:
    return round(os.getloadavg()[0], 1)


# ---------------------------------------------------------------------------- the processes


@dataclass
class KaitoProcess:
    """One kaito operator process; ``start`` again after a kill is a restart (new ports)."""

    role: str  # "controller" | "node-provisioner"
    kubeconfig: Path
    logdir: Path
    name: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    health_port: int = 0
    starts: int = 0
    kills: int = 0
    _log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.logdir / f"{self.name}.log"

    def start(self) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        argv = [
            sys.executable,
            "-m",
            "kaito.cli.main",
            self.role,
            "--kubeconfig",
            str(self.kubeconfig),
            "--metrics-bind-address",
            f"127.0.0.1:{self.metrics_port}",
            "--health-probe-bind-address",
            f"127.0.0.1:{self.health_port}",
            *self.args,
        ]
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n==== start {self.starts + 1}: {' '.join(argv)}\n".encode())
        self._log.flush()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")} | self.env
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no Lease release, requests in flight cut."""
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(30)
        self.kills += 1

    def stop(self, timeout: float = 60.0) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _get(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), ""
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        if not self.alive():
            raise AssertionError(
                f"{self.name} exited ({self.popen and self.popen.returncode}):\n{self.log_tail()}"
            )
        return self._get(self.health_port, "/readyz")[0] == 200

    def metric(self, name: str, **labels: str) -> float | None:
        """Sum of the samples of ``name`` whose labels include ``labels``; None if unreachable."""
        code, text = self._get(self.metrics_port, "/metrics")
        if code != 200:
            return None
        total = 0.0
        for line in text.splitlines():
            if not (line.startswith(name + "{") or line.startswith(name + " ")):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise AssertionError(f"no VmRSS for {self.name}")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def tracebacks(self) -> int:
        try:
            return self.log_path.read_text(errors="replace").count("Traceback (most recent call last)")
        except OSError:
            return 0


def admin_user_kubeconfig(cluster: Cluster, user: str) -> Path:
    """A client certificate in system:masters: full rights, but its own name in the audit log."""
    return cluster.user_kubeconfig(user, ["system:masters"])


def controller(cluster: Cluster, logdir: Path, name: str, *extra: str) -> KaitoProcess:
    return KaitoProcess(
        "controller",
        admin_user_kubeconfig(cluster, f"kaito-{name}"),
        logdir,
        name,
        ["--node-provisioner", "gpu-provisioner", "--log-format", "json", *extra],
    )


def node_provisioner(
    cluster: Cluster, logdir: Path, name: str = "node-provisioner", aks: AksInThread | None = None
) -> KaitoProcess:
    """kaito's node-provisioner on the kwok cloud, or on the AKS emulator when ``aks`` is given."""
    # Orphan sweeps every 2 s with 5 s of grace, so an instance leaked by a kill is collected
    # within the suites' deadlines (production: 30 s / 120 s).
    args = ["--gc-grace", "5", "--gc-interval", "2", "--error-retry", "1"]
    env: dict[str, str] = {}
    if aks is None:
        args += ["--cloud", "kwok"]
    else:
        emu = aks.emulator
        args += [
            "--cloud", "aks",
            "--subscription-id", emu.subscription,
            "--resource-group", emu.resource_group,
            "--cluster-name", emu.cluster_name,
            "--arm-endpoint", emu.endpoint,
            "--ca-bundle", str(emu.ca_cert),
            "--polling-interval", "0.2",
        ]  # fmt: skip
        env = {
            "AZURE_TENANT_ID": "tenant-1",
            "AZURE_CLIENT_ID": "client-1",
            "AZURE_CLIENT_SECRET": "secret-1",
            "AZURE_AUTHORITY_HOST": emu.endpoint,
        }
    return KaitoProcess(
        "node-provisioner", admin_user_kubeconfig(cluster, f"kaito-{name}"), logdir, name, args, env
    )


class AksInThread:
    """kaito.envtest.aks's AKS emulator (the ARM API over loopback TLS; its agent pools register
    kwok Nodes) on an event loop of its own thread, for the synchronous suites."""

    def __init__(self, cluster: Cluster) -> None:
        from kaito.envtest.aks import AksEmulator, VmSize
        from kaito.nodes import node_shape
        from kaito.presets import list_skus

        sizes = {}
        for sku in list_skus("azure"):
            shape = node_shape(sku.name)
            sizes[sku.name] = VmSize(shape.gpus, shape.cpu, shape.memory_gib, shape.gpu_product)
        self.emulator = AksEmulator(cluster, sizes)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="aks-emulator", daemon=True)

    def _call(self, coro: Any, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> AksInThread:
        self.thread.start()
        self._call(self.emulator.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self.emulator.remove_all())
            self._call(self.emulator.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)

    def pool_puts(self) -> int:
        """Agent-pool creates the emulator accepted (each is one node)."""

        async def count() -> int:
            return self.emulator.requests_to("PUT", "/agentPools/")

        return int(self._call(count()))

    def pools(self) -> list[str]:
        async def names() -> list[str]:
            return self.emulator.pool_names()

        return list(self._call(names()))


NODECLAIMS_PATH = "/apis/karpenter.sh/v1/nodeclaims"


class ClaimFaults:
    """What the proxy in front of the controller does to its NodeClaim traffic, armed from the
    suite's thread (every field is only changed under ``lock``).

    lost response: the next NodeClaim create the apiserver accepts (201) has its connection
    dropped before one byte of the answer is sent: the claim exists, the controller saw an error.
    lagging informer: the bytes of every NodeClaim watch stream are held until ``hold_until``,
    then released in order, so the controller's NodeClaim cache trails the server meanwhile."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lose_creates = 0  # armed, not yet fired
        self.lost: list[str] = []  # names of the claims whose create answer was dropped
        self.hold_until = 0.0  # time.monotonic()
        self.held_chunks = 0  # watch chunks that were held back
        self.lags = 0
        #: When each fault was armed or fired (UTC, as the audit log and the process logs say).
        self.log: list[str] = []

    def _note(self, what: str) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S.%f")[:-3]
        self.log.append(f"{stamp} {what}")

    def arm_lost_create(self) -> None:
        with self.lock:
            self.lose_creates += 1
            self._note("lost response armed")

    def lag_watch(self, seconds: float) -> None:
        with self.lock:
            self.hold_until = max(self.hold_until, time.monotonic() + seconds)
            self.lags += 1
            self._note(f"NodeClaim watch held for {seconds:.1f}s")

    def armed(self) -> int:
        with self.lock:
            return self.lose_creates

    async def fault(self, seen: Seen, chunks: Chunks) -> Chunks | None:
        if seen.path != NODECLAIMS_PATH:
            return None
        if seen.is_watch:
            return self._held(chunks)
        if seen.method == "POST" and seen.status == 201:
            with self.lock:
                fire = self.lose_creates > 0
                if fire:
                    self.lose_creates -= 1
            if fire:
                body = b"".join([c async for c in chunks])
                meta = json.loads(body)["metadata"]
                with self.lock:
                    self.lost.append(str(meta["name"]))
                    ws = (meta.get("labels") or {}).get(WS_LABEL)
                    self._note(f"lost response: NodeClaim {meta['name']} of {ws} created, answer dropped")
                raise Cut
        return None

    async def _held(self, chunks: Chunks) -> Chunks:
        async for chunk in chunks:
            held = False
            while (wait := self.hold_until - time.monotonic()) > 0:
                held = True
                await asyncio.sleep(min(wait, 0.5))  # a later lag_watch may extend the hold
            if held:
                with self.lock:
                    self.held_chunks += 1
            yield chunk


class ApiProxyInThread:
    """The loopback fault proxy (tests/integration/runtime/faultproxy.py) on an event loop of its
    own thread, in front of the apiserver for one process. It forwards with that process's own
    client certificate, so the audit log still names the process; the process gets a kubeconfig
    for the proxy (plain HTTP on loopback) instead of its own."""

    def __init__(self, upstream_kubeconfig: Path, faults: ClaimFaults) -> None:
        from kaito.runtime._internal.kubeconfig import load_kubeconfig

        self.upstream_kubeconfig = upstream_kubeconfig
        self.faults = faults
        self.proxy = FaultProxy(load_kubeconfig([upstream_kubeconfig]), fault=faults.fault)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="api-proxy", daemon=True)

    def _call(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ApiProxyInThread:
        self.thread.start()
        self._call(self.proxy.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self._shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)

    async def _shutdown(self) -> None:
        """Stop the proxy, then end whatever it still serves (a held watch) before the loop goes."""
        self.faults.hold_until = 0.0
        await self.proxy.__aexit__()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def kubeconfig(self) -> Path:
        """A kubeconfig for the proxy, next to the upstream one."""
        path = self.upstream_kubeconfig.with_name(self.upstream_kubeconfig.name + "-proxied")
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{self.proxy.port}"}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        }
        path.write_text(json.dumps(doc))
        return path


# ---------------------------------------------------------------------------- kubectl reads


def kget(
    cluster: Cluster, resource: str, namespace: str | None = None, selector: str = ""
) -> list[dict[str, Any]]:
    args = ["get", resource, "-o", "json"]
    args += ["-n", namespace] if namespace else []
    args += ["-l", selector] if selector else []
    for attempt in range(5):
        proc = cluster.kubectl(*args, check=False, timeout=120)
        if proc.returncode == 0:
            return list(json.loads(proc.stdout).get("items") or [])
        time.sleep(0.5 * (attempt + 1))  # a loaded apiserver may time a list out; ask again
    raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")


def kubectl_ok(cluster: Cluster, *args: str, input: str | None = None) -> None:
    """A write through kubectl, retried on transient failures (timeouts under load)."""
    last = ""
    for attempt in range(5):
        proc = cluster.kubectl(*args, check=False, input=input, timeout=120)
        if proc.returncode == 0:
            return
        last = proc.stderr.strip()
        if "AlreadyExists" in last or "NotFound" in last:
            return  # a retried create/delete whose first try landed
        time.sleep(0.5 * (attempt + 1))
    raise AssertionError(f"kubectl {' '.join(args)} failed: {last}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return dict(c)
    return {}


def workspace_manifest(name: str, namespace: str, count: int) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace},
        "resource": {
            "count": count,
            "instanceType": "Standard_NC6s_v3",
            "labelSelector": {"matchLabels": {"apps": name}},
        },
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


def create_workspace(cluster: Cluster, name: str, namespace: str, count: int) -> None:
    kubectl_ok(cluster, "create", "-f", "-", input=json.dumps(workspace_manifest(name, namespace, count)))


def set_count(cluster: Cluster, name: str, namespace: str, count: int) -> None:
    patch = json.dumps({"resource": {"count": count}})
    kubectl_ok(cluster, "patch", "workspace", name, "-n", namespace, "--type", "merge", "-p", patch)


def delete_workspace(cluster: Cluster, name: str, namespace: str) -> None:
    kubectl_ok(cluster, "delete", "workspace", name, "-n", namespace, "--wait=false")


# ---------------------------------------------------------------------------- the audit log


@dataclass
class AuditWrite:
    user: str
    user_agent: str
    verb: str
    resource: str  # "nodeclaims", "workspaces/status", ...
    group: str
    namespace: str | None
    name: str | None
    code: int
    at: float  # requestReceivedTimestamp, epoch seconds
    labels: dict[str, str]  # of the created object (NodeClaim creates only)


class AuditTail:
    """Reads the apiserver's audit log incrementally (only writes are logged; see conftest)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.writes: list[AuditWrite] = []
        self._partial = b""

    def poll(self) -> list[AuditWrite]:
        new: list[AuditWrite] = []
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return new
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("stage") != "ResponseComplete" or ev.get("verb") not in WRITE_VERBS:
                continue
            ref = ev.get("objectRef") or {}
            res = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            at = datetime.datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00"))
            body = ev.get("requestObject") or {}
            new.append(
                AuditWrite(
                    user=(ev.get("user") or {}).get("username", ""),
                    user_agent=ev.get("userAgent", ""),
                    verb=ev["verb"],
                    resource=res,
                    group=ref.get("apiGroup", ""),
                    namespace=ref.get("namespace"),
                    name=ref.get("name") or (body.get("metadata") or {}).get("name"),
                    code=int((ev.get("responseStatus") or {}).get("code") or 0),
                    at=at.timestamp(),
                    labels=dict((body.get("metadata") or {}).get("labels") or {}),
                )
            )
        self.writes.extend(new)
        return new


class ClaimLedger:
    """Double-provisioning check: every NodeClaim create the apiserver accepted, per Workspace,
    against the node slots that Workspace was ever given (its first count plus every increase).
    A create beyond that is a second claim for a slot that already had one."""

    def __init__(self, audit: AuditTail, namespace: str) -> None:
        self.audit = audit
        self.namespace = namespace
        self.allowed: Counter[str] = Counter()
        self.created: dict[str, list[str]] = defaultdict(list)
        self.creators: Counter[str] = Counter()
        #: Per Workspace, its own writes and its claims' creates and deletes, as the audit log
        #: has them (time UTC, verb, name, user): the timeline a duplicate is reported with.
        self.history: dict[str, list[str]] = defaultdict(list)
        self._claim_of: dict[str, str] = {}

    def grant(self, workspace: str, slots: int) -> None:
        """Call before the write that asks for ``slots`` more nodes."""
        self.allowed[workspace] += max(slots, 0)

    def check(self) -> None:
        for w in self.audit.poll():
            stamp = datetime.datetime.fromtimestamp(w.at, datetime.UTC).strftime("%H:%M:%S.%f")[:-3]
            line = f"{stamp} {w.verb} {w.resource}/{w.name} {w.code} by {w.user}"
            if w.resource == "workspaces" and w.namespace == self.namespace and w.name:
                self.history[w.name].append(line)
            if w.resource == "nodeclaims" and w.verb == "delete" and w.name in self._claim_of:
                self.history[self._claim_of[w.name]].append(line)
            if w.resource != "nodeclaims" or w.verb != "create" or w.code != 201:
                continue
            if w.labels.get(NS_LABEL) != self.namespace:
                continue
            ws = w.labels.get(WS_LABEL, "?")
            self.created[ws].append(f"{w.name or '?'}@{stamp}")
            self.creators[w.user] += 1
            self._claim_of[w.name or "?"] = ws
            self.history[ws].append(line)
        over = {
            ws: (len(c), self.allowed[ws], c) for ws, c in self.created.items() if len(c) > self.allowed[ws]
        }
        if over:
            timeline = "\n".join(f"  {ws}:\n    " + "\n    ".join(self.history[ws]) for ws in over)
            raise AssertionError(
                f"duplicate NodeClaims (created, slots granted, names@UTC): {over}\n{timeline}"
            )

    @property
    def total(self) -> int:
        return sum(len(c) for c in self.created.values())


# ---------------------------------------------------------------------------- the end state


def end_state_problems(
    cluster: Cluster,
    namespace: str,
    live: dict[str, int],
    deleted: Iterable[str],
    aks: AksInThread | None = None,
) -> list[str]:
    """Everything that is not as it must be once the operator has converged; [] when clean.

    live: Workspace -> count; deleted: Workspaces that must be fully gone."""
    problems: list[str] = []
    deleted = set(deleted)
    workspaces = {w["metadata"]["name"]: w for w in kget(cluster, "workspaces.kaito.sh", namespace)}
    claims = [c for c in kget(cluster, "nodeclaims.karpenter.sh", selector=f"{NS_LABEL}={namespace}")]
    nodes = kget(cluster, "nodes", selector=f"{NS_LABEL}={namespace}")
    claims_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in claims:
        claims_of[(c["metadata"].get("labels") or {}).get(WS_LABEL, "?")].append(c)

    for name, count in sorted(live.items()):
        ws = workspaces.get(name)
        if ws is None:
            problems.append(f"{name}: live Workspace missing")
            continue
        ready = condition(ws, "WorkspaceReady")
        if ready.get("status") != "True":
            problems.append(
                f"{name}: WorkspaceReady={ready.get('status')} "
                f"({ready.get('reason')}: {ready.get('message')})"
            )
        gen = ws["metadata"].get("generation")
        seen = {ready.get("observedGeneration"), (ws.get("status") or {}).get("observedGeneration")}
        if seen - {None, gen}:
            problems.append(f"{name}: status for generation {sorted(seen - {None})}, spec is {gen}")
        mine = [c for c in claims_of.get(name, []) if not c["metadata"].get("deletionTimestamp")]
        good = [c for c in mine if condition(c, "Ready").get("status") == "True"]
        if len(mine) != count or len(good) != count:
            problems.append(f"{name}: {len(mine)} claims ({len(good)} Ready) for count {count}")
    for name in sorted(set(workspaces) - set(live)):
        why = "deleted" if name in deleted else "unexpected"
        problems.append(
            f"{name}: {why} Workspace still present "
            f"(finalizers {workspaces[name]['metadata'].get('finalizers')})"
        )
    for ws, cs in sorted(claims_of.items()):
        if ws not in live:
            problems.append(f"leaked NodeClaims of {ws}: {[c['metadata']['name'] for c in cs]}")
    claim_nodes = {(c.get("status") or {}).get("nodeName") or c["metadata"]["name"] for c in claims}
    for n in nodes:
        if n["metadata"]["name"] not in claim_nodes:
            problems.append(f"leaked Node {n['metadata']['name']} (claim gone)")
    if aks is not None:
        names = {c["metadata"]["name"] for c in claims}
        problems += [f"leaked agent pool {p} (claim gone)" for p in aks.pools() if p not in names]
    per_claim = Counter((n["metadata"].get("labels") or {}).get("kaito.sh/nodeclaim") for n in nodes)
    for claim, k in per_claim.items():
        if k > 1:
            problems.append(f"claim {claim} has {k} Nodes")
    # Owned objects whose Workspace is gone, and anything stuck in deletion.
    live_uids = {w["metadata"]["uid"] for n, w in workspaces.items() if n in live}
    for kind in ("statefulsets", "services", "configmaps", "controllerrevisions"):
        for obj in kget(cluster, kind, namespace):
            owners = [r for r in obj["metadata"].get("ownerReferences") or () if r.get("kind") == "Workspace"]
            if owners and not any(r.get("uid") in live_uids for r in owners):
                problems.append(f"leaked {kind}/{obj['metadata']['name']} (Workspace gone)")
    stuck = [
        f"{o.get('kind')}/{o['metadata']['name']} finalizers={o['metadata'].get('finalizers')}"
        for o in [*workspaces.values(), *claims, *nodes]
        if o["metadata"].get("deletionTimestamp")
    ]
    problems += [f"stuck in deletion: {s}" for s in stuck]
    return problems


def pod_problems(cluster: Cluster, namespace: str) -> list[str]:
    """Pods of the namespace that are not Running and Ready (for a non-convergence report)."""
    out = []
    for pod in kget(cluster, "pods", namespace):
        meta, st = pod["metadata"], pod.get("status") or {}
        if st.get("phase") == "Running" and condition(pod, "Ready").get("status") == "True":
            continue
        why = [f"{c['type']}={c['status']}({c.get('reason', '')})" for c in st.get("conditions") or ()]
        out.append(
            f"pod {meta['name']} on {(pod.get('spec') or {}).get('nodeName')}: {st.get('phase')} "
            f"deleting={bool(meta.get('deletionTimestamp'))} {' '.join(why)}"
        )
    return out


def wait_converged(
    cluster: Cluster,
    namespace: str,
    live: dict[str, int],
    deleted: Iterable[str],
    timeout: float,
    procs: Iterable[KaitoProcess] = (),
    ledger: ClaimLedger | None = None,
    aks: AksInThread | None = None,
) -> float:
    """Wait until ``end_state_problems`` is empty; returns the seconds it took. Fails at once on a
    dead process or a duplicate claim, and with the remaining problems at the deadline."""
    start = time.monotonic()
    deleted = set(deleted)
    last: list[str] = []
    while True:
        for p in procs:
            if not p.alive():
                raise AssertionError(f"{p.name} died:\n{p.log_tail()}")
        if ledger is not None:
            ledger.check()
        last = end_state_problems(cluster, namespace, live, deleted, aks)
        if not last:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            shown = "\n  ".join(last[:30] + pod_problems(cluster, namespace)[:20])
            raise AssertionError(f"not converged after {timeout:.0f}s ({len(last)} problems):\n  {shown}")
        time.sleep(2.0)


#: Every figure line of this session; conftest prints them in pytest's terminal summary, so they
#: show whether or not output is captured.
FIGURES: list[str] = []


def emit(figures: dict[str, Any]) -> None:
    """The suite's figures: one JSON line (stdout, the terminal summary, $KAITO_RELIABILITY_OUT)."""
    line = json.dumps(figures, sort_keys=False)
    FIGURES.append(line)
    print(f"\nRELIABILITY {line}")
    out = os.environ.get("KAITO_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")
