"""CloudProvider ``aks``: one AKS agent pool (count 1) per NodeClaim, through the Azure SDK.

Why one pool per claim (as Azure's gpu-provisioner does): a pool has exactly one VM size, labels
and taints, so a claim maps onto a pool without touching anyone else's nodes, and deleting the
claim deletes exactly its capacity.

Creates are long-running operations. ``create`` starts one and returns at once (a worker never
waits minutes for a VM); the poller runs in a background task and ``get`` reports its outcome,
including the error body of a failed operation (``QuotaExceeded``...). After a restart the
in-memory pollers are gone and ``get`` falls back to the pool's ``provisioningState``. The
providerID is the Node's (AKS VMSS format), read from the Node labelled with the pool's name.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kaito.nodes import NODE, CloudError, Instance, InstanceState, claim_instance_type, node_shape
from kaito.provisioners.cloud.aks.errors import error_of
from kaito.provisioners.cloud.aks.options import AksOptions
from kaito.provisioners.cloud.aks.pools import (
    LABEL_AGENTPOOL,
    TAG_CREATED,
    TAG_NODECLAIM,
    agent_pool,
    pool_name,
)
from kaito.runtime import Client, get_logger

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.mgmt.containerservice.models import AgentPool

_log = get_logger("kaito.provisioners.cloud.aks")


class AksCloudProvider:
    """``create`` / ``get`` / ``list`` / ``delete`` of agent pools with azure-mgmt-containerservice."""

    name = "aks"

    def __init__(
        self, client: Client, settings: AksOptions, credential: AsyncTokenCredential | None = None
    ) -> None:
        from azure.mgmt.containerservice.aio import ContainerServiceClient

        self.kube = client
        self.settings = settings
        if credential is None:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self.credential: AsyncTokenCredential = credential
        transport_kwargs: dict[str, Any] = {}
        if settings.ca_bundle:
            transport_kwargs["connection_verify"] = settings.ca_bundle
        self.azure = ContainerServiceClient(
            credential,
            settings.subscription_id,
            base_url=settings.arm_endpoint,
            polling_interval=settings.polling_interval,
            retry_total=settings.retry_total,
            retry_backoff_factor=settings.retry_backoff,
            retry_backoff_max=10,
            **transport_kwargs,
        )
        self._creates: dict[str, asyncio.Task[Any]] = {}
        self._deletes: dict[str, asyncio.Task[Any]] = {}

    async def close(self) -> None:
        for t in [*self._creates.values(), *self._deletes.values()]:
            t.cancel()
        await self.azure.close()
        close = getattr(self.credential, "close", None)
        if close is not None:
            await close()

    # -- shapes ------------------------------------------------------------------------------
    def agent_pool(self, claim: dict[str, Any]) -> AgentPool:
        """The pool body for ``claim`` (see :func:`pools.agent_pool`)."""
        return agent_pool(claim, self.settings.os_sku)

    async def _provider_id(self, pool: str) -> str:
        nodes = await self.kube.list(NODE, label_selector={LABEL_AGENTPOOL: pool}, copy=False)
        for n in nodes:
            pid = (n.get("spec") or {}).get("providerID")
            if pid:
                return str(pid)
        return ""

    async def _instance(self, pool: Any, nodeclaim: str | None = None) -> Instance:
        state_map = {
            "Succeeded": InstanceState.RUNNING,
            "Failed": InstanceState.FAILED,
            "Deleting": InstanceState.DELETING,
        }
        state = state_map.get(str(pool.provisioning_state), InstanceState.CREATING)
        tags = dict(pool.tags or {})
        created = tags.get(TAG_CREATED)
        created_at = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() if created else 0.0
        provider_id = await self._provider_id(pool.name) if state == InstanceState.RUNNING else ""
        error = None
        if state == InstanceState.FAILED:
            error = CloudError("ProvisioningFailed", f"agent pool {pool.name} is in provisioningState Failed")
        return Instance(
            name=pool.name,
            nodeclaim=nodeclaim or tags.get(TAG_NODECLAIM, ""),
            instance_type=str(pool.vm_size or ""),
            state=state,
            provider_id=provider_id,
            created_at=created_at,
            labels=dict(pool.node_labels or {}),
            error=error,
            capacity=node_shape(str(pool.vm_size or "")).capacity(),
        )

    # -- CloudProvider ---------------------------------------------------------------------
    async def create(self, nodeclaim: dict[str, Any]) -> Instance:
        name = nodeclaim["metadata"]["name"]
        pool = pool_name(name)
        body = self.agent_pool(nodeclaim)
        instance_type = claim_instance_type(nodeclaim)
        s = self.settings
        try:
            poller = await self.azure.agent_pools.begin_create_or_update(
                s.resource_group, s.cluster_name, pool, body
            )
        except Exception as exc:
            raise error_of(exc) from None
        task = asyncio.ensure_future(poller.result())
        task.add_done_callback(
            lambda t: t.cancelled() or t.exception()
        )  # retrieved: no "never retrieved" log
        self._creates[pool] = task
        return Instance(
            name=pool,
            nodeclaim=name,
            instance_type=instance_type,
            state=InstanceState.CREATING,
            created_at=time.time(),
            capacity=node_shape(instance_type).capacity(),
        )

    async def get(self, nodeclaim_name: str) -> Instance | None:
        from azure.core.exceptions import ResourceNotFoundError

        pool = pool_name(nodeclaim_name)
        task = self._creates.get(pool)
        if task is not None and not task.done():
            return Instance(
                name=pool, nodeclaim=nodeclaim_name, instance_type="", state=InstanceState.CREATING
            )
        s = self.settings
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            self._creates.pop(pool, None)
            exc = task.exception()
            assert exc is not None
            error = error_of(exc)
            if not error.retryable:
                # The operation itself ended Failed (its error body says why: QuotaExceeded...).
                return Instance(
                    name=pool,
                    nodeclaim=nodeclaim_name,
                    instance_type="",
                    state=InstanceState.FAILED,
                    error=error,
                )
            # Only the watching failed (poll connection reset, 429/5xx past the SDK's retries):
            # the operation goes on in Azure regardless. Deleting the pool here would throw away
            # a VM that is probably coming up; the pool's own provisioningState says how it
            # really stands, so read that now and on every later get.
            _log.warning(
                "lost track of an agent pool create; reading its provisioningState instead",
                pool=pool,
                error=str(error),
            )
        try:
            found = await self.azure.agent_pools.get(s.resource_group, s.cluster_name, pool)
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise error_of(exc) from None
        inst = await self._instance(found, nodeclaim_name)
        if inst.state == InstanceState.RUNNING:
            self._creates.pop(pool, None)
        return inst

    async def list(self) -> list[Instance]:
        s = self.settings
        out: list[Instance] = []
        try:
            async for p in self.azure.agent_pools.list(s.resource_group, s.cluster_name):
                if TAG_NODECLAIM in (p.tags or {}):  # never touch pools kaito did not make
                    out.append(await self._instance(p))
        except Exception as exc:
            raise error_of(exc) from None
        return out

    async def delete(self, instance: Instance) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        s = self.settings
        pool = instance.name
        task = self._deletes.get(pool)
        if task is not None and task.done():
            self._deletes.pop(pool, None)
            if task.cancelled() or task.exception() is None:
                return await self._gone(pool)
            raise error_of(task.exception() or RuntimeError("delete failed"))
        if task is not None:
            return False
        try:
            poller = await self.azure.agent_pools.begin_delete(s.resource_group, s.cluster_name, pool)
        except ResourceNotFoundError:
            return True
        except Exception as exc:
            raise error_of(exc) from None
        pending = self._creates.pop(pool, None)
        if pending is not None:
            pending.cancel()
        t = asyncio.ensure_future(poller.result())
        t.add_done_callback(lambda x: x.cancelled() or x.exception())
        self._deletes[pool] = t
        return False

    async def _gone(self, pool: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        s = self.settings
        try:
            await self.azure.agent_pools.get(s.resource_group, s.cluster_name, pool)
        except ResourceNotFoundError:
            return True
        return False


def new_cloud(client: Client, options: AksOptions) -> AksCloudProvider:
    """The registry's factory (:mod:`kaito.provisioners.cloud.registry`): checks the options, and
    signs with a client secret from the environment when one is set (else
    DefaultAzureCredential)."""
    from kaito.provisioners.cloud.aks.credential import credential_from_env

    options.check()
    return AksCloudProvider(client, options, credential_from_env(options.ca_bundle))


__all__ = ["AksCloudProvider", "new_cloud"]
