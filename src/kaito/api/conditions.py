"""Names shared by the Workspace controller, the printer columns and the docs.

Kept in one place so the CRD's ``kubectl get`` columns and the controller that writes the
conditions cannot drift apart.
"""

from __future__ import annotations

from typing import Final

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

# Condition types on Workspace.status.conditions.
RESOURCE_READY: Final = "ResourceReady"
NODE_CLAIM_READY: Final = "NodeClaimReady"
INFERENCE_READY: Final = "InferenceReady"
JOB_STARTED: Final = "JobStarted"
WORKSPACE_SUCCEEDED: Final = "WorkspaceSucceeded"
WORKSPACE_READY: Final = "WorkspaceReady"

# Workspace.status.state values.
STATE_PENDING: Final = "Pending"
STATE_PROVISIONING: Final = "Provisioning"
STATE_RUNNING: Final = "Running"
STATE_READY: Final = "Ready"
STATE_SUCCEEDED: Final = "Succeeded"
STATE_FAILED: Final = "Failed"
STATE_DELETING: Final = "Deleting"
STATES: Final = (
    STATE_PENDING,
    STATE_PROVISIONING,
    STATE_RUNNING,
    STATE_READY,
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
FINALIZER: Final = "workspace.finalizer.kaito.sh"
#: Label key prefixes that a user's labelSelector may not rely on alone.
RESERVED_LABEL_PREFIXES: Final = ("kaito.sh/", "kubernetes.io/", "k8s.io/", "karpenter.sh/")
