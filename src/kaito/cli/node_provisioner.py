"""``kaito node-provisioner``: fulfil NodeClaims of node pool ``kaito`` through a cloud.

Its own process (and Deployment), as upstream runs Azure's gpu-provisioner next to the workspace
controller: either half can be replaced without the other. Every flag's help is the docstring of
the option field it sets; each registered cloud's options become flags of their own
(:func:`kaito.cli.flags.with_cloud_flags`).
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from kaito.cli.flags import doc, with_cloud_flags
from kaito.controllers.nodeclaim import NodeClaimOptions
from kaito.operator.nodeprovisioner import NodeProvisionerOptions, setup_node_provisioner, validate
from kaito.operator.options import ElectionOptions, OperatorOptions
from kaito.provisioners.cloud import CloudOptions
from kaito.runtime import LeaderElectionOptions, Manager, configure_logging

_CLAIMS = NodeClaimOptions()
#: Defaults of this process, where they differ from the operator's (a second Lease, other ports).
_LEASE_NAMESPACE = "kube-system"
_METRICS = ":8082"
_PROBES = ":8083"


def _claims(name: str) -> str:
    return doc(NodeClaimOptions, name)


def _election(name: str) -> str:
    return doc(ElectionOptions, name)


@with_cloud_flags("cloud")
def node_provisioner(
    cloud: Annotated[str, typer.Option(help=doc(NodeProvisionerOptions, "cloud"))] = "kwok",
    kubeconfig: Annotated[
        str | None, typer.Option(envvar="KUBECONFIG", help=doc(OperatorOptions, "kubeconfig"))
    ] = None,
    launch_timeout: Annotated[float, typer.Option(help=_claims("launch_timeout"))] = _CLAIMS.launch_timeout,
    registration_timeout: Annotated[float, typer.Option(help=_claims("registration_timeout"))] = (
        _CLAIMS.registration_timeout
    ),
    initialization_timeout: Annotated[float, typer.Option(help=_claims("initialization_timeout"))] = (
        _CLAIMS.initialization_timeout
    ),
    gc_grace: Annotated[float, typer.Option(help=_claims("gc_grace"))] = _CLAIMS.gc_grace,
    gc_interval: Annotated[float, typer.Option(help=_claims("gc_interval"))] = _CLAIMS.gc_interval,
    poll_interval: Annotated[float, typer.Option(help=_claims("poll_interval"))] = _CLAIMS.poll_interval,
    error_retry: Annotated[float, typer.Option(help=_claims("error_retry"))] = _CLAIMS.error_retry,
    max_concurrent_reconciles: Annotated[
        int, typer.Option(min=1, help=_claims("max_concurrent_reconciles"))
    ] = (_CLAIMS.max_concurrent_reconciles),
    nodepool: Annotated[str, typer.Option(help=_claims("nodepool"))] = _CLAIMS.nodepool,
    component: Annotated[str, typer.Option(help=_claims("component"))] = _CLAIMS.component,
    leader_elect: Annotated[bool, typer.Option(help=_election("enabled"))] = False,
    leader_election_namespace: Annotated[str, typer.Option(help=_election("namespace"))] = _LEASE_NAMESPACE,
    lease_duration: Annotated[float, typer.Option(help=_election("lease_duration"))] = 15.0,
    renew_deadline: Annotated[float, typer.Option(help=_election("renew_deadline"))] = 10.0,
    retry_period: Annotated[float, typer.Option(help=_election("retry_period"))] = 2.0,
    metrics_bind_address: Annotated[
        str, typer.Option(help=doc(OperatorOptions, "metrics_bind_address"))
    ] = _METRICS,
    health_probe_bind_address: Annotated[
        str, typer.Option(help=doc(OperatorOptions, "health_probe_bind_address"))
    ] = _PROBES,
    *,
    cloud_options: dict[str, CloudOptions],
) -> None:
    """Run the node-provisioner controller until SIGTERM."""
    configure_logging()
    claims = NodeClaimOptions(
        launch_timeout=launch_timeout,
        registration_timeout=registration_timeout,
        initialization_timeout=initialization_timeout,
        gc_grace=gc_grace,
        gc_interval=gc_interval,
        poll_interval=poll_interval,
        error_retry=error_retry,
        max_concurrent_reconciles=max_concurrent_reconciles,
        nodepool=nodepool,
        component=component,
    )
    options = NodeProvisionerOptions(cloud=cloud, claims=claims, clouds=cloud_options)

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
