"""The InferenceSet controller: N Workspaces ``<set>-<index>`` from one template, scaled through
``spec.replicas`` (the scale subresource: ``kubectl scale``, HPA, KEDA), rolled one Workspace at a
time on a template change, status aggregated from the children.

Modules, one concept each: ``reconciler`` (the loop, writes and registration), ``plan`` (what to
create, delete and roll next: pure), ``status`` (the aggregated status: pure), ``pending`` (the
controller's own writes the cache has not shown yet), ``options``. It talks to Workspaces only
through the API; the workspace controller does the rest for each child.
"""

from kaito.controllers.inferenceset.options import InferenceSetControllerOptions
from kaito.controllers.inferenceset.reconciler import (
    INFERENCESET,
    InferenceSetReconciler,
    setup,
)

__all__ = ["INFERENCESET", "InferenceSetControllerOptions", "InferenceSetReconciler", "setup"]
