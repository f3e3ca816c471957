"""Inference Workspaces: a StatefulSet, its Services and the shared default inference config.

Modules: ``statefulset`` (the plan and the pod spec), ``services``, ``configmap`` (the default
inference config), ``workload`` (:class:`InferenceWorkload`, the reconciler's plug-in). The
builders' names are re-exported here, so ``inference.plan_for`` and ``inference.PlanError``
read as before.
"""

from kaito.controllers.workspace.inference.statefulset import (
    CONTAINER,
    GPU,
    TOLERATIONS,
    Plan,
    PlanError,
    api_key_env,
    build_statefulset,
    leader_address,
    plan_for,
    pull_secrets,
    template_gpus,
)
from kaito.controllers.workspace.inference.workload import HUB_RETRY, InferenceWorkload

__all__ = [
    "CONTAINER",
    "GPU",
    "HUB_RETRY",
    "TOLERATIONS",
    "InferenceWorkload",
    "Plan",
    "PlanError",
    "api_key_env",
    "build_statefulset",
    "leader_address",
    "plan_for",
    "pull_secrets",
    "template_gpus",
]
