"""The inference workload: plan the preset onto nodes, write the StatefulSet, its Services and
the namespace's default config, and read the status back from the pods.

Writes go through the controller's :class:`kaito.runtime.Writer`: each object only when its
desired manifest changed or someone edited what kaito sets. The Services go out in the
background (a ClusterIP Service can take the apiserver seconds to allocate when many are created
at once, and a worker waiting for it would hold up other Workspaces' StatefulSets).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from kaito.api import hub, names
from kaito.api.meta import selector_matches
from kaito.api.workspace import Workspace
from kaito.controllers.workspace import status
from kaito.controllers.workspace.inference import configmap, services
from kaito.controllers.workspace.inference.statefulset import Plan, PlanError, build_statefulset, plan_for
from kaito.controllers.workspace.labels import config_name, headless_name
from kaito.controllers.workspace.workload import (
    Refused,
    Report,
    Step,
    Teardown,
    WorkloadDeps,
    node_request,
    resource_check,
)
from kaito.nodes import NODE, NodeRequest, is_node_ready
from kaito.presets import GPUSku, ModelPreset
from kaito.presets.hub import HubModelError
from kaito.presets.nodelabels import NodeLabelsError, sku_from_node_labels
from kaito.runtime import CONFIGMAP, GVK, POD, SERVICE, STATEFULSET, NotOwnedError, Request, is_controlled_by

Obj = dict[str, Any]

#: Hub failures that pass by themselves: the plan is retried after HUB_RETRY seconds.
_HUB_TRANSIENT = frozenset({"HubUnreachable", "HubUnavailable"})
HUB_RETRY = 30.0


class InferenceWorkload:
    """:class:`~kaito.controllers.workspace.workload.Workload` of inference Workspaces."""

    owns: tuple[GVK, ...] = (STATEFULSET, SERVICE, CONFIGMAP)
    keeps_revisions = True

    def __init__(self, deps: WorkloadDeps) -> None:
        self.deps = deps
        self._plans: dict[tuple[str, tuple[tuple[str, str], ...], GPUSku | None], Plan | PlanError] = {}
        #: The last Hub answer per ``org/model`` name, kept for when the Hub cannot be reached.
        self._hub_known: dict[str, ModelPreset] = {}

    # ------------------------------------------------------------------ plan

    async def plan(self, ws: Obj, model: Workspace, digest: str) -> Plan:
        try:
            return self._plan(ws, digest, model, await self._hub_model(ws), self._node_sku(model))
        except PlanError as exc:
            refused = status.Outcome(
                resource=status.Check(False, exc.reason, str(exc), failed=True),
                endpoint=status.endpoint_check(ws["metadata"].get("annotations")),
            )
            # The Hub being down passes; a refusal (gated, unknown, unsupported) waits for an edit.
            retry = HUB_RETRY if exc.reason in _HUB_TRANSIENT else None
            raise Refused(Report(status.desired_status(ws, refused), requeue_after=retry)) from None

    def node_request(self, ws: Obj, model: Workspace, plan: Plan) -> NodeRequest:
        return node_request(
            ws,
            model,
            count=plan.node_count,
            storage_gib=plan.storage_gib,
            gpus_per_node=plan.gpus_per_node,
            gpu_resource=plan.gpu_resource,
        )

    def release_request(self, ws: Obj, model: Workspace) -> NodeRequest:
        try:
            return self.node_request(ws, model, plan_for(model, node_sku=self._node_sku(model)))
        except PlanError:
            return node_request(ws, model)

    async def _hub_model(self, ws: Obj) -> ModelPreset | None:
        """The Hub's sizing of an ``org/model`` preset kaito has no catalog entry for (cached in
        :mod:`kaito.api.hub`), read with the modelAccessSecret's token; None for catalog presets."""
        found = hub.hub_preset_of(ws)
        if found is None:
            return None
        name, secret = found
        token, note = None, ""
        if secret:
            token, note = await hub.read_token(self.deps.client, ws["metadata"]["namespace"], secret)
        try:
            found_model = await asyncio.to_thread(hub.resolve_hub_model, name, token)
        except HubModelError as exc:
            # A running Workspace must not fail because the Hub is down after the cache expired.
            last = self._hub_known.get(name)
            if last is not None and exc.reason in _HUB_TRANSIENT:
                return last
            extra = note if exc.reason == "GatedModel" else ""
            raise PlanError(exc.reason, f"inference.preset.name: {exc}{extra}") from None
        if len(self._hub_known) >= 1024:
            self._hub_known.pop(next(iter(self._hub_known)))
        self._hub_known[name] = found_model
        return found_model

    def _node_sku(self, model: Workspace) -> GPUSku | None:
        """Without an instance type, the GPUs of the first Ready node (by name) that the
        Workspace's labelSelector matches, read from its GPU Feature Discovery labels, as
        upstream sizes bring-your-own nodes; None when no such node is there yet (the node's
        arrival or relabelling brings the Workspace back)."""
        if model.resource.instance_type or model.inference is None or model.inference.preset is None:
            return None
        selector = model.resource.label_selector.to_dict()
        if not self.deps.cache.can_serve(NODE):
            return None
        # Filter before sorting: with a thousand nodes cached, sorting them all per plan is the
        # bulk of the cost, and the selector usually leaves a handful.
        nodes = sorted(
            (
                n
                for n in self.deps.cache.list(NODE)
                if selector_matches(selector, n["metadata"].get("labels") or {}) and is_node_ready(n)
            ),
            key=lambda n: n["metadata"]["name"],
        )
        for node in nodes:
            labels = node["metadata"].get("labels") or {}
            try:
                sku = sku_from_node_labels(labels)
            except NodeLabelsError as exc:
                raise PlanError("InvalidNodeLabels", f"node {node['metadata']['name']}: {exc}") from None
            if sku is not None:
                return sku
        return None

    def _plan(
        self,
        ws: Obj,
        digest: str,
        model: Workspace,
        hub_model: ModelPreset | None = None,
        node_sku: GPUSku | None = None,
    ) -> Plan:
        """``plan_for``, remembered per spec: the estimator is the costliest step of a
        reconcile (~0.5 ms) and its answer depends only on the spec, the annotations and, for
        bring-your-own nodes without an instance type, the nodes' GPU labels."""
        annotations = (ws.get("metadata") or {}).get("annotations") or {}
        key = (
            digest,
            tuple(sorted((k, v) for k, v in annotations.items() if k != names.ANNOTATION_REVISION)),
            node_sku,
        )
        hit = self._plans.get(key)
        if hit is None:
            try:
                hit = plan_for(model, hub_model, node_sku)
            except PlanError as exc:
                hit = exc
            if len(self._plans) >= 1024:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = hit
        if isinstance(hit, PlanError):
            raise PlanError(hit.reason, str(hit))
        return hit

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, step: Step[Plan]) -> Report:
        ws, plan, nodes = step.ws, step.plan, step.nodes
        meta = ws["metadata"]
        ns, name = meta["namespace"], meta["name"]
        writer = self.deps.writer
        outcome = status.Outcome(
            resource=resource_check(nodes),
            extra_conditions=nodes.conditions,
            worker_nodes=list(nodes.nodes),
            target_node_count=plan.node_count,
            endpoint=status.endpoint_check(meta.get("annotations")),
        )
        sts = writer.get(STATEFULSET, name, ns)
        if not nodes.ready and sts is None:
            return Report(status.desired_status(ws, outcome), requeue_after=nodes.requeue_after)

        requeue = nodes.requeue_after
        try:
            sts = await self._ensure_objects(step)
        except NotOwnedError as exc:
            outcome.inference = status.Check(False, "NotOwned", str(exc), failed=True)
            return Report(status.desired_status(ws, outcome))
        except PlanError as exc:
            outcome.inference = status.Check(False, exc.reason, str(exc), failed=True)
            return Report(status.desired_status(ws, outcome))
        pods = self.deps.cache.list(POD, ns, {names.LABEL_WORKSPACE: name})
        now = time.time()
        outcome.inference = status.inference_check(sts, pods, str(step.revision), now)
        recheck = status.unschedulable_recheck(pods, now) if not outcome.inference.ok else None
        if recheck is not None:  # a pod still in its grace period: look again when it ends
            requeue = min(recheck, requeue or recheck)
        if pods:
            outcome.worker_nodes = status.pod_nodes(pods) or outcome.worker_nodes
        if outcome.inference.ok and writer.get(SERVICE, name, ns) is None:
            # Ready means callable: not before the Service exists. Its creation event
            # brings us back; a write that keeps failing is the reason shown meanwhile.
            failure = writer.background_error(SERVICE, name, ns)
            if failure is None:
                return Report()
            outcome.inference = status.Check(
                False, "ServiceNotCreated", f"Service {ns}/{name}: {failure}", failed=True
            )
        return Report(status.desired_status(ws, outcome), requeue_after=requeue, hold_message_only=True)

    async def _ensure_objects(self, step: Step[Plan]) -> Obj:
        """The StatefulSet, Services and default ConfigMap, written concurrently; returns the
        StatefulSet as stored."""
        ws, model, plan = step.ws, step.model, step.plan
        assert model.inference is not None
        meta = ws["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        deps = self.deps
        if model.inference.config and deps.cache.get(CONFIGMAP, model.inference.config, ns) is None:
            raise PlanError(
                "ConfigMapNotFound",
                f"inference.config: ConfigMap {ns}/{model.inference.config} does not exist; "
                "create it or unset the field",
            )
        writes: list[Awaitable[object]] = []
        if not model.inference.config and model.inference.preset is not None:
            # Shared by the namespace's Workspaces (no owner): the writer serialises concurrent
            # writes of it, so the second finds the first's and sends nothing.
            writes.append(deps.writer.apply(CONFIGMAP, configmap.build_default_config(ns)))
        legacy = deps.cache.get(CONFIGMAP, config_name(name), ns)
        if legacy is not None and is_controlled_by(legacy, ws):
            # The per-Workspace default ConfigMap of earlier versions: shared per namespace now.
            writes.append(
                deps.client.delete(CONFIGMAP, legacy["metadata"]["name"], ns, ignore_not_found=True)
            )
        try:
            placement = deps.provisioner.placement(step.request, step.nodes)
            desired = build_statefulset(
                ws,
                model,
                plan,
                affinity=placement.affinity,
                tolerations=placement.tolerations,
                revision=step.revision,
                options=deps.options,
            )
            retry = Request(ns, name)
            # `<ws>` gates Ready (see reconcile), so it goes before every headless one waiting:
            # with many Workspaces at once the headless Services (which nothing waits on) would
            # otherwise hold the slots while the pods come up and Ready waits for `<ws>`.
            for svc, urgent in (
                (services.build_service(ws, multi_node=plan.multi_node), True),
                (services.build_headless_service(ws, multi_node=plan.multi_node), False),
            ):
                deps.writer.apply_in_background(SERVICE, svc, owner_uid=uid, retry=retry, urgent=urgent)
        except Exception:
            await asyncio.gather(*writes)  # started coroutines are awaited, not dropped
            raise
        sts, _ = await asyncio.gather(
            deps.writer.apply(STATEFULSET, desired, owner_uid=uid), asyncio.gather(*writes)
        )
        return sts

    # ------------------------------------------------------------------ deletion

    def teardown(self, ws: Obj) -> list[Teardown]:
        """The StatefulSet first, in the foreground (its pods go before the nodes do), then the
        Services and the legacy per-Workspace ConfigMap."""
        meta = ws["metadata"]
        ns, name = meta["namespace"], meta["name"]
        cache = self.deps.cache
        sts = self.deps.writer.get(STATEFULSET, name, ns)
        workload = Teardown(
            "deleting the inference workload",
            [(STATEFULSET, sts)] if sts is not None and is_controlled_by(sts, ws) else [],
            foreground=True,
            event=f"deleting StatefulSet {name} and its pods",
        )
        rest = [
            (gvk, obj)
            for gvk, obj in (
                (SERVICE, cache.get(SERVICE, name, ns)),
                (SERVICE, cache.get(SERVICE, headless_name(name), ns)),
                (CONFIGMAP, cache.get(CONFIGMAP, config_name(name), ns)),
            )
            if obj is not None and is_controlled_by(obj, ws)
        ]
        return [workload, Teardown("deleting the Services, ConfigMap and revisions", rest)]

    def forget(self, namespace: str, name: str) -> None:
        writer = self.deps.writer
        for gvk, child in (
            (STATEFULSET, name),
            (SERVICE, name),
            (SERVICE, headless_name(name)),
            (CONFIGMAP, config_name(name)),
        ):
            writer.forget(gvk, child, namespace)


__all__ = ["HUB_RETRY", "InferenceWorkload"]
