"""Names shared by the Workspace controller, the printer columns and the docs.

Kept in one place so the CRD's ``kubectl get`` columns and the controller that writes the
conditions cannot drift apart.
"""

from __future__ import annotations

from typing import Final

from kaito.presets.fitting import BYPASS_ANNOTATION

GROUP: Final = "kaito.sh"
KIND: Final = "Workspace"
PLURAL: Final = "workspaces"
SINGULAR: Final = "workspace"
SHORT_NAMES: Final = ("wk", "wks")
CATEGORIES: Final = ("kaito",)
V1ALPHA1: Final = "v1alpha1"
V1BETA1: Final = "v1beta1"
STORAGE_VERSION: Final = V1BETA1
VERSIONS: Final = (V1ALPHA1, V1BETA1)

# Condition types on Workspace.status.conditions. The first six are upstream Kaito's
# (api/v1beta1/condition_types.go), so tools written for upstream find them by the same names.
RESOURCE_READY: Final = "ResourceReady"
NODE_CLAIM_READY: Final = "NodeClaimReady"
INFERENCE_READY: Final = "InferenceReady"
JOB_STARTED: Final = "JobStarted"
#: True from the moment a Workspace is being deleted until its finalizer is removed.
WORKSPACE_DELETING: Final = "WorkspaceDeleting"
WORKSPACE_SUCCEEDED: Final = "WorkspaceSucceeded"
#: Upstream's node condition (``ConditionTypeNodeStatus``): True once the nodes the Workspace needs
#: are Ready. kaito also folds it into ResourceReady, as upstream does.
NODES_READY: Final = "NodesReady"
#: kaito's own: the seed's ``kubectl get workspace`` column (same verdict as WorkspaceSucceeded
#: for inference; for tuning True once the Job succeeded).
WORKSPACE_READY: Final = "WorkspaceReady"
UPSTREAM_CONDITION_TYPES: Final = (
    NODES_READY,
    NODE_CLAIM_READY,
    RESOURCE_READY,
    INFERENCE_READY,
    JOB_STARTED,
    WORKSPACE_DELETING,
    WORKSPACE_SUCCEEDED,
)
#: kaito's own, present only with ``kaito.sh/enablelb``: False while the LoadBalancer serves the
#: model to anyone (no ``kaito.sh/api-key-secret``), True once an API key guards it.
INFERENCE_ENDPOINT_SECURED: Final = "InferenceEndpointSecured"
CONDITION_TYPES: Final = (*UPSTREAM_CONDITION_TYPES, WORKSPACE_READY, INFERENCE_ENDPOINT_SECURED)

# Workspace.status.state values. Upstream's six (api/v1beta1 WorkspaceState): Pending, Ready,
# NotReady (an inference service that was Ready and no longer is), Running, Succeeded, Failed.
# kaito adds Deleting (the finalizer is at work) and Provisioning (reserved; not written today).
STATE_PENDING: Final = "Pending"
STATE_PROVISIONING: Final = "Provisioning"
STATE_RUNNING: Final = "Running"
STATE_READY: Final = "Ready"
STATE_NOT_READY: Final = "NotReady"
STATE_SUCCEEDED: Final = "Succeeded"
STATE_FAILED: Final = "Failed"
STATE_DELETING: Final = "Deleting"
UPSTREAM_STATES: Final = (
    STATE_PENDING,
    STATE_READY,
    STATE_NOT_READY,
    STATE_RUNNING,
    STATE_SUCCEEDED,
    STATE_FAILED,
)
STATES: Final = (
    STATE_PENDING,
    STATE_PROVISIONING,
    STATE_RUNNING,
    STATE_READY,
    STATE_NOT_READY,
    STATE_SUCCEEDED,
    STATE_FAILED,
    STATE_DELETING,
)

# Labels and annotations kaito owns.
LABEL_WORKSPACE: Final = "kaito.sh/workspace"
LABEL_WORKSPACE_NAMESPACE: Final = "kaito.sh/workspacenamespace"
ANNOTATION_REVISION: Final = "workspace.kaito.io/revision"
#: JSON object with the architecture numbers of a custom (``org/model``) preset.
ANNOTATION_MODEL_PARAMETERS: Final = "kaito.sh/model-parameters"

# Workspace annotations upstream Kaito reads (api/v1beta1/labels.go), with the same meaning here.
#: ``"True"`` (upstream's value; kaito also takes ``true``): the inference Service is a
#: LoadBalancer instead of a ClusterIP, for testing from outside the cluster.
ANNOTATION_ENABLE_LB: Final = "kaito.sh/enablelb"
#: Which inference runtime the pod runs: ``vllm`` (default) or ``transformers``.
ANNOTATION_RUNTIME: Final = "kaito.sh/runtime"
RUNTIME_VLLM: Final = "vllm"
RUNTIME_TRANSFORMERS: Final = "transformers"
RUNTIMES: Final = (RUNTIME_VLLM, RUNTIME_TRANSFORMERS)
#: Present (any value, as upstream): skip the "does the preset fit these GPUs" checks, in the
#: webhook and in the controller's sizing; the user takes the risk of an out-of-memory start.
#: What it waives is decided in one place, :func:`kaito.presets.fit`, which owns the name.
ANNOTATION_BYPASS_RESOURCE_CHECKS: Final = BYPASS_ANNOTATION
#: The node image family of the nodes kaito provisions (copied onto the NodeClaim).
ANNOTATION_NODE_IMAGE_FAMILY: Final = "kaito.sh/node-image-family"
NODE_IMAGE_FAMILIES: Final = ("ubuntu", "azurelinux")
#: The Karpenter node class of the Workspace's NodePool (karpenter backend only): one of the
#: operator's ``--karpenter-node-classes`` by name; without it, the default class.
ANNOTATION_NODE_CLASS_NAME: Final = "kaito.sh/node-class-name"
#: ``"true"``: the model's weights are baked into the node image under
#: ``LOCAL_WEIGHTS_HOST_PREFIX/<preset name, lowercased, '/' -> '-'>``; the pod mounts that host
#: folder read-only and loads it, downloading nothing (upstream's name, path and meaning).
ANNOTATION_USE_LOCAL_WEIGHTS: Final = "kaito.sh/use-local-weights"
LOCAL_WEIGHTS_HOST_PREFIX: Final = "/opt/kaito/models"
#: vLLM's ``--performance-mode`` for the Workspace's server: ``balanced`` (vLLM's default),
#: ``interactivity`` (latency first) or ``throughput`` (tokens/s first). Upstream's name and values;
#: only a Workspace that sets it gets the flag, so other pod specs (and revisions) stay as they were.
ANNOTATION_PERFORMANCE_MODE: Final = "kaito.sh/performance-mode"
PERFORMANCE_MODES: Final = ("balanced", "interactivity", "throughput")
#: Upstream turns its post-load benchmark off with ``"true"``; kaito has no such benchmark, so the
#: annotation is accepted and changes nothing (docs/workspace-api.md).
ANNOTATION_DISABLE_BENCHMARK: Final = "kaito.sh/disable-benchmark"
# kaito's own Workspace annotations.
#: ``<secret-name>[/<key>]``: the inference server requires ``Authorization: Bearer <value>`` on
#: every route but /health and /metrics, the value being that Secret key's (key ``api-key`` when
#: not named). Upstream Kaito v0.12 has no API key for inference; this is kaito's addition.
ANNOTATION_API_KEY_SECRET: Final = "kaito.sh/api-key-secret"
DEFAULT_API_KEY_SECRET_KEY: Final = "api-key"
#: ``host/repository:tag`` of a weights artifact (``kaito models push``, docs/weights-images.md):
#: an init container pulls it with oras into the weights cache volume and the server loads it
#: from there. Upstream Kaito v0.12 has no Workspace field for this (its deprecated
#: ``presetOptions.image`` names the serving image, as it does in kaito); this is kaito's addition.
ANNOTATION_WEIGHTS_IMAGE: Final = "kaito.sh/weights-image"
FINALIZER: Final = "workspace.finalizer.kaito.sh"
#: Label key prefixes that a user's labelSelector may not rely on alone.
RESERVED_LABEL_PREFIXES: Final = ("kaito.sh/", "kubernetes.io/", "k8s.io/", "karpenter.sh/")
