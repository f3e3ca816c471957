"""``kaito controller``: the operator process (Workspace controller + node provisioner backend).

Flags follow controller-runtime's names so manifests and habits carry over from Go operators.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Annotated

import typer

from kaito.cli.flags import doc, with_cloud_flags
from kaito.operator import BACKENDS, OperatorOptions, run
from kaito.operator.featuregates import FeatureGates, parse_feature_gates
from kaito.operator.nodeprovisioner import in_process_options
from kaito.operator.options import ElectionOptions, InProcessCloud, ProvisionerOptions, WebhookOptions
from kaito.provisioners.cloud import CloudOptions
from kaito.provisioners.options import (
    GPUProvisionerOptions,
    KarpenterOptions,
    NodeClassAPI,
    NodeClassRef,
    parse_node_classes,
    resolve_cloud,
)
from kaito.runtime import KubeconfigError, configure_logging

_DEFAULTS = OperatorOptions()
_WEBHOOK = WebhookOptions()
_ELECTION = ElectionOptions()
_GPU_DEFAULTS = GPUProvisionerOptions()


def _op(name: str) -> str:
    return doc(OperatorOptions, name)


def _wh(name: str) -> str:
    return doc(WebhookOptions, name)


def _le(name: str) -> str:
    return doc(ElectionOptions, name)


def _gpu(name: str) -> str:
    return doc(GPUProvisionerOptions, name)


@with_cloud_flags("node_provisioner_cloud", in_process_only=True)
def controller(
    kubeconfig: Annotated[str | None, typer.Option(help=_op("kubeconfig"))] = None,
    context: Annotated[str | None, typer.Option(help=_op("context"))] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="resolve every flag and environment variable, build the node-provisioner backend, "
            "print both as JSON and exit without connecting (which setting won: flag, env or chart)",
        ),
    ] = False,
    metrics_bind_address: Annotated[str, typer.Option(help=_op("metrics_bind_address"))] = (
        _DEFAULTS.metrics_bind_address
    ),
    health_probe_bind_address: Annotated[str, typer.Option(help=_op("health_probe_bind_address"))] = (
        _DEFAULTS.health_probe_bind_address
    ),
    leader_elect: Annotated[bool, typer.Option("--leader-elect", help=_le("enabled"))] = False,
    leader_election_id: Annotated[str, typer.Option(help=_le("id"))] = _ELECTION.id,
    leader_election_namespace: Annotated[str, typer.Option(help=_le("namespace"))] = _ELECTION.namespace,
    node_provisioner: Annotated[
        str, typer.Option(help=doc(ProvisionerOptions, "name"))
    ] = _DEFAULTS.provisioner.name,
    node_provisioner_cloud: Annotated[str, typer.Option(help=doc(InProcessCloud, "name"))] = (
        _DEFAULTS.cloud.name
    ),
    inference_image: Annotated[str, typer.Option(help=_op("inference_image"))] = _DEFAULTS.inference_image,
    tuning_image: Annotated[str, typer.Option(help=_op("tuning_image"))] = _DEFAULTS.tuning_image,
    weights_puller_image: Annotated[str, typer.Option(help=_op("weights_puller_image"))] = (
        _DEFAULTS.weights_puller_image
    ),
    weights_nvme_storage_class: Annotated[str, typer.Option(help=_op("weights_nvme_storage_class"))] = (
        _DEFAULTS.weights_nvme_storage_class
    ),
    image_pull_policy: Annotated[str, typer.Option(help=_op("image_pull_policy"))] = (
        _DEFAULTS.image_pull_policy
    ),
    max_concurrent_reconciles: Annotated[int, typer.Option(min=1, help=_op("max_concurrent_reconciles"))] = (
        _DEFAULTS.max_concurrent_reconciles
    ),
    revision_history_limit: Annotated[int, typer.Option(min=1, help=_op("revision_history_limit"))] = (
        _DEFAULTS.revision_history_limit
    ),
    tls_read_buffer_kib: Annotated[int, typer.Option(min=4, max=256, help=_op("tls_read_buffer_kib"))] = (
        _DEFAULTS.tls_read_buffer_kib
    ),
    namespace: Annotated[str | None, typer.Option(help=_op("namespace"))] = None,
    user_agent: Annotated[str, typer.Option(help=_op("user_agent"))] = _DEFAULTS.user_agent,
    webhook: Annotated[bool, typer.Option("--webhook", help=_wh("enabled"))] = False,
    webhook_port: Annotated[int, typer.Option(help=_wh("port"))] = _WEBHOOK.port,
    refuse_privileged_pods: Annotated[
        bool,
        typer.Option("--refuse-privileged-pods/--allow-privileged-pods", help=_wh("refuse_privileged_pods")),
    ] = _WEBHOOK.refuse_privileged_pods,
    webhook_cert_dir: Annotated[str | None, typer.Option(help=_wh("cert_dir"))] = None,
    log_format: Annotated[str, typer.Option(help=_op("log_format"))] = "auto",
    log_level: Annotated[str, typer.Option(help=_op("log_level"))] = _DEFAULTS.log_level,
    feature_gates: Annotated[str, typer.Option(help=_op("feature_gates"))] = "",
    cloud_provider: Annotated[str | None, typer.Option(help=_gpu("cloud_provider"))] = None,
    karpenter_node_class: Annotated[
        str | None, typer.Option(help=doc(KarpenterOptions, "node_class"))
    ] = None,
    karpenter_node_classes: Annotated[
        str | None, typer.Option(help=doc(KarpenterOptions, "node_classes"))
    ] = None,
    karpenter_node_class_api: Annotated[
        str | None, typer.Option(help=doc(KarpenterOptions, "node_class_api"))
    ] = None,
    webhook_certs: Annotated[str, typer.Option(help=_wh("certs"))] = _WEBHOOK.certs,
    webhook_namespace: Annotated[str, typer.Option(envvar="POD_NAMESPACE", help=_wh("namespace"))] = (
        _WEBHOOK.namespace
    ),
    webhook_service_name: Annotated[str, typer.Option(help=_wh("service_name"))] = _WEBHOOK.service_name,
    webhook_secret_name: Annotated[str, typer.Option(help=_wh("secret_name"))] = _WEBHOOK.secret_name,
    webhook_host: Annotated[list[str] | None, typer.Option(help=_wh("hosts"))] = None,
    webhook_cert_validity: Annotated[float, typer.Option(min=10.0, help=_wh("cert_validity"))] = (
        _WEBHOOK.cert_validity
    ),
    lease_duration: Annotated[float, typer.Option(help=_le("lease_duration"))] = _ELECTION.lease_duration,
    renew_deadline: Annotated[float, typer.Option(help=_le("renew_deadline"))] = _ELECTION.renew_deadline,
    retry_period: Annotated[float, typer.Option(help=_le("retry_period"))] = _ELECTION.retry_period,
    orphan_nodeclaim_grace: Annotated[float, typer.Option(min=0.0, help=_gpu("orphan_nodeclaim_grace"))] = (
        _GPU_DEFAULTS.orphan_nodeclaim_grace
    ),
    orphan_nodeclaim_interval: Annotated[
        float, typer.Option(min=1.0, help=_gpu("orphan_nodeclaim_interval"))
    ] = _GPU_DEFAULTS.orphan_nodeclaim_interval,
    preferred_node_grace: Annotated[float, typer.Option(min=0.0, help=_gpu("preferred_node_grace"))] = (
        _GPU_DEFAULTS.preferred_node_grace
    ),
    *,
    cloud_options: dict[str, CloudOptions],
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
            node_provisioner,
            cloud_provider,
            karpenter_node_class,
            karpenter_node_classes=karpenter_node_classes,
            karpenter_node_class_api=karpenter_node_class_api,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    gpu_options = GPUProvisionerOptions(
        cloud_provider=gpu_options.cloud_provider,
        orphan_nodeclaim_grace=orphan_nodeclaim_grace,
        orphan_nodeclaim_interval=orphan_nodeclaim_interval,
        preferred_node_grace=preferred_node_grace,
    )
    options = OperatorOptions(
        kubeconfig=kubeconfig,
        context=context,
        metrics_bind_address=metrics_bind_address,
        health_probe_bind_address=health_probe_bind_address,
        inference_image=inference_image,
        tuning_image=tuning_image,
        weights_puller_image=weights_puller_image,
        weights_nvme_storage_class=weights_nvme_storage_class,
        image_pull_policy=image_pull_policy,
        max_concurrent_reconciles=max_concurrent_reconciles,
        revision_history_limit=revision_history_limit,
        tls_read_buffer_kib=tls_read_buffer_kib,
        namespace=namespace,
        user_agent=user_agent,
        log_format=log_format,
        log_level=log_level,
        feature_gates=gates,
        webhook=WebhookOptions(
            enabled=webhook,
            port=webhook_port,
            cert_dir=webhook_cert_dir,
            certs=webhook_certs,
            namespace=webhook_namespace,
            service_name=webhook_service_name,
            secret_name=webhook_secret_name,
            hosts=tuple(webhook_host or ()),
            cert_validity=webhook_cert_validity,
            refuse_privileged_pods=refuse_privileged_pods,
        ),
        leader_election=ElectionOptions(
            enabled=leader_elect,
            id=leader_election_id,
            namespace=leader_election_namespace,
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
        ),
        provisioner=ProvisionerOptions(
            name=node_provisioner, gpu_provisioner=gpu_options, karpenter=karpenter_options
        ),
        cloud=InProcessCloud(name=node_provisioner_cloud, clouds=cloud_options),
    )
    try:
        in_process_options(options)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if dry_run:
        import json

        from kaito.operator.dryrun import dry_run_report

        try:
            report = dry_run_report(options)
        except (TypeError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
        return
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
    *,
    karpenter_node_classes: str | None = None,
    karpenter_node_class_api: str | None = None,
) -> tuple[GPUProvisionerOptions, KarpenterOptions]:
    """The backends' options from the flags and the environment, resolved now so that a bad
    value is refused at start: ``--cloud-provider`` > ``$CLOUD_PROVIDER`` > azure. The chart sets
    ``$CLOUD_PROVIDER`` for every backend, so it is judged only where it is used (gpu-provisioner);
    a flag is always checked. The karpenter flags are parsed whatever the backend (a typo is a
    typo), though only the karpenter backend acts on them."""
    cloud = None
    if cloud_provider or node_provisioner == "gpu-provisioner":
        cloud = resolve_cloud(cloud_provider, os.environ if environ is None else environ)
    node_class = NodeClassRef.parse(karpenter_node_class) if karpenter_node_class else None
    classes = parse_node_classes(karpenter_node_classes) if karpenter_node_classes else ()
    if karpenter_node_class_api and not classes:
        raise ValueError(
            "--karpenter-node-class-api is the type of --karpenter-node-classes and means nothing "
            "without it (--karpenter-node-class names its own group and kind)"
        )
    api = NodeClassAPI.parse(karpenter_node_class_api or "kwok")
    # KarpenterOptions refuses --karpenter-node-class with --karpenter-node-classes.
    karpenter = KarpenterOptions(node_class=node_class, node_classes=classes, node_class_api=api)
    return GPUProvisionerOptions(cloud_provider=cloud), karpenter


__all__ = ["FeatureGates", "backend_options", "controller", "parse_feature_gates"]
