"""Build a running operator from OperatorOptions: Manager, provisioner backend, controllers.

Backends are chosen by name from :data:`kaito.provisioners.registry.BACKENDS` (re-exported here
as :data:`BACKENDS`); each is built with its own typed options, picked out of
``OperatorOptions.provisioner``. The gpu-provisioner backend may also run kaito's node-provisioner
in this process (``--node-provisioner-cloud``, :mod:`kaito.operator.nodeprovisioner`).
"""

from __future__ import annotations

import dataclasses
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
from kaito.operator.nodeprovisioner import in_process_options, setup_node_provisioner
from kaito.operator.options import OperatorOptions, ProvisionerOptions
from kaito.provisioners.registry import BACKENDS, BackendOptions, BackendSpec
from kaito.runtime import LeaderElectionOptions, Manager, get_logger

if TYPE_CHECKING:
    from kaito.api.validation import ValidationOptions

log = get_logger("kaito.operator")


def backend_options(options: ProvisionerOptions, spec: BackendSpec) -> BackendOptions:
    """The field of ``options`` holding the settings ``spec``'s backend takes."""
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if isinstance(value, spec.options):
            return value
    return spec.options()


def make_provisioner(manager: Manager, options: OperatorOptions) -> NodeProvisioner:
    """The backend ``options.provisioner.name`` names, with its own options; the in-process
    node-provisioner too when asked for."""
    name = options.provisioner.name
    spec = BACKENDS.get(name)
    if spec is None:
        raise ValueError(
            f"--node-provisioner {name!r} is not available; choose one of: {', '.join(sorted(BACKENDS))}"
        )
    # Checked before anything is built: a combination that cannot work is refused at start.
    in_process = in_process_options(options)
    backend = spec.new(manager, backend_options(options.provisioner, spec))
    if in_process is not None:
        setup_node_provisioner(manager, in_process)
    return backend


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
    le = options.leader_election
    election = (
        LeaderElectionOptions(
            name=le.id,
            namespace=le.namespace,
            lease_duration=le.lease_duration,
            renew_deadline=le.renew_deadline,
            retry_period=le.retry_period,
        )
        if le.enabled
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
    if options.webhook.enabled:
        _add_webhook(manager, options)
    # upstream's kaito_workspace_count / _preset_count / kaito_inferenceset_count, from the cache
    manager.metrics.registry.register(InventoryCollector(manager.cache))
    return Operator(manager, provisioner, workspace, inferenceset)


def webhook_validation_options(options: OperatorOptions) -> ValidationOptions:
    """What the operator's webhook judges Workspaces by: the API's defaults plus the operator's
    pod policy (so that ``--allow-privileged-pods`` reaches admission); with the karpenter
    backend, the node classes ``kaito.sh/node-class-name`` may name; the partition gates
    (``enableMIG``, ``enableAccelerator``); and whether nodes are the user's (``byo``: kaito
    provisions nothing, so no instance type is required and ``resource.partition`` is allowed,
    as under upstream's ``disableNodeAutoProvisioning``)."""
    from kaito.api.validation import ValidationOptions

    karpenter = options.provisioner.karpenter if options.provisioner.name == "karpenter" else None
    gates = options.feature_gates
    return ValidationOptions(
        auto_provisioning=options.provisioner.name != "byo",
        refuse_privileged_pods=options.webhook.refuse_privileged_pods,
        node_class_names=karpenter.class_names if karpenter is not None else None,
        mig=gates.mig,
        accelerator=gates.accelerator,
    )


def _add_webhook(manager: Manager, options: OperatorOptions) -> None:
    from kaito.api.webhook import new_webhook_server
    from kaito.runtime import WebhookServerOptions

    wh = options.webhook
    if wh.certs not in ("self-signed", "external"):
        raise ValueError(f"--webhook-certs {wh.certs!r}: use self-signed or external")
    server_options = WebhookServerOptions(port=wh.port, cert_poll_interval=min(10.0, wh.cert_validity / 30))
    if wh.cert_dir:
        server_options.cert_dir = wh.cert_dir
    elif wh.certs == "external":
        raise ValueError("--webhook-certs external needs --webhook-cert-dir (the mounted tls.crt, tls.key)")
    if wh.certs == "self-signed":
        from kaito.operator.certs import CertController, CertOptions

        certs = CertController(
            manager.client,
            CertOptions(
                namespace=wh.namespace,
                secret_name=wh.secret_name,
                service_name=wh.service_name,
                cert_dir=server_options.cert_dir,
                extra_hosts=wh.hosts,
                cert_validity=wh.cert_validity,
                # Check at least every tenth of a lifetime, so short test lifetimes rotate in time.
                resync=min(300.0, wh.cert_validity / 10),
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
    from kaito.runtime import load_configuration, set_tls_read_buffer

    set_tls_read_buffer(options.tls_read_buffer_kib * 1024)  # before the first connection
    config = await load_configuration(options.kubeconfig, options.context)
    options = await served_options(config, options)
    op = build_operator(config, options)
    log.info(
        "starting kaito controller", node_provisioner=options.provisioner.name, image=options.inference_image
    )
    await op.start()
