"""The Workspace reconciler: level-triggered, idempotent, and silent when converged.

Each reconcile reads the Workspace and everything it owns from the informer cache, computes
what should exist, and writes only the differences: children through server-side apply when
their desired-manifest hash differs (see :mod:`.sync`), the status only when it differs from the
stored one. A converged Workspace therefore costs no API request at all.

Inference Workspaces are handled here; tuning Workspaces go to :attr:`WorkspaceReconciler.tuning`
(the seam for :mod:`.tuning`): a coroutine ``(reconciler, ws_obj, ws_model) -> Result | None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pydantic import ValidationError

from kaito.api import hub, names
from kaito.api.meta import selector_matches
from kaito.api.workspace import Workspace
from kaito.controllers.workspace import configmap, inference, revision, services, status, tuning
from kaito.controllers.workspace.labels import config_name, headless_name
from kaito.controllers.workspace.options import WorkspaceControllerOptions
from kaito.controllers.workspace.sync import (
    Accepted,
    NotOwnedError,
    RecentWrites,
    check_owner,
    revert_patch,
    stamp,
    up_to_date,
)
from kaito.nodes import NodeProvisioner, NodeRequest
from kaito.presets import ModelPreset
from kaito.presets.hub import HubModelError
from kaito.runtime import (
    GVK,
    NORMAL,
    WARNING,
    AlreadyExistsError,
    Controller,
    EventRecorder,
    Manager,
    NotFoundError,
    Predicate,
    Request,
    Result,
    get_logger,
    has_finalizer,
    is_being_deleted,
    is_controlled_by,
)

Obj = dict[str, Any]

WORKSPACE = GVK(names.GROUP, names.STORAGE_VERSION, names.KIND)
STATEFULSET = GVK("apps", "v1", "StatefulSet")
SERVICE = GVK("", "v1", "Service")
CONFIGMAP = GVK("", "v1", "ConfigMap")
POD = GVK("", "v1", "Pod")
NODE = GVK("", "v1", "Node")
CONTROLLER_REVISION = revision.CONTROLLER_REVISION

TuningHandler = Callable[["WorkspaceReconciler", Obj, Workspace], Awaitable[Result | None]]

log = get_logger("kaito.controllers.workspace")


async def _tuning_not_available(rec: WorkspaceReconciler, ws: Obj, model: Workspace) -> Result | None:
    """Until the tuning Job builder is wired in, tuning Workspaces are left alone."""
    log.debug("tuning workspace left alone: no tuning handler", workspace=ws["metadata"]["name"])
    return None


class WorkspaceReconciler:
    def __init__(
        self,
        manager: Manager,
        provisioner: NodeProvisioner,
        options: WorkspaceControllerOptions | None = None,
    ) -> None:
        self.manager = manager
        self.client = manager.client
        self.cache = manager.cache
        self.provisioner = provisioner
        self.options = options or WorkspaceControllerOptions()
        self.events = EventRecorder(manager.client, self.options.field_manager)
        self.recent = RecentWrites(manager.cache)
        #: Stored form of the fields we last wrote, per child (see sync.Accepted).
        self.accepted = Accepted()
        self._config_locks: dict[str, asyncio.Lock] = {}
        self._status_written: dict[tuple[str, str], float] = {}
        self._in_flight: dict[tuple[GVK, str, str], asyncio.Task[None]] = {}
        self._background_errors: dict[tuple[GVK, str, str], str] = {}
        self._background_slots = asyncio.Semaphore(self.options.max_concurrent_reconciles)
        self._plans: dict[tuple[str, tuple[tuple[str, str], ...]], inference.Plan | inference.PlanError] = {}
        #: The last Hub answer per ``org/model`` name, kept for when the Hub cannot be reached.
        self._hub_known: dict[str, ModelPreset] = {}
        #: Seam for tuning Workspaces (kaito.controllers.workspace.tuning).
        self.tuning: TuningHandler = _tuning_not_available
        self.controller: Controller | None = None

    # ------------------------------------------------------------------ entry

    async def reconcile(self, req: Request) -> Result | None:
        ws = self.recent.get(WORKSPACE, req.name, req.namespace)
        if ws is None:
            # Nodes made for a Workspace the apiserver deleted before our finalizer could act
            # (see GPUProvisioner.release_gone); a backend without the hook has none to release.
            release = getattr(self.provisioner, "release_gone", None)
            if release is not None and req.namespace:
                await release(req.namespace, req.name)
            self.recent.forget(WORKSPACE, req.name, req.namespace)
            self._status_written.pop((req.namespace or "", req.name), None)
            for gvk, child in (
                (STATEFULSET, req.name),
                (SERVICE, req.name),
                (SERVICE, headless_name(req.name)),
                (CONFIGMAP, config_name(req.name)),
            ):
                self.accepted.forget(gvk, req.namespace, child)
                self._background_errors.pop((gvk, req.namespace or "", child), None)
            return None
        if is_being_deleted(ws):
            return await self._finalize(ws)
        try:
            model = Workspace.from_manifest(ws)
        except ValidationError as exc:
            # The apiserver's schema should have refused it; log rather than crash-loop.
            log.warning("workspace does not parse", workspace=req.key, error=str(exc).splitlines()[0])
            return None
        try:
            if model.tuning is not None:
                return await self.tuning(self, ws, model)
            return await self._reconcile_inference(ws, model)
        except NotFoundError as exc:
            if not deleted_underneath(exc, req):
                raise
            # Deleted (before it had our finalizer) while this reconcile ran: its delete event
            # is queued behind us and cleans up; nothing failed.
            log.debug("workspace deleted during its reconcile", workspace=req.key)
            return None

    # ------------------------------------------------------------------ inference

    def _request(self, ws: Obj, model: Workspace, plan: inference.Plan | None) -> NodeRequest:
        meta = ws["metadata"]
        return NodeRequest(
            workspace=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            instance_type=model.resource.instance_type,
            count=plan.node_count if plan else (model.resource.count or 1),
            label_selector=model.resource.label_selector.to_dict(),
            preferred_nodes=tuple(model.resource.preferred_nodes or ()),
            storage_gib=plan.storage_gib if plan else None,
            gpus_per_node=plan.gpus_per_node if plan else 0,
            annotations=dict(meta.get("annotations") or {}),
        )

    async def _reconcile_inference(self, ws: Obj, model: Workspace) -> Result | None:
        meta = ws["metadata"]
        ns, name = meta["namespace"], meta["name"]
        digest = revision.spec_hash(ws)
        revisions = revision.owned_revisions(
            ws, self.cache.list(CONTROLLER_REVISION, ns, {names.LABEL_WORKSPACE: name})
        )
        rev_name = revision.revision_name(name, digest)
        current = next((r for r in revisions if r["metadata"]["name"] == rev_name), None)
        if current is None:
            current = self.recent.get(CONTROLLER_REVISION, rev_name, ns)
        number = int(current["revision"]) if current is not None else revision.next_number(revisions)
        ws = await self._ensure_metadata(ws, number)

        try:
            plan = self._plan(ws, digest, model, await self._hub_model(ws))
        except inference.PlanError as exc:
            await self._report(
                ws,
                status.Outcome(
                    resource=status.Check(False, exc.reason, str(exc), failed=True),
                    endpoint=status.endpoint_check(meta.get("annotations")),
                ),
            )
            # The Hub being down passes; a refusal (gated, unknown, unsupported) waits for an edit.
            return Result(requeue_after=HUB_RETRY) if exc.reason in _HUB_TRANSIENT else None
        request = self._request(ws, model, plan)
        await self.provisioner.provision_nodes(request)
        nodes = await self.provisioner.ensure_nodes_ready(request)

        # The revision record and pruning go out with the workload's writes (one round trip
        # instead of two): nothing reads them back in this reconcile.
        side: list[Awaitable[Any]] = []
        if current is None:
            side.append(self._create_revision(ws, digest, number))
        for old in revision.to_prune(revisions, rev_name, self.options.revision_history_limit):
            side.append(
                self.client.delete(CONTROLLER_REVISION, old["metadata"]["name"], ns, ignore_not_found=True)
            )

        outcome = status.Outcome(
            resource=status.Check(
                nodes.ready, nodes.reason or ("NodesReady" if nodes.ready else "NodesNotReady"), nodes.message
            ),
            extra_conditions=nodes.conditions,
            worker_nodes=list(nodes.nodes),
            target_node_count=plan.node_count,
            endpoint=status.endpoint_check(meta.get("annotations")),
        )
        sts = self.recent.get(STATEFULSET, name, ns)
        if not nodes.ready and sts is None:
            await asyncio.gather(*side)
            await self._report(ws, outcome)
            return Result(requeue_after=nodes.requeue_after) if nodes.requeue_after else None

        requeue = nodes.requeue_after
        try:
            sts = await self._ensure_workload(ws, model, plan, nodes, number, side)
        except NotOwnedError as exc:
            outcome.inference = status.Check(False, "NotOwned", str(exc), failed=True)
            await self._report(ws, outcome)
            return None
        except inference.PlanError as exc:
            outcome.inference = status.Check(False, exc.reason, str(exc), failed=True)
            await self._report(ws, outcome)
            return None
        if sts is not None:
            pods = self.cache.list(POD, ns, {names.LABEL_WORKSPACE: name})
            now = time.time()
            outcome.inference = status.inference_check(sts, pods, str(number), now)
            recheck = status.unschedulable_recheck(pods, now) if not outcome.inference.ok else None
            if recheck is not None:  # a pod still in its grace period: look again when it ends
                requeue = min(recheck, requeue or recheck)
            if pods:
                outcome.worker_nodes = status.pod_nodes(pods) or outcome.worker_nodes
            if outcome.inference.ok and self.recent.get(SERVICE, name, ns) is None:
                # Ready means callable: not before the Service exists. Its creation event
                # brings us back; a write that keeps failing is the reason shown meanwhile.
                failure = self._background_errors.get((SERVICE, ns, name))
                if failure is None:
                    return None
                outcome.inference = status.Check(
                    False, "ServiceNotCreated", f"Service {ns}/{name}: {failure}", failed=True
                )
        new = status.desired_status(ws, outcome)
        wait = self._message_only_wait(ws, new)
        if wait is not None:
            # Only a message changed (a scheduler's "0/N nodes are available: …" recounting as
            # it retries): at most one such write per STATUS_MESSAGE_INTERVAL; the newest
            # message is written when the interval is over, if still current.
            return Result(requeue_after=min(wait, requeue) if requeue else wait)
        await self._write_status(ws, new)
        return Result(requeue_after=requeue) if requeue else None

    def _message_only_wait(self, ws: Obj, new: Obj) -> float | None:
        """Seconds to hold back a status write that changes nothing but condition messages
        (None: write now)."""
        old_status, new_status = ws.get("status") or {}, new.get("status") or {}
        if old_status == new_status or _without_messages(old_status) != _without_messages(new_status):
            return None
        meta = ws["metadata"]
        last = self._status_written.get((meta["namespace"], meta["name"]))
        if last is None:
            return None
        wait = last + STATUS_MESSAGE_INTERVAL - asyncio.get_running_loop().time()
        return wait if wait > 0 else None

    async def _hub_model(self, ws: Obj) -> ModelPreset | None:
        """The Hub's sizing of an ``org/model`` preset kaito has no catalog entry for (cached in
        :mod:`kaito.api.hub`), read with the modelAccessSecret's token; None for catalog presets."""
        found = hub.hub_preset_of(ws)
        if found is None:
            return None
        name, secret = found
        token, note = None, ""
        if secret:
            token, note = await hub.read_token(self.client, ws["metadata"]["namespace"], secret)
        try:
            found_model = await asyncio.to_thread(hub.resolve_hub_model, name, token)
        except HubModelError as exc:
            # A running Workspace must not fail because the Hub is down after the cache expired.
            last = self._hub_known.get(name)
            if last is not None and exc.reason in _HUB_TRANSIENT:
                return last
            extra = note if exc.reason == "GatedModel" else ""
            raise inference.PlanError(exc.reason, f"inference.preset.name: {exc}{extra}") from None
        if len(self._hub_known) >= 1024:
            self._hub_known.pop(next(iter(self._hub_known)))
        self._hub_known[name] = found_model
        return found_model

    def _plan(
        self, ws: Obj, digest: str, model: Workspace, hub_model: ModelPreset | None = None
    ) -> inference.Plan:
        """``inference.plan_for``, remembered per spec: the estimator is the costliest step of a
        reconcile (~0.5 ms) and its answer depends only on the spec and the annotations."""
        annotations = (ws.get("metadata") or {}).get("annotations") or {}
        key = (
            digest,
            tuple(sorted((k, v) for k, v in annotations.items() if k != names.ANNOTATION_REVISION)),
        )
        hit = self._plans.get(key)
        if hit is None:
            try:
                hit = inference.plan_for(model, hub_model)
            except inference.PlanError as exc:
                hit = exc
            if len(self._plans) >= 1024:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = hit
        if isinstance(hit, inference.PlanError):
            raise inference.PlanError(hit.reason, str(hit))
        return hit

    async def _ensure_metadata(self, ws: Obj, number: int) -> Obj:
        """Finalizer and revision annotation in one patch (resourceVersion-guarded)."""
        meta = ws["metadata"]
        annotations = meta.get("annotations") or {}
        if has_finalizer(ws, names.FINALIZER) and annotations.get(names.ANNOTATION_REVISION) == str(number):
            return ws
        finalizers = list(meta.get("finalizers") or [])
        if names.FINALIZER not in finalizers:
            finalizers.append(names.FINALIZER)
        patch = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "finalizers": finalizers,
                "annotations": {names.ANNOTATION_REVISION: str(number)},
            }
        }
        updated = await self.client.patch(
            WORKSPACE, meta["name"], patch, meta["namespace"], patch_type="merge"
        )
        self.recent.remember(WORKSPACE, updated)
        return updated

    async def _create_revision(self, ws: Obj, digest: str, number: int) -> None:
        body = revision.build_revision(ws, digest, number)
        try:
            created = await self.client.create(body, field_manager=self.options.field_manager)
        except AlreadyExistsError:
            return  # made by us before a restart; the cache will show it
        # No Event of its own: the status change that follows names the revision (one write less).
        self.recent.remember(CONTROLLER_REVISION, created)

    async def _ensure_default_config(self, ns: str) -> None:
        """The namespace's shared default ConfigMap, written once however many Workspaces
        reconcile at the same time (one lock per namespace; the second finds the first's write)."""
        desired = stamp(configmap.build_default_config(ns))
        name = configmap.DEFAULT_CONFIG_NAME
        current = self.recent.get(CONFIGMAP, name, ns)
        if (
            current is not None
            and up_to_date(desired, current)
            and self.accepted.converged(CONFIGMAP, desired, current)
        ):
            return
        lock = self._config_locks.setdefault(ns, asyncio.Lock())
        async with lock:
            current = self.recent.get(CONFIGMAP, name, ns)
            if current is not None and up_to_date(desired, current):
                if self.accepted.converged(CONFIGMAP, desired, current):
                    return
                written = await self.client.patch(
                    CONFIGMAP, name, revert_patch(desired), ns, patch_type="merge",
                    field_manager=self.options.field_manager,
                )  # fmt: skip
            else:
                written = await self.client.apply(
                    desired, field_manager=self.options.field_manager, force=True
                )
            self.recent.remember(CONFIGMAP, written)
            self.accepted.record(CONFIGMAP, desired, written)

    async def _apply(self, gvk: GVK, ws: Obj, desired: Obj) -> Obj:
        """Create or update ``desired`` (stamped) when it changed, put it back when someone
        edited what it sets; nothing when the cache already shows it."""
        meta = desired["metadata"]
        current = self.recent.get(gvk, meta["name"], meta["namespace"])
        check_owner(current, ws["metadata"]["uid"])
        if current is not None and up_to_date(desired, current):
            if self.accepted.converged(gvk, desired, current):
                return current
            # Same desired manifest, different object: a hand edit. Merge-patch our fields
            # back (server-side apply would keep list entries now owned by the editor).
            log.info("reverting a hand edit", kind=gvk.kind, object=f"{meta['namespace']}/{meta['name']}")
            written = await self.client.patch(
                gvk, meta["name"], revert_patch(desired), meta["namespace"], patch_type="merge",
                field_manager=self.options.field_manager,
            )  # fmt: skip
        else:
            written = await self.client.apply(desired, field_manager=self.options.field_manager, force=True)
        self.recent.remember(gvk, written)
        self.accepted.record(gvk, desired, written)
        return written

    async def _ensure_workload(
        self,
        ws: Obj,
        model: Workspace,
        plan: inference.Plan,
        nodes: Any,
        number: int,
        side: list[Awaitable[Any]],
    ) -> Obj | None:
        """The StatefulSet, Services and default ConfigMap, written concurrently together with
        ``side`` (other writes of this reconcile); returns the StatefulSet."""
        assert model.inference is not None
        ns = ws["metadata"]["namespace"]
        if model.inference.config and self.cache.get(CONFIGMAP, model.inference.config, ns) is None:
            await asyncio.gather(*side)
            raise inference.PlanError(
                "ConfigMapNotFound",
                f"inference.config: ConfigMap {ns}/{model.inference.config} does not exist; "
                "create it or unset the field",
            )
        writes: list[Awaitable[Any]] = side
        if not model.inference.config and model.inference.preset is not None:
            writes.append(self._ensure_default_config(ns))
        legacy = self.cache.get(CONFIGMAP, config_name(ws["metadata"]["name"]), ns)
        if legacy is not None and is_controlled_by(legacy, ws):
            # The per-Workspace default ConfigMap of earlier versions: shared per namespace now.
            writes.append(
                self.client.delete(CONFIGMAP, legacy["metadata"]["name"], ns, ignore_not_found=True)
            )
        try:
            affinity = self.provisioner.node_affinity(self._request(ws, model, plan), nodes)
            desired = stamp(
                inference.build_statefulset(
                    ws, model, plan, affinity=affinity, revision=number, options=self.options
                )
            )
        except Exception:
            await asyncio.gather(*writes)  # started coroutines are awaited, not dropped
            raise
        # The Services go out in the background: a ClusterIP Service can take the apiserver
        # seconds to allocate when many are created at once, and a worker waiting for it would
        # hold up other Workspaces' StatefulSets. The rest is written concurrently, here.
        req = Request(ns, ws["metadata"]["name"])
        try:
            for svc in (
                services.build_service(ws, multi_node=plan.multi_node),
                services.build_headless_service(ws, multi_node=plan.multi_node),
            ):
                self._apply_in_background(SERVICE, ws, stamp(svc), req)
        except NotOwnedError:
            await asyncio.gather(*writes)
            raise
        sts, *_ = await asyncio.gather(self._apply(STATEFULSET, ws, desired), *writes)
        return sts  # type: ignore[no-any-return]

    def _apply_in_background(self, gvk: GVK, ws: Obj, desired: Obj, req: Request) -> None:
        """``_apply`` in a task of its own (at most ``max_concurrent_reconciles`` at once), one
        per object: a later reconcile finds it in flight and leaves it be. The object's watch
        event brings the Workspace back when it lands; a failure retries the Workspace with
        backoff and is remembered as the reason until a write succeeds.

        The task belongs to the controller (``Controller.spawn``): it is drained or cancelled
        with the reconciles when the controller stops, so no write goes out after leadership
        is lost; a write still waiting for its slot checks leadership again before it sends."""
        meta = desired["metadata"]
        key = (gvk, meta["namespace"], meta["name"])
        if key in self._in_flight:
            return
        current = self.recent.get(gvk, meta["name"], meta["namespace"])
        check_owner(current, ws["metadata"]["uid"])
        if (
            current is not None
            and up_to_date(desired, current)
            and self.accepted.converged(gvk, desired, current)
        ):
            return

        controller = self.controller

        async def write() -> None:
            async with self._background_slots:
                if controller is not None and not controller.may_act():
                    return  # leadership may be someone else's by now; the next leader writes it
                await self._apply(gvk, ws, desired)

        name = f"workspace-write-{gvk.kind}-{meta['namespace']}/{meta['name']}"
        if controller is not None:
            task = controller.spawn(write(), name=name)
        else:  # a reconciler driven without a controller (tests, tools): its own task
            task = asyncio.get_running_loop().create_task(write(), name=name)
        self._in_flight[key] = task
        task.add_done_callback(lambda t: self._background_done(key, req, t))

    def _background_done(self, key: tuple[GVK, str, str], req: Request, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(key, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._background_errors.pop(key, None)
            return
        self._background_errors[key] = f"{type(exc).__name__}: {exc}"
        log.warning("write failed, will retry", kind=key[0].kind, object=f"{key[1]}/{key[2]}", error=str(exc))
        queue = self.controller.queue if self.controller is not None else None
        if queue is not None:
            with contextlib.suppress(Exception):  # a queue shut down with the controller
                queue.add_rate_limited(req)

    # ------------------------------------------------------------------ status

    async def _report(self, ws: Obj, outcome: status.Outcome) -> None:
        await self._write_status(ws, status.desired_status(ws, outcome))

    async def _write_status(self, ws: Obj, new: Obj) -> None:
        if new.get("status") == ws.get("status"):
            return
        written = await self.client.update_status(new)
        self.recent.remember(WORKSPACE, written)
        meta = ws["metadata"]
        self._status_written[(meta["namespace"], meta["name"])] = asyncio.get_running_loop().time()
        self._record_transitions(ws, new)

    def _record_transitions(self, old: Obj, new: Obj) -> None:
        """One Event per status change: the most telling transition, the others in its message."""
        changed = status.transitions(old, new)
        if not changed:
            return
        failures = [
            c for _, c in changed if c.get("status") == "False" and c.get("reason") in _FAILURE_REASONS
        ]
        ready = next(
            (c for t, c in changed if t == names.WORKSPACE_READY and c.get("status") == "True"), None
        )
        if failures:
            kind, lead = WARNING, failures[0]
        elif ready is not None:
            kind, lead = NORMAL, ready
        elif any(t == names.RESOURCE_READY for t, _ in changed):
            kind, lead = NORMAL, next(c for t, c in changed if t == names.RESOURCE_READY)
        else:
            kind, lead = NORMAL, changed[0][1]
        parts = [
            f"{t}={c.get('status')} ({c.get('reason')})" for t, c in changed if t != names.WORKSPACE_SUCCEEDED
        ]
        message = f"{lead.get('message') or ''} [{', '.join(parts)}]".strip()
        self.events.emit(new, kind, str(lead.get("reason") or "StatusChanged"), message)

    # ------------------------------------------------------------------ deletion

    async def _finalize(self, ws: Obj) -> Result | None:
        """Workload gone, then the provisioner's nodes, then the finalizer, in that order."""
        if not has_finalizer(ws, names.FINALIZER):
            return None
        meta = ws["metadata"]
        ns, name = meta["namespace"], meta["name"]
        sts = self.recent.get(STATEFULSET, name, ns)
        if sts is not None and is_controlled_by(sts, ws):
            await self._write_status(ws, status.deleting_status(ws, "deleting the inference workload"))
            if not (sts.get("metadata") or {}).get("deletionTimestamp"):
                await self.client.delete(
                    STATEFULSET, name, ns, propagation_policy="Foreground", ignore_not_found=True
                )
                self.events.emit(ws, NORMAL, "Deleting", f"deleting StatefulSet {name} and its pods")
            return None  # the StatefulSet's deletion event brings us back
        leftovers = [
            (gvk, obj)
            for gvk, obj in (
                (SERVICE, self.cache.get(SERVICE, name, ns)),
                (SERVICE, self.cache.get(SERVICE, headless_name(name), ns)),
                (CONFIGMAP, self.cache.get(CONFIGMAP, config_name(name), ns)),
                *(
                    (CONTROLLER_REVISION, r)
                    for r in self.cache.list(CONTROLLER_REVISION, ns, {names.LABEL_WORKSPACE: name})
                ),
            )
            if obj is not None and is_controlled_by(obj, ws)
        ]
        if leftovers:
            await self._write_status(
                ws, status.deleting_status(ws, "deleting the Services, ConfigMap and revisions")
            )
            for gvk, obj in leftovers:
                if not obj["metadata"].get("deletionTimestamp"):
                    await self.client.delete(gvk, obj["metadata"]["name"], ns, ignore_not_found=True)
            return None
        try:
            model: Workspace | None = Workspace.from_manifest(ws)
        except ValidationError:
            model = None
        if model is not None:
            try:
                plan: inference.Plan | None = inference.plan_for(model)
            except inference.PlanError:
                plan = None
            request = self._request(ws, model, plan)
        else:
            # A Workspace that no longer parses may still have nodes: the backends find them by
            # the Workspace's name and namespace, which is all this request carries.
            request = NodeRequest(
                workspace=name, namespace=ns, uid=meta.get("uid", ""), instance_type=None, count=0
            )
        # Decided by the backend from the server (not this cache): a claim or pool created a
        # moment ago must not outlive the finalizer.
        if not await self.provisioner.delete_nodes(request):
            await self._write_status(
                ws,
                status.deleting_status(
                    ws,
                    f"waiting for the {self.provisioner.name} node provisioner "
                    "to remove this Workspace's nodes",
                ),
            )
            return Result(requeue_after=10.0)
        finalizers = [f for f in meta.get("finalizers") or [] if f != names.FINALIZER]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": finalizers or None}}
        with contextlib.suppress(NotFoundError):
            await self.client.patch(WORKSPACE, name, patch, ns, patch_type="merge")
        self.recent.forget(WORKSPACE, name, ns)
        return None

    # ------------------------------------------------------------------ event mapping

    def map_node(self, node: Obj) -> Iterable[Request]:
        """A Node concerns the Workspace named in its labels, and every Workspace whose selector
        it matches (BYO)."""
        labels = (node.get("metadata") or {}).get("labels") or {}
        out = set()
        if names.LABEL_WORKSPACE in labels and names.LABEL_WORKSPACE_NAMESPACE in labels:
            out.add(Request(labels[names.LABEL_WORKSPACE_NAMESPACE], labels[names.LABEL_WORKSPACE]))
        # Nodes are cluster-scoped, but Workspaces may be cached for one namespace only (a
        # namespace-scoped operator): list them where the manager watches them.
        scope = self.manager.namespace
        if self.cache.can_serve(WORKSPACE, scope):
            for ws in self.cache.list(WORKSPACE, scope):
                selector = (ws.get("resource") or {}).get("labelSelector") or {}
                if selector and selector_matches(selector, labels):
                    out.add(Request.from_object(ws))
        return [r for r in out if self._in_scope(r)]

    def _in_scope(self, req: Request) -> bool:
        """A cluster-scoped object (Node, NodeClaim) may name a Workspace in a namespace this
        operator does not watch (another kaito's); its cache cannot answer for it."""
        scope = self.manager.namespace
        return scope is None or req.namespace == scope

    def map_by_labels(self, obj: Obj) -> Iterable[Request]:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        name = labels.get(names.LABEL_WORKSPACE)
        if not name:
            return ()
        ns = labels.get(names.LABEL_WORKSPACE_NAMESPACE) or (obj.get("metadata") or {}).get("namespace")
        return (Request(ns, name),) if ns and self._in_scope(Request(ns, name)) else ()

    def map_user_configmap(self, cm: Obj) -> Iterable[Request]:
        """A user's ConfigMap concerns the Workspaces naming it; the shared default one, those
        naming none (so a deleted or edited default is put back)."""
        meta = cm.get("metadata") or {}
        ns = meta.get("namespace")
        if not self.cache.can_serve(WORKSPACE, ns):
            return ()
        name = meta.get("name")

        def uses(ws: Obj) -> bool:
            inf = ws.get("inference") or {}
            if name == configmap.DEFAULT_CONFIG_NAME:
                return not inf.get("config") and inf.get("preset") is not None
            return bool(inf.get("config") == name)

        return [Request.from_object(ws) for ws in self.cache.list(WORKSPACE, ns) if uses(ws)]


_FAILURE_REASONS = set(status.FAILURE_REASONS) | {
    "PodUnschedulable",
    "NotOwned",
    "ConfigMapNotFound",
    "PresetDoesNotFit",
    "UnknownPreset",
    "InvalidTemplate",
    "TemplateGPUMismatch",
    "InvalidAdapterName",
    "UnsupportedAdapterSource",
    "InvalidModelParameters",
    "NodesNotEnough",
    "InvalidAPIKeySecret",
    # an org/model preset the Hugging Face Hub refused or could not answer for (kaito.api.hub)
    "GatedModel",
    "ModelNotFound",
    "RevisionNotFound",
    "UnsupportedArchitecture",
    "NoArchitecture",
    "IncompleteConfig",
    "NoWeights",
    "HubUnreachable",
    "HubUnavailable",
    status.UNAUTHENTICATED_LB,  # a warning Event, though the Workspace still serves
}


#: Seconds between two status writes that change only condition messages.
STATUS_MESSAGE_INTERVAL = 5.0
#: Hub failures that pass by themselves: the plan is retried after HUB_RETRY seconds.
_HUB_TRANSIENT = frozenset({"HubUnreachable", "HubUnavailable"})
HUB_RETRY = 30.0


def deleted_underneath(exc: NotFoundError, req: Request) -> bool:
    """Whether a 404 is about the reconciled Workspace itself (its metadata or status write),
    not about some other object the reconcile needed."""
    details = (exc.body or {}).get("details") or {}
    return bool(
        details.get("group") == WORKSPACE.group
        and details.get("kind") == "workspaces"
        and details.get("name") == req.name
    )


def _without_messages(st: Obj) -> Obj:
    out = dict(st)
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "message"}
        for c in st.get("conditions") or ()
        if isinstance(c, dict)
    ]
    return out


def _meta(o: Obj) -> Obj:
    m = o.get("metadata")
    return m if isinstance(m, dict) else {}


def _user_annotations(o: Obj) -> dict[str, Any]:
    found = _meta(o).get("annotations") or {}
    return {k: v for k, v in found.items() if k != names.ANNOTATION_REVISION}


def workspace_predicate() -> Predicate:
    """Spec, annotation and deletion changes; our own status and revision writes do not come back.
    Annotations count because some steer the workload (`kaito.sh/enablelb`, `kaito.sh/runtime`,
    `kaito.sh/bypass-resource-checks`) and changing them does not bump the generation."""

    def update(old: Obj, new: Obj) -> bool:
        return bool(
            _meta(old).get("generation") != _meta(new).get("generation")
            or _user_annotations(old) != _user_annotations(new)
            or _meta(old).get("deletionTimestamp") != _meta(new).get("deletionTimestamp")
            or (names.FINALIZER in (_meta(old).get("finalizers") or ()))
            != (names.FINALIZER in (_meta(new).get("finalizers") or ()))
        )

    return Predicate(update=update)


def _node_facts(node: Obj) -> tuple[Any, ...]:
    st = node.get("status") or {}
    ready = next((c.get("status") for c in st.get("conditions") or () if c.get("type") == "Ready"), None)
    return (
        _meta(node).get("labels"),
        ready,
        (node.get("spec") or {}).get("unschedulable"),
        (st.get("allocatable") or {}).get(inference.GPU),
        _meta(node).get("deletionTimestamp"),
    )


def node_predicate() -> Predicate:
    """Heartbeats are dropped: only what decides whether a node is usable passes."""
    return Predicate(update=lambda old, new: _node_facts(old) != _node_facts(new))


def cache_label_selectors() -> dict[GVK, str]:
    """Label selectors for the Manager's cache (``ManagerOptions.label_selectors``).

    Pods and Jobs are read only by the ``kaito.sh/workspace`` label that every pod template and
    Job kaito writes carries (``labels.child_labels``/``selector_labels``), so their informers
    need no other Pod or Job of the cluster: without the selector the operator would list,
    parse and hold every Pod (a big cluster's Pod LIST is tens of MB). ConfigMaps are not
    filtered: the controller also reads and watches users' ConfigMaps (``inference.config``,
    ``tuning.config``) and the shared default one, which carry no kaito label.
    """
    return {POD: names.LABEL_WORKSPACE, tuning.JOB: names.LABEL_WORKSPACE}


def setup(
    manager: Manager, provisioner: NodeProvisioner, options: WorkspaceControllerOptions | None = None
) -> WorkspaceReconciler:
    """Register the workspace controller on ``manager``; returns the reconciler (its
    ``controller`` attribute is the runtime Controller)."""
    rec = WorkspaceReconciler(manager, provisioner, options)
    job_options = tuning.TuningJobOptions(
        image=rec.options.tuning_image, image_pull_policy=rec.options.image_pull_policy
    )
    rec.tuning = tuning.TuningHandler(job_options)
    builder = (
        manager.builder()
        .named("workspace")
        .for_(WORKSPACE, predicates=[workspace_predicate()])
        .owns(STATEFULSET)
        .owns(SERVICE)
        .owns(CONTROLLER_REVISION)
        .owns(CONFIGMAP)
        .owns(tuning.JOB)
        .watches(
            CONFIGMAP,
            rec.map_user_configmap,
            predicates=[Predicate(update=lambda o, n: o.get("data") != n.get("data"))],
        )
        .watches(POD, rec.map_by_labels)
        .watches(NODE, rec.map_node, predicates=[node_predicate()])
    )
    for gvk in provisioner.watched_kinds():
        builder = builder.watches(gvk, rec.map_by_labels)
    rec.controller = builder.with_options(
        max_concurrent_reconciles=rec.options.max_concurrent_reconciles
    ).complete(rec)
    # The informers the controller reads these kinds from (the builder's own) also retire
    # RecentWrites entries once they show the write, so the map stays as small as the writes
    # the cache has not seen yet.
    for gvk in (WORKSPACE, STATEFULSET, SERVICE, CONTROLLER_REVISION, CONFIGMAP, tuning.JOB):
        rec.recent.track(gvk, manager.cache.get_informer(gvk, namespace=manager.namespace))
    return rec
