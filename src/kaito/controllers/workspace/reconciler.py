"""The Workspace reconciler: level-triggered, idempotent, and silent when converged.

A thin loop over :class:`~kaito.controllers.workspace.workload.Workload` plug-ins. It does what
every Workspace needs, whatever it runs: the finalizer and the revision (one patch), the nodes
(one NodeRequest, through the NodeProvisioner), dispatch to the workload (:mod:`.inference` or
:mod:`.tuning`), the status write (:mod:`.statuswriter`) and the deletion order. Each reconcile
reads the Workspace and everything it owns from the informer cache and writes only the
differences (children through :class:`kaito.runtime.Writer`, the status only when it differs),
so a converged Workspace costs no API request at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from pydantic import ValidationError

from kaito.api import names
from kaito.api.meta import selector_matches
from kaito.api.workspace import Workspace
from kaito.controllers.workspace import revision, status
from kaito.controllers.workspace.inference import InferenceWorkload
from kaito.controllers.workspace.inference.configmap import DEFAULT_CONFIG_NAME
from kaito.controllers.workspace.inference.statefulset import GPU
from kaito.controllers.workspace.options import WorkspaceControllerOptions
from kaito.controllers.workspace.statuswriter import StatusWriter
from kaito.controllers.workspace.tuning import JOB, TuningJobOptions, TuningWorkload
from kaito.controllers.workspace.workload import (
    Footprint,
    Refused,
    Report,
    Step,
    Teardown,
    Workload,
    WorkloadDeps,
    unparsed_request,
)
from kaito.nodes import NODE, NodeProvisioner
from kaito.runtime import (
    GVK,
    NORMAL,
    AlreadyExistsError,
    Controller,
    EventRecorder,
    Manager,
    NotFoundError,
    Predicate,
    Request,
    Result,
    Writer,
    WriterOptions,
    get_logger,
    has_finalizer,
    is_being_deleted,
    is_controlled_by,
)

Obj = dict[str, Any]
P = TypeVar("P")

WORKSPACE = GVK(names.GROUP, names.STORAGE_VERSION, names.KIND)
STATEFULSET = GVK("apps", "v1", "StatefulSet")
SERVICE = GVK("", "v1", "Service")
CONFIGMAP = GVK("", "v1", "ConfigMap")
POD = GVK("", "v1", "Pod")
CONTROLLER_REVISION = revision.CONTROLLER_REVISION

#: Hash of the manifest kaito last applied to a child (the Writer's fingerprint annotation).
ANNOTATION_DESIRED_HASH = "kaito.sh/desired-hash"

log = get_logger("kaito.controllers.workspace")


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
        #: Every write of this controller: apply-if-changed, own writes newer than the cache,
        #: background writes tied to the controller's lifetime (see kaito.runtime.writes).
        self.writer = Writer(
            manager.client,
            manager.cache,
            WriterOptions(
                field_manager=self.options.field_manager,
                hash_annotation=ANNOTATION_DESIRED_HASH,
                max_background_writes=self.options.max_concurrent_reconciles,
                not_owned_hint="rename the Workspace or delete that object",
            ),
        )
        self.status = StatusWriter(manager.client, self.writer, self.events, WORKSPACE)
        deps = WorkloadDeps(manager.client, manager.cache, self.writer, provisioner, self.options)
        self.inference = InferenceWorkload(deps)
        self.tuning = TuningWorkload(
            deps,
            TuningJobOptions(
                image=self.options.tuning_image, image_pull_policy=self.options.image_pull_policy
            ),
        )
        #: Every workload, for what concerns them all (owned kinds, deletion, forgetting).
        self.workloads: tuple[Footprint, ...] = (self.inference, self.tuning)
        self.controller: Controller | None = None

    # ------------------------------------------------------------------ entry

    async def reconcile(self, req: Request) -> Result | None:
        ws = self.writer.get(WORKSPACE, req.name, req.namespace)
        if ws is None:
            # Nodes made for a Workspace the apiserver deleted before our finalizer could act
            # (see GPUProvisioner.release_gone); a backend without the hook has none to release.
            release = getattr(self.provisioner, "release_gone", None)
            if release is not None and req.namespace:
                await release(req.namespace, req.name)
            self.writer.forget(WORKSPACE, req.name, req.namespace)
            self.status.forget(req.namespace or "", req.name)
            for workload in self.workloads:
                workload.forget(req.namespace or "", req.name)
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
                return await self._reconcile(self.tuning, ws, model)
            return await self._reconcile(self.inference, ws, model)
        except NotFoundError as exc:
            if not deleted_underneath(exc, req):
                raise
            # Deleted (before it had our finalizer) while this reconcile ran: its delete event
            # is queued behind us and cleans up; nothing failed.
            log.debug("workspace deleted during its reconcile", workspace=req.key)
            return None

    async def _reconcile(self, workload: Workload[P], ws: Obj, model: Workspace) -> Result | None:
        """Revision and finalizer, the workload's plan, nodes, then the workload itself."""
        meta = ws["metadata"]
        ns, name = meta["namespace"], meta["name"]
        digest, number, rev_name = "", 1, ""
        revisions: list[Obj] = []
        current: Obj | None = None
        if workload.keeps_revisions:
            digest = revision.spec_hash(ws)
            revisions = revision.owned_revisions(
                ws, self.cache.list(CONTROLLER_REVISION, ns, {names.LABEL_WORKSPACE: name})
            )
            rev_name = revision.revision_name(name, digest)
            current = next((r for r in revisions if r["metadata"]["name"] == rev_name), None)
            if current is None:
                current = self.writer.get(CONTROLLER_REVISION, rev_name, ns)
            number = int(current["revision"]) if current is not None else revision.next_number(revisions)
        ws = await self._ensure_metadata(ws, number)
        try:
            plan = await workload.plan(ws, model, digest)
        except Refused as refused:
            return await self._finish(ws, refused.report)
        request = workload.node_request(ws, model, plan)
        await self.provisioner.provision_nodes(request)
        nodes = await self.provisioner.ensure_nodes_ready(request)
        side: list[Awaitable[object]] = []
        if workload.keeps_revisions:
            # The revision record and pruning go out with the workload's writes (one round trip
            # instead of two): nothing reads them back in this reconcile.
            if current is None:
                side.append(self._create_revision(ws, digest, number))
            for old in revision.to_prune(revisions, rev_name, self.options.revision_history_limit):
                side.append(
                    self.client.delete(
                        CONTROLLER_REVISION, old["metadata"]["name"], ns, ignore_not_found=True
                    )
                )
        report = await _alongside(workload.reconcile(Step(ws, model, plan, number, request, nodes)), side)
        return await self._finish(ws, report)

    async def _finish(self, ws: Obj, report: Report) -> Result | None:
        """Write the report's status (if it differs) and say when to look again."""
        requeue = report.requeue_after
        if report.status is not None:
            wait = await self.status.write(ws, report.status, hold_message_only=report.hold_message_only)
            if wait is not None:
                # Held: the newest message is written when the interval is over, if still current.
                return Result(requeue_after=min(wait, requeue) if requeue else wait)
        return Result(requeue_after=requeue) if requeue else None

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
        self.writer.remember(WORKSPACE, updated)
        return updated

    async def _create_revision(self, ws: Obj, digest: str, number: int) -> None:
        body = revision.build_revision(ws, digest, number)
        try:
            created = await self.client.create(body, field_manager=self.options.field_manager)
        except AlreadyExistsError:
            return  # made by us before a restart; the cache will show it
        # No Event of its own: the status change that follows names the revision (one write less).
        self.writer.remember(CONTROLLER_REVISION, created)

    # ------------------------------------------------------------------ deletion

    async def _finalize(self, ws: Obj) -> Result | None:
        """Each workload's objects in its order, then the provisioner's nodes, then the
        finalizer."""
        if not has_finalizer(ws, names.FINALIZER):
            return None
        meta = ws["metadata"]
        ns, name = meta["namespace"], meta["name"]
        # Every workload is asked, whatever the Workspace runs: one that no longer parses may
        # still have objects of any of them.
        steps = [step for workload in self.workloads for step in workload.teardown(ws)]
        revisions = [
            (CONTROLLER_REVISION, r)
            for r in self.cache.list(CONTROLLER_REVISION, ns, {names.LABEL_WORKSPACE: name})
            if is_controlled_by(r, ws)
        ]
        if revisions:
            # Together with the workload's last step (one Deleting status for the lot).
            if steps and not steps[-1].foreground:
                steps[-1].objects.extend(revisions)
            else:
                steps.append(Teardown("deleting the revisions", revisions))
        for step in steps:
            if step.objects:
                await self._delete(ws, step)
                return None  # the objects' deletion events bring us back
        try:
            model: Workspace | None = Workspace.from_manifest(ws)
        except ValidationError:
            model = None
        if model is None:
            request = unparsed_request(ws)
        elif model.tuning is not None:
            request = self.tuning.release_request(ws, model)
        else:
            request = self.inference.release_request(ws, model)
        # Decided by the backend from the server (not this cache): a claim or pool created a
        # moment ago must not outlive the finalizer.
        if not await self.provisioner.delete_nodes(request):
            await self.status.write(
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
        self.writer.forget(WORKSPACE, name, ns)
        return None

    async def _delete(self, ws: Obj, step: Teardown) -> None:
        await self.status.write(ws, status.deleting_status(ws, step.message))
        ns = ws["metadata"]["namespace"]
        for gvk, obj in step.objects:
            if obj["metadata"].get("deletionTimestamp"):
                continue
            await self.client.delete(
                gvk,
                obj["metadata"]["name"],
                ns,
                propagation_policy="Foreground" if step.foreground else None,
                ignore_not_found=True,
            )
            if step.event:
                self.events.emit(ws, NORMAL, "Deleting", step.event)

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
            if name == DEFAULT_CONFIG_NAME:
                return not inf.get("config") and inf.get("preset") is not None
            return bool(inf.get("config") == name)

        return [Request.from_object(ws) for ws in self.cache.list(WORKSPACE, ns) if uses(ws)]


T = TypeVar("T")


async def _alongside(work: Awaitable[T], side: list[Awaitable[object]]) -> T:
    """``work`` with ``side`` (writes nobody reads back in this reconcile) sent concurrently;
    the side writes are awaited, not dropped, whatever ``work`` does, and cancelled with it."""
    if not side:
        return await work
    task = asyncio.ensure_future(asyncio.gather(*side))
    try:
        result = await work
    except asyncio.CancelledError:
        task.cancel()
        raise
    except BaseException:
        await task
        raise
    await task
    return result


def deleted_underneath(exc: NotFoundError, req: Request) -> bool:
    """Whether a 404 is about the reconciled Workspace itself (its metadata or status write),
    not about some other object the reconcile needed."""
    details = (exc.body or {}).get("details") or {}
    return bool(
        details.get("group") == WORKSPACE.group
        and details.get("kind") == "workspaces"
        and details.get("name") == req.name
    )


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
        (st.get("allocatable") or {}).get(GPU),
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
    return {POD: names.LABEL_WORKSPACE, JOB: names.LABEL_WORKSPACE}


def setup(
    manager: Manager, provisioner: NodeProvisioner, options: WorkspaceControllerOptions | None = None
) -> WorkspaceReconciler:
    """Register the workspace controller on ``manager``; returns the reconciler (its
    ``controller`` attribute is the runtime Controller)."""
    rec = WorkspaceReconciler(manager, provisioner, options)
    # The Workspace's own kinds: the reconciler's revisions and every workload's children.
    owned = list(dict.fromkeys((CONTROLLER_REVISION, *(g for w in rec.workloads for g in w.owns))))
    builder = manager.builder().named("workspace").for_(WORKSPACE, predicates=[workspace_predicate()])
    for gvk in owned:
        builder = builder.owns(gvk)
    builder = (
        builder.watches(
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
    # Background writes belong to the controller's run (drained or cancelled with it).
    rec.writer.bind(rec.controller)
    # The informers the controller reads these kinds from (the builder's own) also retire
    # remembered writes once they show them, so the map stays as small as the writes the cache
    # has not seen yet.
    for gvk in (WORKSPACE, *owned):
        rec.writer.track(gvk, manager.cache.get_informer(gvk, namespace=manager.namespace))
    return rec
