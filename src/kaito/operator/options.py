"""Every setting of the operator process, in one dataclass (the CLI flags map onto it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kaito.controllers.workspace import DEFAULT_INFERENCE_IMAGE, DEFAULT_TUNING_IMAGE
from kaito.controllers.workspace.options import DEFAULT_WEIGHTS_PULLER_IMAGE
from kaito.operator.featuregates import FeatureGates
from kaito.provisioners.options import BYOOptions, GPUProvisionerOptions, KarpenterOptions


@dataclass
class OperatorOptions:
    #: kubeconfig file; None means in-cluster ServiceAccount, then $KUBECONFIG / ~/.kube/config.
    kubeconfig: str | None = None
    #: kubeconfig context; None means the current one.
    context: str | None = None
    #: Prometheus metrics address (controller-runtime's ``--metrics-bind-address``); "0" disables.
    metrics_bind_address: str = ":8080"
    #: /healthz and /readyz address (``--health-probe-bind-address``); "0" disables.
    health_probe_bind_address: str = ":8081"
    #: Hold a Lease before reconciling, so that only one replica acts at a time.
    leader_elect: bool = False
    #: Name of that Lease.
    leader_election_id: str = "kaito-workspace-controller"
    #: Namespace of that Lease.
    leader_election_namespace: str = "kaito-system"
    #: Which NodeProvisioner backend gets GPU nodes: a key of ``kaito.operator.BACKENDS``.
    node_provisioner: str = "byo"
    #: ``gpu-provisioner`` backend only: also run kaito's node-provisioner (the NodeClaim
    #: controller) in this process, with this cloud. Only ``kwok`` (the local cluster); "" leaves
    #: the claims to another process (``kaito node-provisioner``, or Azure's gpu-provisioner),
    #: which is how a real cloud runs, with its own identity.
    node_provisioner_cloud: str = ""
    #: kwok cloud: label selector (``--local-nodes``) of the claims whose Nodes kaito's local node
    #: agent runs for real instead of kwok; "" none.
    local_nodes: str = ""
    #: kwok cloud: label selector (``--real-nodes``) of the claims served by adopting an idle real
    #: node (``kaito local up --node real``; label ``kaito.sh/kubelet=real``); "" none.
    real_nodes: str = ""
    #: Image of the inference server container.
    inference_image: str = DEFAULT_INFERENCE_IMAGE
    #: Image of the tuning Job's container (``--tuning-image``; the chart's ``tuningImage``).
    tuning_image: str = DEFAULT_TUNING_IMAGE
    #: Image of the init container pulling ``kaito.sh/weights-image`` (``--weights-puller-image``).
    weights_puller_image: str = DEFAULT_WEIGHTS_PULLER_IMAGE
    #: StorageClass of the weights cache claim on NVMe SKUs (``--weights-nvme-storage-class``;
    #: "" always uses an emptyDir).
    weights_nvme_storage_class: str = "kaito-local-nvme-disk"
    #: ``imagePullPolicy`` of the containers kaito writes ("" keeps the API's default).
    image_pull_policy: str = "IfNotPresent"
    #: Workspaces reconciled concurrently.
    max_concurrent_reconciles: int = 16
    #: ControllerRevisions kept per Workspace.
    revision_history_limit: int = 10
    #: Serve the Workspace admission webhook (validating + defaulting) in this process.
    webhook: bool = False
    #: The Workspace pod policy the webhook enforces (``kaito.api.workspace.podpolicy``): refuse
    #: ``inference.template`` pods that are privileged, use the node's network/PID/IPC, mount
    #: hostPath, add capabilities or run as another ServiceAccount, and hostPath tuning volumes.
    #: On by default: creating a Workspace must not mean owning a node. ``--allow-privileged-pods``
    #: (chart value ``refusePrivilegedPods: false``) turns it off.
    refuse_privileged_pods: bool = True
    #: Webhook HTTPS port.
    webhook_port: int = 9443
    #: Folder holding the webhook's ``tls.crt`` / ``tls.key`` (required with ``webhook``;
    #: re-read when the files rotate).
    webhook_cert_dir: str | None = None
    #: Watch and reconcile only this namespace (None: all namespaces).
    namespace: str | None = None
    #: User-Agent prefix of API requests (the audit log's userAgent).
    user_agent: str = "kaito-controller"
    #: Log format: "console" for people, "json" for collectors.
    log_format: str = "console"
    #: ``byo`` backend's settings (none: it uses the nodes the user has).
    byo: BYOOptions = field(default_factory=BYOOptions)
    #: ``gpu-provisioner`` backend's settings: the cloud (``--cloud-provider``, else
    #: ``$CLOUD_PROVIDER`` from the chart, else azure).
    gpu_provisioner: GPUProvisionerOptions = field(default_factory=GPUProvisionerOptions)
    #: ``karpenter`` backend's settings: the node class (``--karpenter-node-class``).
    karpenter: KarpenterOptions = field(default_factory=KarpenterOptions)
    #: Where the webhook's serving pair comes from: "self-signed" (kaito.operator.certs keeps a
    #: CA in a Secret, issues, rotates and patches the caBundle) or "external" (cert-manager or
    #: anyone else mounts the files into ``webhook_cert_dir``).
    webhook_certs: str = "self-signed"
    #: Namespace of the webhook Service and certificate Secret (the operator's own).
    webhook_namespace: str = "kaito-system"
    #: Name of the webhook Service (the certificate's DNS names derive from it).
    webhook_service_name: str = "kaito-webhook-service"
    #: Secret holding the webhook CA and serving pair.
    webhook_secret_name: str = "kaito-webhook-server-cert"
    #: Extra names/IPs in the serving certificate (out-of-cluster runs: 127.0.0.1).
    webhook_hosts: tuple[str, ...] = ()
    #: Lifetime of a serving certificate, seconds (rotated when a third is left).
    webhook_cert_validity: float = 365 * 86400.0
    #: Feature gates (``--feature-gates vLLM=true``), parsed by
    #: :func:`kaito.operator.featuregates.parse_feature_gates`; checked again by build_operator.
    feature_gates: FeatureGates = field(default_factory=FeatureGates)
    #: Leader-election lease duration, seconds (client-go's default).
    lease_duration: float = 15.0
    #: How long the leader keeps retrying a renewal before it steps down, seconds.
    renew_deadline: float = 10.0
    #: Seconds between leader-election attempts.
    retry_period: float = 2.0
