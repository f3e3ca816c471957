"""The Workspace controller: GPU nodes (through a NodeProvisioner), the workload, its Services
and the Workspace status, reconciled level-triggered on :mod:`kaito.runtime`.

A thin ``reconciler`` (finalizer, revision, nodes, dispatch, status, deletion order, event
mapping) over ``Workload`` plug-ins that are peers: ``inference`` (the StatefulSet, its Services,
the default inference config) and ``tuning`` (the Job). Beside them: ``workload`` (the seam:
the protocol and what crosses it), ``statuswriter`` (the one writer of Workspace status),
``status`` (conditions and failure reasons), ``revision`` (spec hashes and
ControllerRevisions), ``labels``, ``podsecurity``, ``options``. Children are written through
:class:`kaito.runtime.Writer` (write only what changed). See docs/design/workspace-seam.md.
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
