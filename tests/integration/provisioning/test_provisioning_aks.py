"""The ``aks`` CloudProvider (the real Azure SDK and azure-identity) against the AKS emulator on
loopback TLS: agent pool -> Node -> claim Ready; quota refusals surfaced and recovered without a
restart; throttling and 5xx ridden out; liveness and initialization timeouts; clean deletion."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from provisioning_helpers import (
    aks_cloud,
    claim_ready,
    condition,
    delete_claims_and_wait,
    eventually,
    fast_options,
    get_or_none,
    node_provisioner,
)

from kaito.api.nodeclaim import NODECLAIM
from kaito.envtest.aks import CUT, AksEmulator, Fault
from kaito.nodes import NODE, NodeRequest
from kaito.provisioners.gpu_provisioner import GPUProvisioner, nodeclaim_manifest
from kaito.runtime import GVK, Client

EVENT = GVK("", "v1", "Event")

pytestmark = [pytest.mark.cluster, pytest.mark.full_cluster]


def request(ws: str, count: int = 1) -> NodeRequest:
    return NodeRequest(
        workspace=ws,
        namespace="default",
        uid=uuid.uuid4().hex,
        instance_type="Standard_NC6s_v3",
        count=count,
        label_selector={"matchLabels": {"apps": "phi-3"}},
    )


async def test_claim_to_agent_pool_to_ready_node_and_back(
    crds: Any, kclient: Client, aks: AksEmulator
) -> None:
    claim = nodeclaim_manifest(request("aks-ready"))
    name = claim["metadata"]["name"]
    async with node_provisioner(crds, aks_cloud(aks), fast_options()):
        await kclient.create(claim)
        ready = await eventually(lambda: claim_ready(kclient, name), 60, "claim Ready")
        assert aks.pool_names() == [name]
        props = aks.pools[name].properties
        assert props["vmSize"] == "Standard_NC6s_v3" and props["count"] == 1
        assert props["nodeTaints"] == ["sku=gpu:NoSchedule"]
        assert ready["status"]["providerID"] == aks.provider_id(name)
        assert ready["status"]["providerID"].startswith("azure:///subscriptions/")
        node = await kclient.get(NODE, ready["status"]["nodeName"], cached=False)
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.azure.com/agentpool"] == name
        assert labels["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"
        assert labels["kaito.sh/workspace"] == "aks-ready"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
        # the SDK ran the real protocol: PUT 201, operation polls, bearer tokens from azure-identity
        assert (
            "PUT",
            f"/subscriptions/{aks.subscription}/resourceGroups/{aks.resource_group}/providers/"
            f"Microsoft.ContainerService/managedClusters/{aks.cluster_name}/agentPools/{name}",
            201,
        ) in aks.requests
        assert aks.requests_to("GET", "/operations/") >= 1
        assert aks.tokens

        await delete_claims_and_wait(kclient, [name])
        assert aks.pool_names() == []
        assert await get_or_none(kclient, NODE, aks.node_name(name)) is None
        assert aks.requests_to("DELETE", f"/agentPools/{name}") >= 1


async def test_quota_refusal_is_surfaced_then_recovers(
    crds: Any, kclient: Client, aks: AksEmulator
) -> None:
    aks.quota_gpus = 0
    claim = nodeclaim_manifest(request("aks-quota"))
    name = claim["metadata"]["name"]
    async with node_provisioner(crds, aks_cloud(aks), fast_options()) as (mgr, _):
        backend = GPUProvisioner(mgr, cloud="azure")
        await kclient.create(claim)

        async def refused() -> Any:
            c = await get_or_none(kclient, NODECLAIM, name)
            launched = condition(c, "Launched")
            return launched if launched.get("reason") == "QuotaExceeded" else None

        launched = await eventually(refused, 10, "QuotaExceeded on the claim")
        assert launched["status"] == "False" and "quota" in launched["message"].lower()
        # what the Workspace's ResourceReady shows comes from the backend's status
        status = await eventually(
            lambda: _not_ready_with(backend, request("aks-quota"), "QuotaExceeded"),
            10,
            "backend message",
        )
        assert name in status.message

        async def warning_event() -> Any:
            events = await kclient.list(EVENT, "default", cached=False)
            return [
                e
                for e in events
                if e["involvedObject"].get("name") == name and e["reason"] == "QuotaExceeded"
            ]

        ev = (await eventually(warning_event, 10, "Warning event"))[0]
        assert ev["type"] == "Warning"

        aks.quota_gpus = None  # the user raised the quota
        await eventually(lambda: claim_ready(kclient, name), 60, "claim Ready after the quota fix")
        assert aks.pool_names() == [name]
        await delete_claims_and_wait(kclient, [name])
        assert aks.pool_names() == []


async def _not_ready_with(backend: GPUProvisioner, req: NodeRequest, code: str) -> Any:
    status = await backend.ensure_nodes_ready(req)
    return status if not status.ready and code in status.message else None


async def test_throttling_and_server_errors_are_ridden_out(
    crds: Any, kclient: Client, aks: AksEmulator
) -> None:
    aks.inject(
        Fault(
            "PUT",
            "/agentPools/",
            429,
            code="TooManyRequests",
            message="throttled",
            headers={"Retry-After": "1"},
        )
    )
    aks.inject(Fault("PUT", "/agentPools/", 503, code="ServiceUnavailable", message="try later"))
    aks.inject(Fault("GET", "/operations/", 500, code="InternalServerError", message="blip"))
    claim = nodeclaim_manifest(request("aks-faults"))
    name = claim["metadata"]["name"]
    async with node_provisioner(crds, aks_cloud(aks), fast_options()):
        await kclient.create(claim)
        await eventually(lambda: claim_ready(kclient, name), 90, "claim Ready despite faults")
        statuses = [s for m, p, s in aks.requests if "/agentPools/" in p and m == "PUT"]
        assert statuses[:3] == [429, 503, 201]
        assert aks.pool_names() == [name]  # retries did not make a second pool
        await delete_claims_and_wait(kclient, [name])


@pytest.mark.parametrize(
    ("switch", "reason"),
    [
        ("slow_launch", "LaunchTimeout"),
        ("never_registers", "RegistrationTimeout"),
        ("no_gpus", "InitializationTimeout"),
    ],
)
async def test_liveness_timeouts_delete_and_the_backend_replaces(
    crds: Any, kclient: Client, aks: AksEmulator, switch: str, reason: str
) -> None:
    if switch == "slow_launch":
        aks.lro_delay = 3600.0
    elif switch == "never_registers":
        aks.register_nodes = False
    else:
        aks.node_gpus = 0  # the VM joins but its GPUs never show up
    opts = fast_options(launch_timeout=4.0, registration_timeout=4.0, initialization_timeout=4.0)
    ws = f"aks-{switch.replace('_', '-')}"
    async with node_provisioner(crds, aks_cloud(aks), opts) as (mgr, _):
        backend = GPUProvisioner(mgr, cloud="azure")
        req = request(ws)
        await backend.provision_nodes(req)
        first = (
            await kclient.list(NODECLAIM, label_selector={"kaito.sh/workspace": ws}, cached=False)
        )[0]
        first_name = first["metadata"]["name"]

        async def expired() -> Any:
            events = await kclient.list(EVENT, "default", cached=False)
            hits = [
                e
                for e in events
                if e["involvedObject"].get("name") == first_name and e["reason"] == reason
            ]
            gone = await get_or_none(kclient, NODECLAIM, first_name) is None
            return hits if hits and gone else None

        await eventually(expired, 60, f"{reason} deleted the claim")

        async def replaced() -> Any:
            await backend.provision_nodes(req)
            live = await kclient.list(
                NODECLAIM, label_selector={"kaito.sh/workspace": ws}, cached=False
            )
            return [c for c in live if c["metadata"]["name"] != first_name]

        await eventually(replaced, 30, "a replacement claim")
        # put things right so clean-up can finish, then delete everything
        aks.lro_delay, aks.register_nodes, aks.node_gpus = 0.0, True, None

        async def cleaned() -> bool:
            return await backend.delete_nodes(req)

        await eventually(cleaned, 90, "claims deleted")

        async def pools_gone() -> bool:
            return aks.pool_names() == []

        await eventually(pools_gone, 60, "agent pools deleted")


#: More failed answers to the operation poll than the SDK's retry policy absorbs (4 tries for a
#: 500 or 429, up to 8 for a cut connection, seen with azure-core 1.41): the poller itself gives
#: up, as it does in a real outage of a few seconds between kaito and ARM.
POLL_OUTAGE = 12


@pytest.mark.parametrize(
    ("status", "code", "headers"),
    [
        (500, "InternalServerError", {}),
        (429, "TooManyRequests", {"Retry-After": "0"}),
        (CUT, "", {}),
    ],
    ids=["poll-500", "poll-429", "poll-connection-cut"],
)
async def test_lost_create_poll_keeps_the_pool_and_waits(
    crds: Any, kclient: Client, aks: AksEmulator, status: int, code: str, headers: dict[str, str]
) -> None:
    """The create's long-running-operation poll fails past the SDK's retries while the pool is
    still Creating: the provider reads the pool's provisioningState instead, the pool is never
    deleted or re-created, and the claim goes Launched and Ready once the pool succeeds."""
    fault = Fault("GET", "/operations/", status, code=code, headers=headers, times=POLL_OUTAGE)
    aks.lro_delay = 4.0  # still Creating when the poller gives up
    aks.inject(fault)
    claim = nodeclaim_manifest(request("aks-lost-poll"))
    name = claim["metadata"]["name"]
    async with node_provisioner(crds, aks_cloud(aks), fast_options()):
        await kclient.create(claim)
        ready = await eventually(lambda: claim_ready(kclient, name), 90, "claim Ready after the poll outage")
        # the fault really hit the poll, more often than the SDK retries
        hits = [s for m, p, s in aks.requests if m == "GET" and "/operations/" in p and s == fault.status]
        assert len(hits) >= 4, aks.requests
        assert condition(ready, "Launched")["status"] == "True"
        assert aks.requests_to("DELETE", f"/agentPools/{name}") == 0, "a live create was deleted"
        puts = [s for m, p, s in aks.requests if m == "PUT" and p.endswith(f"/agentPools/{name}")]
        assert puts == [201], "the pool was created again"
        assert aks.pool_names() == [name]
        await delete_claims_and_wait(kclient, [name])
        assert aks.pool_names() == []


@pytest.mark.parametrize(
    "code",
    ["AllocationFailed", "InternalServerError"],
    ids=["terminal-code", "transient-code-but-pool-failed"],
)
async def test_terminal_create_failure_deletes_the_pool_and_retries(
    crds: Any, kclient: Client, aks: AksEmulator, code: str
) -> None:
    """The operation ends Failed and the pool's provisioningState is Failed: that pool is deleted
    and a fresh one created. With a transient-looking code the provider first reads the pool's
    state, which says Failed, so it is still deleted."""
    aks.fail_creates = [(code, f"injected {code}")]
    claim = nodeclaim_manifest(request("aks-failed"))
    name = claim["metadata"]["name"]
    async with node_provisioner(crds, aks_cloud(aks), fast_options()):
        await kclient.create(claim)
        await eventually(lambda: claim_ready(kclient, name), 90, "claim Ready on the second pool")
        assert aks.requests_to("DELETE", f"/agentPools/{name}") >= 1, "the Failed pool was kept"
        puts = [s for m, p, s in aks.requests if m == "PUT" and p.endswith(f"/agentPools/{name}")]
        assert len(puts) == 2 and puts[0] == 201, puts
        assert aks.pool_names() == [name]
        await delete_claims_and_wait(kclient, [name])
