"""Every setting of the operator process (``kaito controller``), as nested dataclasses.

One field per setting, each with a docstring that is also its flag's help text: ``kaito
controller`` builds its help from :func:`kaito.runtime.field_docs` of these classes, so a setting
is described once, next to its default (a unit test holds every field to appearing in the help).
Groups nest: the webhook, leader election, the NodeProvisioner backend (with each backend's own
typed options, :mod:`kaito.provisioners.options`) and the in-process cloud (each cloud's own
options, :mod:`kaito.provisioners.cloud.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kaito.controllers.workspace import DEFAULT_INFERENCE_IMAGE, DEFAULT_TUNING_IMAGE
from kaito.controllers.workspace.options import DEFAULT_WEIGHTS_PULLER_IMAGE
from kaito.operator.featuregates import FeatureGates
from kaito.provisioners.cloud import CloudOptions, default_cloud_options
from kaito.provisioners.options import BYOOptions, GPUProvisionerOptions, KarpenterOptions


@dataclass
class WebhookOptions:
    """The Workspace admission webhook (validating + defaulting) and its serving certificate."""

    enabled: bool = False
    """Serve the admission webhook in this process."""
    port: int = 9443
    """Webhook TLS port."""
    cert_dir: str | None = None
    """Folder with the webhook's tls.crt and tls.key (re-read when the files rotate); required
    with external certificates."""
    certs: str = "self-signed"
    """Where the serving pair comes from: self-signed (kaito keeps a CA in a Secret, issues,
    rotates and patches the caBundle) or external (cert-manager or anyone else mounts the files
    into the cert dir)."""
    namespace: str = "kaito-system"
    """Namespace of the webhook Service and certificate Secret (the operator's own)."""
    service_name: str = "kaito-webhook-service"
    """Name of the webhook Service (the certificate's DNS names derive from it)."""
    secret_name: str = "kaito-webhook-server-cert"
    """Secret holding the webhook CA and serving pair."""
    hosts: tuple[str, ...] = ()
    """Extra name or IP in the serving certificate, repeatable (out-of-cluster runs: 127.0.0.1)."""
    cert_validity: float = 365 * 86400.0
    """Lifetime of a serving certificate in seconds (rotated when a third is left)."""
    refuse_privileged_pods: bool = True
    """Workspace pod policy of the webhook: refuse inference templates that are privileged, use
    host namespaces or hostPath, add capabilities or name another ServiceAccount, and hostPath
    tuning volumes. On by default: creating a Workspace must not mean owning a node."""


@dataclass
class ElectionOptions:
    """Leader election: only the replica holding the Lease reconciles."""

    enabled: bool = False
    """Hold a Lease before reconciling, so that only one replica acts at a time."""
    id: str = "kaito-workspace-controller"
    """Name of the Lease."""
    namespace: str = "kaito-system"
    """Namespace of the Lease."""
    lease_duration: float = 15.0
    """Leader-election lease (s): how long followers wait before taking over."""
    renew_deadline: float = 10.0
    """Leader-election renew deadline (s): the leader steps down if it has not renewed by then."""
    retry_period: float = 2.0
    """Leader-election retry period (s): seconds between renewals and acquisition attempts."""


@dataclass
class ProvisionerOptions:
    """Which NodeProvisioner backend gets GPU nodes, and each backend's own typed settings."""

    name: str = "byo"
    """How GPU nodes are obtained: byo (the user's nodes), gpu-provisioner (NodeClaims) or
    karpenter (a NodePool per Workspace)."""
    byo: BYOOptions = field(default_factory=BYOOptions)
    """byo backend's settings (none: it uses the nodes the user has)."""
    gpu_provisioner: GPUProvisionerOptions = field(default_factory=GPUProvisionerOptions)
    """gpu-provisioner backend's settings."""
    karpenter: KarpenterOptions = field(default_factory=KarpenterOptions)
    """karpenter backend's settings."""


@dataclass
class InProcessCloud:
    """kaito's node-provisioner run inside ``kaito controller`` (gpu-provisioner backend only)."""

    name: str = ""
    """gpu-provisioner backend: also serve the NodeClaims in this process with this cloud (kwok);
    empty: another process does (kaito node-provisioner, Azure's gpu-provisioner), which is how a
    real cloud runs, with its own identity."""
    clouds: dict[str, CloudOptions] = field(default_factory=default_cloud_options)
    """Each registered cloud's settings, by cloud name; only the chosen cloud's are used."""


@dataclass
class OperatorOptions:
    """Everything ``kaito controller`` is configured by."""

    kubeconfig: str | None = None
    """kubeconfig file (default: in-cluster ServiceAccount, then $KUBECONFIG, then ~/.kube/config)."""
    context: str | None = None
    """kubeconfig context (default: the current one)."""
    metrics_bind_address: str = ":8080"
    """Prometheus metrics address; 0 disables."""
    health_probe_bind_address: str = ":8081"
    """/healthz and /readyz address; 0 disables."""
    inference_image: str = DEFAULT_INFERENCE_IMAGE
    """Image of the inference server."""
    tuning_image: str = DEFAULT_TUNING_IMAGE
    """Image of the tuning Jobs (the chart's tuningImage)."""
    weights_puller_image: str = DEFAULT_WEIGHTS_PULLER_IMAGE
    """Image (sh + oras) of the init container pulling kaito.sh/weights-image (the chart's
    weightsPullerImage)."""
    weights_nvme_storage_class: str = "kaito-local-nvme-disk"
    """StorageClass of the weights cache claim on SKUs with local NVMe (empty: always an emptyDir)."""
    image_pull_policy: str = "IfNotPresent"
    """imagePullPolicy of kaito's containers (empty keeps the API's default)."""
    max_concurrent_reconciles: int = 16
    """Workspaces reconciled at once."""
    revision_history_limit: int = 10
    """ControllerRevisions kept per Workspace."""
    tls_read_buffer_kib: int = 32
    """Read buffer of each TLS connection to the apiserver, in KiB. asyncio gives every TLS
    connection a 256 KiB buffer, filled with zeros up front, so 40 open connections (the pooled
    requests plus one per watch) hold 10 MB; the JSON a controller reads comes in far smaller
    pieces."""
    namespace: str | None = None
    """Watch and reconcile only this namespace (default: all namespaces)."""
    user_agent: str = "kaito-controller"
    """User-Agent prefix of API requests (the audit log's userAgent)."""
    log_format: str = "console"
    """Log format: console (for people), json (for collectors) or auto (json in a pod, console
    elsewhere)."""
    log_level: str = "info"
    """Log level: debug, info, warning or error."""
    feature_gates: FeatureGates = field(default_factory=FeatureGates)
    """Feature gates as comma-separated gate=bool pairs, e.g. vLLM=true (upstream Kaito's names)."""
    webhook: WebhookOptions = field(default_factory=WebhookOptions)
    """The admission webhook."""
    leader_election: ElectionOptions = field(default_factory=ElectionOptions)
    """Leader election."""
    provisioner: ProvisionerOptions = field(default_factory=ProvisionerOptions)
    """The NodeProvisioner backend."""
    cloud: InProcessCloud = field(default_factory=InProcessCloud)
    """The in-process node-provisioner's cloud."""


__all__ = ["ElectionOptions", "InProcessCloud", "OperatorOptions", "ProvisionerOptions", "WebhookOptions"]
