"""``kaito node-provisioner``: fulfil NodeClaims of node pool ``kaito`` through a cloud.

Its own process (and Deployment), as upstream runs Azure's gpu-provisioner next to the workspace
controller: either half can be replaced without the other.
"""

from __future__ import annotations

import asyncio
import os

import typer

from kaito.controllers.nodeclaim import NodeClaimOptions
from kaito.operator.nodeprovisioner import CLOUDS, NodeProvisionerOptions, setup_node_provisioner, validate
from kaito.runtime import LeaderElectionOptions, Manager, configure_logging


def node_provisioner(
    cloud: str = typer.Option("kwok", help=f"Where nodes come from: {' | '.join(CLOUDS)}."),
    kubeconfig: str = typer.Option(None, envvar="KUBECONFIG", help="Kubeconfig (default: in-cluster)."),
    subscription_id: str = typer.Option("", envvar="AZURE_SUBSCRIPTION_ID", help="aks: subscription."),
    resource_group: str = typer.Option("", envvar="AZURE_RESOURCE_GROUP", help="aks: the cluster's group."),
    cluster_name: str = typer.Option("", envvar="AZURE_CLUSTER_NAME", help="aks: the managed cluster."),
    arm_endpoint: str = typer.Option(
        "https://management.azure.com", envvar="ARM_ENDPOINT", help="aks: Azure Resource Manager URL."
    ),
    ca_bundle: str = typer.Option(None, envvar="ARM_CA_BUNDLE", help="aks: CA file to verify ARM with."),
    polling_interval: float = typer.Option(5.0, help="aks: seconds between long-running-operation polls."),
    local_nodes: str = typer.Option(
        "",
        help="kwok: claims whose nodes kaito's local node agent runs for real, as a label selector "
        "over the node's labels (all | k=v,k!=v,k,!k; e.g. apps=phi-3).",
    ),
    real_nodes: str = typer.Option(
        "",
        help="kwok: claims served by adopting an idle real node (label kaito.sh/kubelet=real, "
        "kaito local up --node real) instead of making one, as a label selector over the node's "
        "labels (all | k=v,k!=v,k,!k).",
    ),
    launch_timeout: float = typer.Option(300.0, help="Delete a claim not launched within this (s)."),
    registration_timeout: float = typer.Option(900.0, help="Delete a claim whose node never joins (s)."),
    initialization_timeout: float = typer.Option(
        900.0, help="Delete a claim whose node never shows its GPUs (s)."
    ),
    gc_grace: float = typer.Option(120.0, help="Delete instances without a NodeClaim older than this (s)."),
    gc_interval: float = typer.Option(30.0, help="Seconds between orphan-instance sweeps."),
    error_retry: float = typer.Option(5.0, help="Seconds before retrying a create the cloud refused."),
    leader_elect: bool = typer.Option(False, help="Hold a Lease so only one replica acts."),
    leader_election_namespace: str = typer.Option("kube-system", help="Namespace of the Lease."),
    lease_duration: float = typer.Option(15.0, help="Leader-election lease (s)."),
    renew_deadline: float = typer.Option(10.0, help="Leader-election renew deadline (s)."),
    retry_period: float = typer.Option(2.0, help="Leader-election retry period (s)."),
    metrics_bind_address: str = typer.Option(":8082", help="Prometheus metrics address ('0': off)."),
    health_probe_bind_address: str = typer.Option(":8083", help="Probes address ('0': off)."),
) -> None:
    """Run the node-provisioner controller until SIGTERM."""
    configure_logging()
    claims = NodeClaimOptions(
        launch_timeout=launch_timeout,
        registration_timeout=registration_timeout,
        initialization_timeout=initialization_timeout,
        gc_grace=gc_grace,
        gc_interval=gc_interval,
        error_retry=error_retry,
    )
    options = NodeProvisionerOptions(
        cloud=cloud,
        claims=claims,
        subscription_id=subscription_id,
        resource_group=resource_group,
        cluster_name=cluster_name,
        arm_endpoint=arm_endpoint,
        ca_bundle=ca_bundle,
        polling_interval=polling_interval,
        local_nodes=local_nodes,
        real_nodes=real_nodes,
    )

    try:
        validate(options)
        if leader_elect and not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError(
                f"--lease-duration {lease_duration:g} > --renew-deadline {renew_deadline:g} > "
                f"--retry-period {retry_period:g} > 0 must hold (a leader steps down before a "
                "successor may take over)"
            )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    async def main() -> None:
        from kaito.runtime import KubeconfigError, load_configuration

        try:
            config = await load_configuration(kubeconfig)
        except KubeconfigError as exc:
            raise ValueError(f"--kubeconfig: {exc}") from None
        election = (
            LeaderElectionOptions(
                name="kaito-node-provisioner",
                namespace=leader_election_namespace,
                lease_duration=lease_duration,
                renew_deadline=renew_deadline,
                retry_period=retry_period,
            )
            if leader_elect
            else None
        )
        mgr = Manager(
            config,
            leader_election=election,
            metrics_bind_address=metrics_bind_address,
            health_probe_bind_address=health_probe_bind_address,
            user_agent="kaito-node-provisioner",
        )
        setup_node_provisioner(mgr, options)
        await mgr.start()

    try:
        asyncio.run(main())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # pragma: no cover
        os._exit(130)
