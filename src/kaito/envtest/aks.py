"""An AKS emulator: the Azure Resource Manager agent-pool API of one managed cluster, on loopback.

Why emulate: kaito's ``aks`` CloudProvider talks to AKS through the real Azure SDK
(``azure-mgmt-containerservice``), and tests cannot reach Azure. The emulator speaks the same
REST protocol over TLS, so the SDK's own pipeline (bearer-token policy, retry policy,
long-running-operation pollers) runs unmodified:

- ``PUT .../managedClusters/{c}/agentPools/{p}`` answers ``201`` with ``provisioningState:
  Creating`` and an ``Azure-AsyncOperation`` URL; the operation reads ``InProgress`` until its
  delay passes, then ``Succeeded``, or ``Failed`` with an ARM error body (``QuotaExceeded``,
  ``SkuNotAvailable``, ...);
- ``GET`` returns the pool with its ``provisioningState``, ``404 NotFound`` once gone;
- ``DELETE`` answers ``202`` with a ``Location`` URL that reads ``202`` until done, then ``204``;
- an Entra-style token endpoint (``POST /{tenant}/oauth2/v2.0/token``) lets ``azure-identity``
  credentials run for real; every ARM call must carry a token it issued.

As a pool succeeds the emulator registers its node as a kwok Node through the cluster's API
(admin client certificate, plain REST), with the labels AKS puts on GPU nodes; deleting the
pool deletes the node. Tests switch quota, delays and one-off faults (429 with Retry-After, 5xx,
synchronous refusals) per test. Part of envtest: it imports nothing else from kaito.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, TCPConnector, web

from kaito.envtest.cluster import LOOPBACK, Cluster

API_PREFIX = (
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{cluster}"
)
_POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")


@dataclass(frozen=True)
class VmSize:
    """What a VM size brings to a node; the caller fills these from its SKU table."""

    gpus: int
    cpu: int = 8
    memory_gib: int = 64
    gpu_product: str = "NVIDIA-GPU"


#: ``Fault.status`` that answers nothing: the connection is cut (reset) once the request is read.
CUT = 0


@dataclass
class Fault:
    """A one-off (or ``times``) answer that replaces the real one for matching requests.

    ``status`` :data:`CUT` answers with no response at all: the TLS connection is aborted, which
    the client sees as a reset (what a dropped NAT entry or a restarting front door does).
    """

    method: str
    path_contains: str
    status: int
    code: str = "InternalServerError"
    message: str = "injected fault"
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1


@dataclass
class _Operation:
    id: str
    kind: str  # create | delete
    pool: str
    started: float
    done_at: float
    error: dict[str, str] | None = None
    finished: bool = False


@dataclass
class _Pool:
    name: str
    properties: dict[str, Any]
    state: str
    created: float
    node: str = ""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _arm_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


class AksEmulator:
    """One managed cluster's agent pools. Use ``async with AksEmulator(cluster, vm_sizes)``."""

    def __init__(
        self,
        cluster: Cluster,
        vm_sizes: Mapping[str, VmSize],
        *,
        subscription: str = "00000000-0000-0000-0000-000000000000",
        resource_group: str = "kaito-rg",
        cluster_name: str = "kaito-aks",
        location: str = "eastus",
        lro_delay: float = 0.0,
        delete_delay: float = 0.0,
        quota_gpus: int | None = None,
    ) -> None:
        self.cluster = cluster
        self.vm_sizes = {k.lower(): (k, v) for k, v in vm_sizes.items()}
        self.subscription = subscription
        self.resource_group = resource_group
        self.cluster_name = cluster_name
        self.location = location
        self.lro_delay = lro_delay
        self.delete_delay = delete_delay
        #: GPUs all pools together may hold; None is unlimited. A create beyond it fails its
        #: operation with ``QuotaExceeded`` (flip it back and the next create succeeds).
        self.quota_gpus = quota_gpus
        #: False: VMs never join the cluster (a broken image): pools succeed, no Node appears.
        self.register_nodes = True
        #: GPUs the registered nodes advertise; None: the VM size's. 0 models a node whose GPU
        #: driver never comes up.
        self.node_gpus: int | None = None
        #: The next creates fail their operation with this (code, message).
        self.fail_creates: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self.pools: dict[str, _Pool] = {}
        self.operations: dict[str, _Operation] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.tokens: set[str] = set()
        #: Called with the pool name after a PUT was accepted (tests kill a controller here).
        self.on_pool_put: Callable[[str], None] | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._kube: ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.cert, self.key = cluster.serving_cert("aks-emulator")

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def ca_cert(self) -> Path:
        assert self.cluster.pki is not None
        return self.cluster.pki.ca_cert

    @property
    def node_resource_group(self) -> str:
        return f"MC_{self.resource_group}_{self.cluster_name}_{self.location}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        base = API_PREFIX.format(sub="{sub}", rg="{rg}", cluster="{cluster}")
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_put(base + "/agentPools/{pool}", self._put_pool)
        app.router.add_get(base + "/agentPools/{pool}", self._get_pool)
        app.router.add_delete(base + "/agentPools/{pool}", self._delete_pool)
        app.router.add_get(base + "/agentPools", self._list_pools)
        ops = "/subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{loc}"
        app.router.add_get(ops + "/operations/{op}", self._op_status)
        app.router.add_get(ops + "/operationresults/{op}", self._op_result)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        assert self.cluster.pki is not None
        kctx = ssl.create_default_context(cafile=str(self.cluster.pki.ca_cert))
        kctx.load_cert_chain(str(self.cluster.pki.admin_cert), str(self.cluster.pki.admin_key))
        self._kube = ClientSession(connector=TCPConnector(ssl=kctx))

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._kube is not None:
            await self._kube.close()

    async def __aenter__(self) -> AksEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- test switches ---------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        self.faults.append(fault)

    def pool_names(self) -> list[str]:
        return sorted(self.pools)

    def add_pool(
        self, name: str, vm_size: str, *, tags: dict[str, str] | None = None, age: float = 0.0
    ) -> None:
        """Make a Succeeded pool directly (an orphan left by a crash, a system pool)."""
        props = {"count": 1, "vmSize": vm_size, "mode": "User", "osType": "Linux", "tags": tags or {}}
        pool = _Pool(name, props, "Succeeded", time.time() - age)
        self.pools[name] = pool
        self._spawn(self._register_node(pool))

    async def remove_all(self) -> None:
        """Drop every pool and its Node (test teardown: leave the shared cluster as found)."""
        for pool in list(self.pools.values()):
            await self._delete_node(pool)
        self.pools.clear()

    def requests_to(self, method: str, fragment: str = "") -> int:
        return sum(1 for m, p, _ in self.requests if m == method and fragment in p)

    # -- HTTP ----------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        path = request.path
        resp: web.StreamResponse
        if not path.endswith("/oauth2/v2.0/token"):
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
                resp = _arm_error(
                    401, "InvalidAuthenticationToken", "The access token is missing or invalid."
                )
                self.requests.append((request.method, path, resp.status))
                return resp
            for fault in self.faults:
                if fault.times > 0 and fault.method == request.method and fault.path_contains in path:
                    fault.times -= 1
                    if fault.status == CUT:
                        self.requests.append((request.method, path, CUT))
                        if request.transport is not None:
                            request.transport.abort()
                        # Nothing reaches the client: the transport is gone before this is sent.
                        return web.Response(status=500)
                    resp = _arm_error(fault.status, fault.code, fault.message, fault.headers)
                    self.requests.append((request.method, path, resp.status))
                    return resp
            self.faults = [f for f in self.faults if f.times > 0]
        resp = await handler(request)
        self.requests.append((request.method, path, resp.status))
        return resp

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials" or not form.get("client_id"):
            return web.json_response(
                {"error": "invalid_request", "error_description": "client_credentials grant expected"},
                status=400,
            )
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        )

    def _check_cluster(self, request: web.Request) -> web.Response | None:
        m = request.match_info
        if (m["sub"], m["rg"].lower(), m["cluster"]) != (
            self.subscription,
            self.resource_group.lower(),
            self.cluster_name,
        ):
            return _arm_error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.ContainerService/managedClusters/{m['cluster']}' under "
                f"resource group '{m['rg']}' was not found.",
            )
        if not request.query.get("api-version"):
            return _arm_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        return None

    def _pool_json(self, pool: _Pool) -> dict[str, Any]:
        return {
            "id": (
                API_PREFIX.format(sub=self.subscription, rg=self.resource_group, cluster=self.cluster_name)
                + f"/agentPools/{pool.name}"
            ),
            "name": pool.name,
            "type": "Microsoft.ContainerService/managedClusters/agentPools",
            "properties": {
                **pool.properties,
                "provisioningState": pool.state,
                "powerState": {"code": "Running"},
                "orchestratorVersion": "1.37.2",
                "currentOrchestratorVersion": "1.37.2",
                "nodeImageVersion": "AKSUbuntu-2204gen2containerd-202501.01.0",
                "type": "VirtualMachineScaleSets",
                "maxPods": 110,
            },
        }

    def _op_url(self, op: _Operation, kind: str) -> str:
        return (
            f"{self.endpoint}/subscriptions/{self.subscription}/providers/Microsoft.ContainerService/"
            f"locations/{self.location}/{kind}/{op.id}?api-version=2016-03-30"
        )

    def _gpus_in_use(self) -> int:
        total = 0
        for p in self.pools.values():
            if p.state in ("Creating", "Succeeded", "Updating"):
                total += self.vm_sizes.get(str(p.properties.get("vmSize", "")).lower(), ("", VmSize(0)))[
                    1
                ].gpus
        return total

    async def _put_pool(self, request: web.Request) -> web.Response:
        bad = self._check_cluster(request)
        if bad is not None:
            return bad
        name = request.match_info["pool"]
        if not _POOL_NAME.match(name):
            return _arm_error(
                400,
                "InvalidParameter",
                f"The value of parameter agentPoolProfile.name is invalid: '{name}'. Agent pool names "
                "must start with a lowercase letter, have max length of 12, and only have "
                "characters a-z0-9.",
            )
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _arm_error(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            )
        props = dict(body.get("properties") or {})
        vm_size = str(props.get("vmSize") or "")
        known = self.vm_sizes.get(vm_size.lower())
        existing = self.pools.get(name)
        if existing is not None and existing.state in ("Creating", "Deleting", "Updating"):
            return _arm_error(
                409,
                "OperationNotAllowed",
                f"Operation is not allowed because there's an in progress {existing.state.lower()} "
                f"operation on agent pool {name}.",
            )
        now = time.time()
        op = _Operation(uuid.uuid4().hex, "create", name, now, now + self.lro_delay)
        if known is None:
            op.error = {
                "code": "SkuNotAvailable",
                "message": f"The requested VM size {vm_size} is not available in the current region "
                f"{self.location}.",
            }
        elif self.fail_creates:
            code, message = self.fail_creates.pop(0)
            op.error = {"code": code, "message": message}
        elif self.quota_gpus is not None:
            in_use = self._gpus_in_use() - (self._pool_gpus(existing) if existing else 0)
            need = known[1].gpus * int(props.get("count") or 1)
            if in_use + need > self.quota_gpus:
                op.error = {
                    "code": "QuotaExceeded",
                    "message": f"Operation could not be completed as it results in exceeding approved "
                    f"{known[0]} GPU quota. Location: {self.location}, Current Limit: "
                    f"{self.quota_gpus}, Current Usage: {in_use}, Additional Required: {need}.",
                }
        props.setdefault("count", 1)
        pool = _Pool(name, props, "Creating", existing.created if existing else now)
        self.pools[name] = pool
        self.operations[op.id] = op
        self._spawn(self._finish(op))
        if self.on_pool_put is not None:
            self.on_pool_put(name)
        status = 200 if existing is not None else 201
        return web.json_response(
            self._pool_json(pool),
            status=status,
            headers={"Azure-AsyncOperation": self._op_url(op, "operations")},
        )

    def _pool_gpus(self, pool: _Pool) -> int:
        return self.vm_sizes.get(str(pool.properties.get("vmSize", "")).lower(), ("", VmSize(0)))[1].gpus

    async def _get_pool(self, request: web.Request) -> web.Response:
        bad = self._check_cluster(request)
        if bad is not None:
            return bad
        pool = self.pools.get(request.match_info["pool"])
        if pool is None:
            return _arm_error(404, "NotFound", f"Agent Pool '{request.match_info['pool']}' not found.")
        return web.json_response(self._pool_json(pool))

    async def _list_pools(self, request: web.Request) -> web.Response:
        bad = self._check_cluster(request)
        if bad is not None:
            return bad
        return web.json_response({"value": [self._pool_json(p) for p in self.pools.values()]})

    async def _delete_pool(self, request: web.Request) -> web.Response:
        bad = self._check_cluster(request)
        if bad is not None:
            return bad
        name = request.match_info["pool"]
        pool = self.pools.get(name)
        if pool is None:
            return web.Response(status=204)
        now = time.time()
        existing = [
            o for o in self.operations.values() if o.pool == name and o.kind == "delete" and not o.finished
        ]
        op = (
            existing[0]
            if existing
            else _Operation(uuid.uuid4().hex, "delete", name, now, now + self.delete_delay)
        )
        if not existing:
            pool.state = "Deleting"
            self.operations[op.id] = op
            self._spawn(self._finish(op))
        return web.Response(
            status=202, headers={"Location": self._op_url(op, "operationresults"), "Retry-After": "1"}
        )

    async def _op_status(self, request: web.Request) -> web.Response:
        op = self.operations.get(request.match_info["op"])
        if op is None:
            return _arm_error(404, "NotFound", "operation not found")
        body: dict[str, Any] = {"id": request.path, "name": op.id, "startTime": _iso(op.started)}
        if not op.finished:
            body["status"] = "InProgress"
        elif op.error is not None:
            body.update(status="Failed", endTime=_iso(op.done_at), error=dict(op.error))
        else:
            body.update(status="Succeeded", endTime=_iso(op.done_at))
        return web.json_response(body)

    async def _op_result(self, request: web.Request) -> web.Response:
        op = self.operations.get(request.match_info["op"])
        if op is None:
            return _arm_error(404, "NotFound", "operation not found")
        if not op.finished:
            return web.Response(
                status=202, headers={"Location": self._op_url(op, "operationresults"), "Retry-After": "1"}
            )
        return web.Response(status=204)

    # -- the cloud behind it --------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, op: _Operation) -> None:
        await asyncio.sleep(max(op.done_at - time.time(), 0))
        pool = self.pools.get(op.pool)
        if op.kind == "create":
            if pool is not None and pool.state == "Creating":  # not when a delete overtook it
                if op.error is None:
                    await self._register_node(pool)
                    pool.state = "Succeeded"
                else:
                    pool.state = "Failed"
        else:
            if pool is not None:
                await self._delete_node(pool)
                self.pools.pop(op.pool, None)
        op.done_at = time.time()
        op.finished = True

    def node_name(self, pool: str) -> str:
        digits = int(hashlib.sha256(f"{self.cluster_name}/{pool}".encode()).hexdigest(), 16) % 10**8
        return f"aks-{pool}-{digits:08d}-vmss000000"

    def provider_id(self, pool: str) -> str:
        vmss = self.node_name(pool)[: -len("000000")]
        return (
            f"azure:///subscriptions/{self.subscription}/resourceGroups/{self.node_resource_group.lower()}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/0"
        )

    async def _register_node(self, pool: _Pool) -> None:
        if not self.register_nodes:
            return
        vm_size = str(pool.properties.get("vmSize", ""))
        canonical, size = self.vm_sizes.get(vm_size.lower(), (vm_size, VmSize(0)))
        if self.node_gpus is not None:
            size = VmSize(self.node_gpus, size.cpu, size.memory_gib, size.gpu_product)
        name = self.node_name(pool.name)
        labels = {
            **(pool.properties.get("nodeLabels") or {}),
            "agentpool": pool.name,
            "kubernetes.azure.com/agentpool": pool.name,
            "kubernetes.azure.com/cluster": self.node_resource_group,
            "kubernetes.azure.com/mode": "user",
            "kubernetes.azure.com/role": "agent",
            "kubernetes.azure.com/os-sku": "Ubuntu",
            "kubernetes.azure.com/node-image-version": "AKSUbuntu-2204gen2containerd-202501.01.0",
            "node.kubernetes.io/instance-type": canonical,
            "beta.kubernetes.io/instance-type": canonical,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/region": self.location,
            "topology.kubernetes.io/zone": "0",
        }
        if size.gpus:
            labels["kubernetes.azure.com/accelerator"] = "nvidia"
            labels.update(
                {
                    "nvidia.com/gpu.product": size.gpu_product,
                    "nvidia.com/gpu.count": str(size.gpus),
                    "nvidia.com/gpu.present": "true",
                }
            )
        taints = []
        for t in pool.properties.get("nodeTaints") or ():
            kv, _, effect = str(t).partition(":")
            key, _, value = kv.partition("=")
            taints.append({"key": key, "value": value, "effect": effect or "NoSchedule"})
        cap = {
            "cpu": str(size.cpu),
            "memory": f"{size.memory_gib}Gi",
            "pods": "110",
            "ephemeral-storage": "2048Gi",
        }
        if size.gpus:
            cap["nvidia.com/gpu"] = str(size.gpus)
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"providerID": self.provider_id(pool.name), "taints": taints},
            "status": {"capacity": cap, "allocatable": dict(cap)},
        }
        await self._kube_call("POST", "/api/v1/nodes", node, ok=(201, 409))
        pool.node = name

    async def _delete_node(self, pool: _Pool) -> None:
        if not pool.node:
            return
        await self._kube_call(
            "DELETE", f"/api/v1/nodes/{self.node_name(pool.name)}", None, ok=(200, 202, 404)
        )

    async def _kube_call(self, method: str, path: str, body: Any, ok: tuple[int, ...]) -> None:
        assert self._kube is not None
        for attempt in range(20):
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                async with self._kube.request(method, self.cluster.server + path, json=body) as resp:
                    if resp.status in ok:
                        return
                    text = await resp.text()
                    if resp.status < 500 and resp.status != 429:
                        raise RuntimeError(f"AKS emulator: {method} {path} -> {resp.status}: {text[:300]}")
            await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))
        raise RuntimeError(f"AKS emulator: {method} {path} kept failing")
