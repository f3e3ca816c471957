"""The Workspace controller: GPU nodes (through a NodeProvisioner), the inference workload, its
Services and the Workspace status, reconciled level-triggered on :mod:`kaito.runtime`.

Modules, one concept each: ``reconciler`` (the loop and event mapping), ``inference`` (the
StatefulSet), ``services``, ``configmap`` (the default inference config), ``revision`` (spec
hashes and ControllerRevisions), ``status`` (conditions and failure reasons), ``sync`` (write
only what changed), ``labels`` (names), ``options``. Tuning Workspaces are dispatched to
``WorkspaceReconciler.tuning``.
"""

from kaito.controllers.workspace.options import (
    DEFAULT_INFERENCE_IMAGE,
    DEFAULT_TUNING_IMAGE,
    WorkspaceControllerOptions,
)
from kaito.controllers.workspace.reconciler import (
    WORKSPACE,
    WorkspaceReconciler,
    cache_label_selectors,
    setup,
)

__all__ = [
    "DEFAULT_INFERENCE_IMAGE",
    "DEFAULT_TUNING_IMAGE",
    "WORKSPACE",
    "WorkspaceControllerOptions",
    "WorkspaceReconciler",
    "cache_label_selectors",
    "setup",
]
