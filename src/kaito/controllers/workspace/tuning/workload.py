"""The tuning workload: once the nodes are ready, create the Job (and its default ConfigMap)
and read the Workspace's status back from the Job and its pods.

The Job is created once and never rewritten (its pod template is immutable, and a finished Job
is the record of the run), so it is a plain create, remembered by the controller's writer until
the cache shows it; an existing Job is only read.
"""

from __future__ import annotations

from typing import Any

from kaito.api import names
from kaito.api.workspace import Workspace
from kaito.controllers.workspace.status import Check
from kaito.controllers.workspace.tuning.job import (
    CONFIGMAP,
    JOB,
    POD,
    JobOutcome,
    TuningJobOptions,
    build_tuning_job,
    desired_tuning_status,
    job_status_to_conditions,
    tuning_config_name,
)
from kaito.controllers.workspace.workload import (
    Report,
    Step,
    Teardown,
    WorkloadDeps,
    node_request,
    resource_check,
)
from kaito.nodes import NodeRequest
from kaito.runtime import GVK, AlreadyExistsError

Obj = dict[str, Any]


class TuningWorkload:
    """:class:`~kaito.controllers.workspace.workload.Workload` of tuning Workspaces. The plan
    is ``None``: the node count is ``resource.count``."""

    owns: tuple[GVK, ...] = (JOB, CONFIGMAP)
    keeps_revisions = False

    def __init__(self, deps: WorkloadDeps, options: TuningJobOptions | None = None) -> None:
        self.deps = deps
        #: How the Job is built (image, deadlines, caps); replaceable between reconciles.
        self.options = options or TuningJobOptions()

    async def plan(self, ws: Obj, model: Workspace, digest: str) -> None:
        return None

    def node_request(self, ws: Obj, model: Workspace, plan: None) -> NodeRequest:
        return node_request(ws, model)

    def release_request(self, ws: Obj, model: Workspace) -> NodeRequest:
        return node_request(ws, model)

    async def reconcile(self, step: Step[None]) -> Report:
        ws, model, nodes = step.ws, step.model, step.nodes
        meta = ws["metadata"]
        ns, name = meta["namespace"], meta["name"]
        deps = self.deps
        job = deps.writer.get(JOB, name, ns)
        resource = resource_check(nodes)
        if job is None and nodes.ready:
            assert model.tuning is not None
            if model.tuning.config and deps.cache.get(CONFIGMAP, model.tuning.config, ns) is None:
                problem = Check(
                    False,
                    "ConfigMapNotFound",
                    f"tuning.config: ConfigMap {ns}/{model.tuning.config} does not exist; "
                    "create it or unset the field",
                    failed=True,
                )
                outcome = JobOutcome(problem, problem, names.STATE_FAILED)
                return Report(desired_tuning_status(ws, resource, outcome, nodes.conditions))
            placement = deps.provisioner.placement(step.request, nodes)
            desired, config = build_tuning_job(
                ws, self.options, affinity=placement.affinity, tolerations=placement.tolerations
            )
            if config is not None:
                await deps.writer.apply(CONFIGMAP, config, owner_uid=meta["uid"])
            try:
                job = await deps.client.create(desired, field_manager=deps.options.field_manager)
                deps.writer.remember(JOB, job)
            except AlreadyExistsError:
                job = deps.writer.get(JOB, name, ns)
        pods = deps.cache.list(POD, ns, {names.LABEL_WORKSPACE: name}) if job is not None else []
        outcome = job_status_to_conditions(job, pods)
        return Report(
            desired_tuning_status(ws, resource, outcome, nodes.conditions),
            requeue_after=nodes.requeue_after if job is None else None,
        )

    def teardown(self, ws: Obj) -> list[Teardown]:
        """No ordered steps: the Job and its ConfigMap carry the Workspace's controller
        reference, and the garbage collector deletes them with it."""
        return []

    def forget(self, namespace: str, name: str) -> None:
        self.deps.writer.forget(JOB, name, namespace)
        self.deps.writer.forget(CONFIGMAP, tuning_config_name(name), namespace)


__all__ = ["TuningWorkload"]
