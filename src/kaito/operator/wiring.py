"""Build a running operator from OperatorOptions: Manager, provisioner backend, controllers.

Backends are chosen by name. Each is a class (or factory) called as
``Backend(manager, options)`` returning a :class:`kaito.nodes.NodeProvisioner`; add one by
adding its name to :data:`BACKENDS` (``"module:attribute"``, imported only when chosen, so a
backend's dependencies cost nothing to processes that do not use it).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kaito.controllers.inferenceset import InferenceSetControllerOptions, InferenceSetReconciler
from kaito.controllers.inferenceset import setup as setup_inferenceset
from kaito.controllers.workspace import (
    WorkspaceControllerOptions,
    WorkspaceReconciler,
    cache_label_selectors,
    setup,
)
from kaito.nodes import NodeProvisioner
from kaito.operator.inventory import InventoryCollector
from kaito.operator.options import OperatorOptions
from kaito.runtime import LeaderElectionOptions, Manager, get_logger

if TYPE_CHECKING:
    from kaito.api.validation import ValidationOptions

log = get_logger("kaito.operator")

#: A backend factory: ``factory(manager, options) -> NodeProvisioner``.
BackendFactory = Callable[[Manager, OperatorOptions], NodeProvisioner]

#: ``--node-provisioner`` value -> "module:factory" of the backend (or the factory itself).
BACKENDS: dict[str, str | BackendFactory] = {
    "byo": "kaito.operator.wiring:byo_backend",
    "gpu-provisioner": "kaito.operator.nodeprovisioner:gpu_provisioner_backend",
    "karpenter": "kaito.operator.wiring:karpenter_backend",
}


def byo_backend(manager: Manager, options: OperatorOptions) -> NodeProvisioner:
    """``--node-provisioner byo`` with its own (empty) options."""
    from kaito.provisioners.byo import BYOProvisioner

    return BYOProvisioner(manager, options.byo)


def karpenter_backend(manager: Manager, options: OperatorOptions) -> NodeProvisioner:
    """``--node-provisioner karpenter`` with its node class."""
    from kaito.provisioners.karpenter import KarpenterProvisioner

    return KarpenterProvisioner(manager, options.karpenter)


def make_provisioner(manager: Manager, options: OperatorOptions) -> NodeProvisioner:
    spec = BACKENDS.get(options.node_provisioner)
    if spec is None:
        raise ValueError(
            f"--node-provisioner {options.node_provisioner!r} is not available; "
            f"choose one of: {', '.join(sorted(BACKENDS))}"
        )
    factory: Any = spec
    if isinstance(spec, str):
        module, _, attr = spec.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    provisioner: NodeProvisioner = factory(manager, options)
    return provisioner


@dataclass
class Operator:
    manager: Manager
    provisioner: NodeProvisioner
    workspace: WorkspaceReconciler
    #: None when the ``enableInferenceSetController`` gate is off.
    inferenceset: InferenceSetReconciler | None = None

    async def start(self) -> None:
        await self.manager.start()

    def stop(self) -> None:
        self.manager.stop()


def build_operator(config: Any, options: OperatorOptions, **manager_overrides: Any) -> Operator:
    """Everything wired, nothing started (tests start and stop it themselves)."""
    options.feature_gates.check()
    election = (
        LeaderElectionOptions(
            name=options.leader_election_id,
            namespace=options.leader_election_namespace,
            lease_duration=options.lease_duration,
            renew_deadline=options.renew_deadline,
            retry_period=options.retry_period,
        )
        if options.leader_elect
        else None
    )
    kwargs: dict[str, Any] = {
        "leader_election": election,
        "metrics_bind_address": options.metrics_bind_address,
        "health_probe_bind_address": options.health_probe_bind_address,
        "namespace": options.namespace,
        "user_agent": options.user_agent,
        # Pods and Jobs: only kaito's (the cluster's others are never listed nor held)
        "label_selectors": cache_label_selectors(),
    }
    kwargs.update(manager_overrides)
    manager = Manager(config, **kwargs)
    provisioner = make_provisioner(manager, options)
    workspace = setup(
        manager,
        provisioner,
        WorkspaceControllerOptions(
            inference_image=options.inference_image,
            tuning_image=options.tuning_image,
            weights_puller_image=options.weights_puller_image,
            weights_nvme_storage_class=options.weights_nvme_storage_class,
            image_pull_policy=options.image_pull_policy,
            revision_history_limit=options.revision_history_limit,
            max_concurrent_reconciles=options.max_concurrent_reconciles,
        ),
    )
    inferenceset = None
    if options.feature_gates.inference_set:
        inferenceset = setup_inferenceset(manager, InferenceSetControllerOptions())
    if options.webhook:
        _add_webhook(manager, options)
    # upstream's kaito_workspace_count / _preset_count / kaito_inferenceset_count, from the cache
    manager.metrics.registry.register(InventoryCollector(manager.cache))
    return Operator(manager, provisioner, workspace, inferenceset)


def webhook_validation_options(options: OperatorOptions) -> ValidationOptions:
    """What the operator's webhook judges Workspaces by: the API's defaults plus the operator's
    pod policy, so that ``--allow-privileged-pods`` reaches admission."""
    from kaito.api.validation import ValidationOptions

    return ValidationOptions(refuse_privileged_pods=options.refuse_privileged_pods)


def _add_webhook(manager: Manager, options: OperatorOptions) -> None:
    from kaito.api.webhook import new_webhook_server
    from kaito.runtime import WebhookServerOptions

    if options.webhook_certs not in ("self-signed", "external"):
        raise ValueError(f"--webhook-certs {options.webhook_certs!r}: use self-signed or external")
    server_options = WebhookServerOptions(
        port=options.webhook_port, cert_poll_interval=min(10.0, options.webhook_cert_validity / 30)
    )
    if options.webhook_cert_dir:
        server_options.cert_dir = options.webhook_cert_dir
    elif options.webhook_certs == "external":
        raise ValueError("--webhook-certs external needs --webhook-cert-dir (the mounted tls.crt, tls.key)")
    if options.webhook_certs == "self-signed":
        from kaito.operator.certs import CertController, CertOptions

        certs = CertController(
            manager.client,
            CertOptions(
                namespace=options.webhook_namespace,
                secret_name=options.webhook_secret_name,
                service_name=options.webhook_service_name,
                cert_dir=server_options.cert_dir,
                extra_hosts=options.webhook_hosts,
                cert_validity=options.webhook_cert_validity,
                # Check at least every tenth of a lifetime, so short test lifetimes rotate in time.
                resync=min(300.0, options.webhook_cert_validity / 10),
            ),
        )
        manager.add(certs)
    server = new_webhook_server(
        server_options,
        webhook_validation_options(options),
        metrics=manager.metrics,
        client=manager.client,
    )
    manager.add(server)
    # Not Ready until the server completes a TLS handshake: the Service must not send admission
    # calls to a replica still waiting for its certificate.
    manager.add_readyz_check("webhook", server.started_checker())


async def served_options(config: Any, options: OperatorOptions) -> OperatorOptions:
    """``options`` less the controllers whose API the cluster does not serve yet.

    Why: ``helm upgrade`` never installs a CRD that is new in the chart, so a cluster upgraded to
    a kaito with the InferenceSet controller may lack its CRD. The controller's informer would
    then never sync and the whole operator would stop at start; Workspaces matter more. The
    InferenceSet controller is left off instead, with one warning naming the fix (it starts on
    the next operator start once the CRD exists). The Workspace CRD is not optional: its absence
    stays the start-up error it is."""
    from kaito.controllers.inferenceset import INFERENCESET
    from kaito.runtime import Client, NotFoundError

    if not options.feature_gates.inference_set:
        return options
    async with Client(config, user_agent=options.user_agent) as client:
        try:
            await client.mapper.resource_for(INFERENCESET)
        except NotFoundError:
            log.warning(
                "the InferenceSet API is not served by this cluster, so the InferenceSet controller "
                "is off; install its CRD (helm upgrade does not add new CRDs) with "
                "`kubectl apply --server-side -f charts/kaito/crds/` or "
                "`kaito crds --group kaito.sh | kubectl apply --server-side -f -`, then restart kaito",
                crd="inferencesets.kaito.sh",
            )
            return dataclasses.replace(
                options, feature_gates=dataclasses.replace(options.feature_gates, inference_set=False)
            )
    return options


async def run(options: OperatorOptions) -> None:
    """Load the kubeconfig, build and run until SIGTERM/SIGINT."""
    from kaito.runtime import load_configuration

    config = await load_configuration(options.kubeconfig, options.context)
    options = await served_options(config, options)
    op = build_operator(config, options)
    log.info(
        "starting kaito controller", node_provisioner=options.node_provisioner, image=options.inference_image
    )
    await op.start()
