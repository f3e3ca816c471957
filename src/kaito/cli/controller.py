"""``kaito controller``: the operator process (Workspace controller + node provisioner backend).

Flags follow controller-runtime's names so manifests and habits carry over from Go operators.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Mapping
from typing import Annotated

import typer

from kaito.operator import BACKENDS, OperatorOptions, run
from kaito.operator.featuregates import FeatureGates, parse_feature_gates
from kaito.operator.nodeprovisioner import in_process_options
from kaito.provisioners.options import (
    CLOUD_PROVIDER_ENV,
    GPUProvisionerOptions,
    KarpenterOptions,
    NodeClassRef,
    resolve_cloud,
)
from kaito.runtime import KubeconfigError, configure_logging

_DEFAULTS = OperatorOptions()
_GPU_DEFAULTS = GPUProvisionerOptions()


def controller(
    kubeconfig: Annotated[
        str | None, typer.Option(help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context")] = None,
    metrics_bind_address: Annotated[
        str, typer.Option(help="metrics address; 0 disables")
    ] = _DEFAULTS.metrics_bind_address,
    health_probe_bind_address: Annotated[
        str, typer.Option(help="/healthz and /readyz address; 0 disables")
    ] = _DEFAULTS.health_probe_bind_address,
    leader_elect: Annotated[
        bool, typer.Option("--leader-elect", help="hold a Lease before reconciling")
    ] = False,
    leader_election_namespace: Annotated[
        str, typer.Option(help="namespace of the Lease")
    ] = _DEFAULTS.leader_election_namespace,
    node_provisioner: Annotated[
        str, typer.Option(help=f"how GPU nodes are obtained: {' | '.join(sorted(BACKENDS))}")
    ] = _DEFAULTS.node_provisioner,
    node_provisioner_cloud: Annotated[
        str,
        typer.Option(
            help="gpu-provisioner backend: also serve the NodeClaims in this process with this cloud "
            "(kwok); empty: another process does (kaito node-provisioner, Azure's gpu-provisioner)"
        ),
    ] = _DEFAULTS.node_provisioner_cloud,
    local_nodes: Annotated[
        str,
        typer.Option(
            help="kwok cloud: claims whose nodes kaito's local node agent runs for real, as a label "
            "selector over the node's labels (all | k=v,k!=v,k,!k; e.g. apps=phi-3)"
        ),
    ] = _DEFAULTS.local_nodes,
    real_nodes: Annotated[
        str,
        typer.Option(
            help="kwok cloud: claims served by adopting an idle real node (label kaito.sh/kubelet=real, "
            "kaito local up --node real) instead of making one, as a label selector over the node's "
            "labels (all | k=v,k!=v,k,!k)"
        ),
    ] = _DEFAULTS.real_nodes,
    inference_image: Annotated[
        str, typer.Option(help="image of the inference server")
    ] = _DEFAULTS.inference_image,
    tuning_image: Annotated[str, typer.Option(help="image of the tuning Jobs")] = _DEFAULTS.tuning_image,
    weights_puller_image: Annotated[
        str, typer.Option(help="image (sh + oras) of the init container pulling kaito.sh/weights-image")
    ] = _DEFAULTS.weights_puller_image,
    weights_nvme_storage_class: Annotated[
        str,
        typer.Option(help='StorageClass of the weights cache claim on NVMe SKUs ("" = always an emptyDir)'),
    ] = _DEFAULTS.weights_nvme_storage_class,
    image_pull_policy: Annotated[
        str, typer.Option(help="imagePullPolicy of kaito's containers")
    ] = _DEFAULTS.image_pull_policy,
    max_concurrent_reconciles: Annotated[int, typer.Option(min=1, help="Workspaces reconciled at once")] = (
        _DEFAULTS.max_concurrent_reconciles
    ),
    namespace: Annotated[str | None, typer.Option(help="watch only this namespace")] = None,
    webhook: Annotated[bool, typer.Option("--webhook", help="serve the admission webhook")] = False,
    webhook_port: Annotated[int, typer.Option(help="webhook TLS port")] = _DEFAULTS.webhook_port,
    refuse_privileged_pods: Annotated[
        bool,
        typer.Option(
            "--refuse-privileged-pods/--allow-privileged-pods",
            help="Workspace pod policy of the webhook: refuse inference templates that are privileged, "
            "use host namespaces or hostPath, add capabilities or name another ServiceAccount, and "
            "hostPath tuning volumes",
        ),
    ] = _DEFAULTS.refuse_privileged_pods,
    webhook_cert_dir: Annotated[
        str | None, typer.Option(help="folder with the webhook's tls.crt and tls.key")
    ] = None,
    log_format: Annotated[
        str, typer.Option(help="console | json | auto (json in a pod, console elsewhere)")
    ] = "auto",
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
    feature_gates: Annotated[
        str, typer.Option(help="comma-separated gate=bool pairs, e.g. vLLM=true")
    ] = "",
    cloud_provider: Annotated[
        str | None,
        typer.Option(
            help=f"gpu-provisioner backend: azure | aws (default: ${CLOUD_PROVIDER_ENV}, which the "
            "chart sets, else azure)"
        ),
    ] = None,
    karpenter_node_class: Annotated[
        str | None,
        typer.Option(
            help="karpenter backend: the NodePools' node class as group/Kind/name, e.g. "
            "karpenter.azure.com/AKSNodeClass/default (default: kwok's)"
        ),
    ] = None,
    webhook_certs: Annotated[
        str, typer.Option(help="self-signed (kaito issues and rotates) | external (e.g. cert-manager)")
    ] = _DEFAULTS.webhook_certs,
    webhook_namespace: Annotated[
        str, typer.Option(envvar="POD_NAMESPACE", help="namespace of the webhook Service and Secret")
    ] = _DEFAULTS.webhook_namespace,
    webhook_service_name: Annotated[str, typer.Option(help="webhook Service name")] = (
        _DEFAULTS.webhook_service_name
    ),
    webhook_secret_name: Annotated[str, typer.Option(help="Secret holding the webhook CA and pair")] = (
        _DEFAULTS.webhook_secret_name
    ),
    webhook_host: Annotated[
        list[str] | None, typer.Option(help="extra name or IP in the serving certificate (repeatable)")
    ] = None,
    webhook_cert_validity: Annotated[
        float, typer.Option(min=10.0, help="serving certificate lifetime in seconds")
    ] = _DEFAULTS.webhook_cert_validity,
    lease_duration: Annotated[float, typer.Option(help="leader-election lease (s)")] = (
        _DEFAULTS.lease_duration
    ),
    renew_deadline: Annotated[float, typer.Option(help="leader-election renew deadline (s)")] = (
        _DEFAULTS.renew_deadline
    ),
    retry_period: Annotated[float, typer.Option(help="leader-election retry period (s)")] = (
        _DEFAULTS.retry_period
    ),
    orphan_nodeclaim_grace: Annotated[
        float,
        typer.Option(min=0.0, help="gpu-provisioner: age (s) before a NodeClaim of no Workspace is deleted"),
    ] = _GPU_DEFAULTS.orphan_nodeclaim_grace,
    preferred_node_grace: Annotated[
        float,
        typer.Option(min=0.0, help="gpu-provisioner: seconds a NotReady preferred node still counts"),
    ] = _GPU_DEFAULTS.preferred_node_grace,
) -> None:
    """Run the kaito operator: reconcile Workspaces into GPU nodes, inference workloads and Services."""
    if node_provisioner not in BACKENDS:
        typer.echo(
            f"error: --node-provisioner {node_provisioner!r} is not available; "
            f"choose one of: {', '.join(sorted(BACKENDS))}",
            err=True,
        )
        raise typer.Exit(2)
    if webhook and webhook_certs == "external" and not webhook_cert_dir:
        typer.echo(
            "error: --webhook-certs external needs --webhook-cert-dir (a folder with tls.crt and tls.key)",
            err=True,
        )
        raise typer.Exit(2)
    if webhook_certs not in ("self-signed", "external"):
        typer.echo(f"error: --webhook-certs must be self-signed or external, not {webhook_certs!r}", err=True)
        raise typer.Exit(2)
    if log_format == "auto":
        log_format = "json" if os.environ.get("KUBERNETES_SERVICE_HOST") else "console"
    if log_format not in ("console", "json"):
        typer.echo(f"error: --log-format must be console, json or auto, not {log_format!r}", err=True)
        raise typer.Exit(2)
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        typer.echo(f"error: --log-level must be debug, info, warning or error, not {log_level!r}", err=True)
        raise typer.Exit(2)
    try:
        gates = parse_feature_gates(feature_gates)
    except ValueError as exc:
        typer.echo(f"error: --feature-gates: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        gpu_options, karpenter_options = backend_options(
            node_provisioner, cloud_provider, karpenter_node_class
        )
        gpu_options = dataclasses.replace(
            gpu_options,
            orphan_nodeclaim_grace=orphan_nodeclaim_grace,
            preferred_node_grace=preferred_node_grace,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    options = OperatorOptions(
        kubeconfig=kubeconfig,
        context=context,
        metrics_bind_address=metrics_bind_address,
        health_probe_bind_address=health_probe_bind_address,
        leader_elect=leader_elect,
        leader_election_namespace=leader_election_namespace,
        node_provisioner=node_provisioner,
        node_provisioner_cloud=node_provisioner_cloud,
        local_nodes=local_nodes,
        real_nodes=real_nodes,
        inference_image=inference_image,
        tuning_image=tuning_image,
        weights_puller_image=weights_puller_image,
        weights_nvme_storage_class=weights_nvme_storage_class,
        image_pull_policy=image_pull_policy,
        max_concurrent_reconciles=max_concurrent_reconciles,
        namespace=namespace,
        webhook=webhook,
        webhook_port=webhook_port,
        refuse_privileged_pods=refuse_privileged_pods,
        webhook_cert_dir=webhook_cert_dir,
        log_format=log_format,
        feature_gates=gates,
        gpu_provisioner=gpu_options,
        karpenter=karpenter_options,
        webhook_certs=webhook_certs,
        webhook_namespace=webhook_namespace,
        webhook_service_name=webhook_service_name,
        webhook_secret_name=webhook_secret_name,
        webhook_hosts=tuple(webhook_host or ()),
        webhook_cert_validity=webhook_cert_validity,
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
    )
    try:
        in_process_options(options)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging("json" if log_format == "json" else "console", log_level)
    try:
        asyncio.run(run(options))
    except KubeconfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def backend_options(
    node_provisioner: str,
    cloud_provider: str | None,
    karpenter_node_class: str | None,
    environ: Mapping[str, str] | None = None,
) -> tuple[GPUProvisionerOptions, KarpenterOptions]:
    """The backends' options from the flags and the environment, resolved now so that a bad
    value is refused at start: ``--cloud-provider`` > ``$CLOUD_PROVIDER`` > azure. The chart sets
    ``$CLOUD_PROVIDER`` for every backend, so it is judged only where it is used (gpu-provisioner);
    a flag is always checked."""
    cloud = None
    if cloud_provider or node_provisioner == "gpu-provisioner":
        cloud = resolve_cloud(cloud_provider, os.environ if environ is None else environ)
    node_class = NodeClassRef.parse(karpenter_node_class) if karpenter_node_class else None
    return GPUProvisionerOptions(cloud_provider=cloud), KarpenterOptions(node_class=node_class)


__all__ = ["FeatureGates", "backend_options", "controller", "parse_feature_gates"]
