"""Wiring of kaito's node-provisioner: pick a CloudProvider, register the NodeClaim controller.

Used by ``kaito node-provisioner`` (its own process and Deployment, like upstream's
gpu-provisioner) and by ``kaito controller --node-provisioner gpu-provisioner
--node-provisioner-cloud kwok``, which runs it in the controller's process: the local cluster
(``make run``) then needs one process, not two. A real cloud keeps it separate (its own identity
and Deployment), so in-process is offered for ``kwok`` only. The clouds are imported only when
chosen, so a kwok-only install never loads the Azure SDK.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from kaito.controllers.nodeclaim import NodeClaimController, NodeClaimOptions, setup_nodeclaim_controller
from kaito.nodes import CloudProvider, NodeProvisioner
from kaito.operator.options import OperatorOptions
from kaito.runtime import Manager

CLOUDS = ("kwok", "aks")
#: Clouds ``kaito controller --node-provisioner-cloud`` runs in its own process.
IN_PROCESS_CLOUDS = ("kwok",)


@dataclass
class NodeProvisionerOptions:
    """What ``kaito node-provisioner`` takes on its command line."""

    cloud: str = "kwok"
    claims: NodeClaimOptions = field(default_factory=NodeClaimOptions)
    #: kwok: label selector of the claims whose Nodes kaito's local node agent runs ("" none);
    #: see ``kaito.provisioners.cloud.kwok.LocalNodes``.
    local_nodes: str = ""
    #: kwok: label selector of the claims served by adopting an idle real node (a Node labelled
    #: ``kaito.sh/kubelet=real``) instead of making one ("" none); checked before ``local_nodes``.
    real_nodes: str = ""
    # aks
    subscription_id: str = ""
    resource_group: str = ""
    cluster_name: str = ""
    arm_endpoint: str = "https://management.azure.com"
    ca_bundle: str | None = None
    polling_interval: float = 5.0
    #: An azure-identity (aio) credential; None: DefaultAzureCredential (environment, workload
    #: identity, managed identity, in that order).
    credential: Any = None


def validate(options: NodeProvisionerOptions) -> None:
    """Raise ValueError (one line naming the flag and the fix) before anything starts."""
    if options.cloud not in CLOUDS:
        raise ValueError(f"--cloud {options.cloud!r} is not supported: use one of {', '.join(CLOUDS)}")
    if options.local_nodes:
        if options.cloud != "kwok":
            raise ValueError(
                f"--local-nodes is for --cloud kwok (local node agent), not {options.cloud!r}; drop it"
            )
        from kaito.provisioners.cloud.kwok import ClaimSelector

        ClaimSelector.parse(options.local_nodes, "--local-nodes")
    if options.real_nodes:
        if options.cloud != "kwok":
            raise ValueError(
                f"--real-nodes is for --cloud kwok (it adopts nodes labelled kaito.sh/kubelet=real), "
                f"not {options.cloud!r}; drop it"
            )
        from kaito.provisioners.cloud.kwok import ClaimSelector

        ClaimSelector.parse(options.real_nodes, "--real-nodes")
    if options.cloud == "aks":
        missing = [
            flag
            for flag, value in (
                ("--subscription-id", options.subscription_id),
                ("--resource-group", options.resource_group),
                ("--cluster-name", options.cluster_name),
            )
            if not value
        ]
        if missing:
            raise ValueError(
                f"--cloud aks needs {', '.join(missing)} (the AKS cluster whose agent pools to manage)"
            )


def build_cloud(manager: Manager, options: NodeProvisionerOptions) -> CloudProvider:
    """The CloudProvider named by ``options.cloud``; a clear error names the missing setting."""
    validate(options)
    if options.cloud == "kwok":
        from kaito.provisioners.cloud.kwok import ClaimSelector, KwokCloudProvider

        local = ClaimSelector.parse(options.local_nodes, "--local-nodes") if options.local_nodes else None
        real = ClaimSelector.parse(options.real_nodes, "--real-nodes") if options.real_nodes else None
        return KwokCloudProvider(manager.client, local_nodes=local, real_nodes=real)
    if options.cloud == "aks":
        from kaito.provisioners.cloud.aks import AksCloudProvider, AksSettings

        settings = AksSettings(
            subscription_id=options.subscription_id,
            resource_group=options.resource_group,
            cluster_name=options.cluster_name,
            arm_endpoint=options.arm_endpoint,
            ca_bundle=options.ca_bundle,
            polling_interval=options.polling_interval,
        )
        return AksCloudProvider(manager.client, settings, _credential(options))
    raise ValueError(f"--cloud {options.cloud!r} is not supported: use one of {', '.join(CLOUDS)}")


def _credential(options: NodeProvisionerOptions) -> Any:
    """The given credential, else a client secret from the environment (as azure-identity's
    EnvironmentCredential reads it, but verifying the authority with ``ca_bundle``), else
    DefaultAzureCredential (chosen inside the provider)."""
    if options.credential is not None:
        return options.credential
    env = os.environ
    if env.get("AZURE_CLIENT_SECRET") and env.get("AZURE_CLIENT_ID") and env.get("AZURE_TENANT_ID"):
        from azure.identity.aio import ClientSecretCredential

        kwargs: dict[str, Any] = {}
        if env.get("AZURE_AUTHORITY_HOST"):
            kwargs["authority"] = env["AZURE_AUTHORITY_HOST"]
        if options.ca_bundle:
            kwargs["connection_verify"] = options.ca_bundle
        return ClientSecretCredential(
            env["AZURE_TENANT_ID"], env["AZURE_CLIENT_ID"], env["AZURE_CLIENT_SECRET"], **kwargs
        )
    return None


def setup_node_provisioner(manager: Manager, options: NodeProvisionerOptions) -> NodeClaimController:
    """Register the NodeClaim controller and its orphan collector on ``manager``."""
    cloud = build_cloud(manager, options)
    ctrl = setup_nodeclaim_controller(manager, cloud, options.claims)
    close = getattr(cloud, "close", None)
    if close is not None:

        async def close_on_stop(stop: Any) -> None:
            await stop.wait()
            await close()

        manager.add(close_on_stop, needs_leader_election=False)
    return ctrl


def in_process_options(options: OperatorOptions) -> NodeProvisionerOptions | None:
    """The node-provisioner ``kaito controller`` runs itself, or None (an external one serves the
    claims). Raises ValueError naming the flag and the fix for a combination that cannot work."""
    if not options.node_provisioner_cloud:
        if options.local_nodes:
            raise ValueError(
                "--local-nodes needs --node-provisioner-cloud kwok (the cloud that makes the nodes)"
            )
        if options.real_nodes:
            raise ValueError(
                "--real-nodes needs --node-provisioner-cloud kwok (the cloud that adopts the real nodes)"
            )
        return None
    if options.node_provisioner != "gpu-provisioner":
        raise ValueError(
            f"--node-provisioner-cloud serves NodeClaims; use it with --node-provisioner gpu-provisioner, "
            f"not {options.node_provisioner!r}"
        )
    if options.node_provisioner_cloud not in IN_PROCESS_CLOUDS:
        raise ValueError(
            f"--node-provisioner-cloud {options.node_provisioner_cloud!r}: only kwok runs in the controller; "
            f"run `kaito node-provisioner --cloud {options.node_provisioner_cloud}` as its own process"
        )
    np = NodeProvisionerOptions(
        cloud=options.node_provisioner_cloud,
        local_nodes=options.local_nodes,
        real_nodes=options.real_nodes,
    )
    validate(np)
    return np


def gpu_provisioner_backend(manager: Manager, options: OperatorOptions) -> NodeProvisioner:
    """``--node-provisioner gpu-provisioner``: the NodeClaim backend and its orphan-claim sweep,
    plus (with ``--node-provisioner-cloud``) kaito's node-provisioner in the same process."""
    from kaito.provisioners.gpu_provisioner import GPUProvisioner, OrphanClaimSweeper

    np = in_process_options(options)
    backend = GPUProvisioner(manager, options.gpu_provisioner)
    gpu = options.gpu_provisioner
    manager.add(
        OrphanClaimSweeper(manager, grace=gpu.orphan_nodeclaim_grace, interval=gpu.orphan_nodeclaim_interval)
    )
    if np is not None:
        setup_node_provisioner(manager, np)
    return backend
