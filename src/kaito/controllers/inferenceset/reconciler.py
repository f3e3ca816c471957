"""The InferenceSet reconciler: children ``<set>-<index>`` from the template, scaled and rolled,
status aggregated from them; level-triggered on :mod:`kaito.runtime`.

Each reconcile reads the set and its Workspaces from the informer cache (laid over with the
controller's own writes the cache has not shown yet: :mod:`.pending` for the children,
:class:`kaito.runtime.RecentWrites` for the set's own status), asks :func:`.plan.plan` for the
next writes, makes them, and writes the status only when it differs from the stored one (or
from our own newer write): a converged set costs no API request.

Children carry a controlling owner reference to the set, so deleting the set deletes them through
the garbage collector (no finalizer of the set's own: nothing outside the cluster is held for a
set, and each Workspace's finalizer still releases its nodes). Children are written with
server-side apply (field manager ``kaito-inferenceset-controller``), so a field removed from the
template is removed from the children too, and fields others set (the workspace controller's
finalizer and revision annotation) are left alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kaito.api import names
from kaito.api.inferenceset import CONDITION_READY, GROUP, KIND, STORAGE_VERSION, InferenceSet
from kaito.api.inferenceset.child import child_workspace, template_hash
from kaito.controllers.inferenceset.options import InferenceSetControllerOptions
from kaito.controllers.inferenceset.pending import Pending
from kaito.controllers.inferenceset.plan import Plan, child_of, plan
from kaito.controllers.inferenceset.status import desired_status
from kaito.runtime import (
    GVK,
    NORMAL,
    WARNING,
    ApiError,
    ConflictError,
    Controller,
    EventRecorder,
    Manager,
    NotFoundError,
    Predicate,
    RecentWrites,
    Request,
    Result,
    get_controller_of,
    get_logger,
    is_being_deleted,
    set_condition,
)

Obj = dict[str, Any]

INFERENCESET = GVK(GROUP, STORAGE_VERSION, KIND)
#: The Workspace kind as the workspace controller reads it: the same GVK, so one shared informer.
WORKSPACE = GVK(names.GROUP, names.STORAGE_VERSION, names.KIND)

log = get_logger("kaito.controllers.inferenceset")


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def set_predicate() -> Predicate:
    """Spec changes (``kubectl scale`` included: the scale subresource bumps the generation) and
    deletion; the controller's own status writes do not come back."""

    def update(old: Obj, new: Obj) -> bool:
        return bool(
            _meta(old).get("generation") != _meta(new).get("generation")
            or _meta(old).get("deletionTimestamp") != _meta(new).get("deletionTimestamp")
        )

    return Predicate(update=update)


class InferenceSetReconciler:
    def __init__(self, manager: Manager, options: InferenceSetControllerOptions | None = None) -> None:
        self.client = manager.client
        self.cache = manager.cache
        self.options = options or InferenceSetControllerOptions()
        self.events = EventRecorder(manager.client, self.options.field_manager)
        self.pending = Pending(self.options.pending_ttl)
        #: The set as our last status write left it, until the cache shows that write: a
        #: reconcile in between reads it, not the older cached set, and writes nothing again.
        self.recent = RecentWrites(manager.cache)
        self.controller: Controller | None = None

    async def reconcile(self, req: Request) -> Result | None:
        ns = req.namespace or ""
        set_obj = self.recent.get(INFERENCESET, req.name, req.namespace)
        if set_obj is None:
            self.recent.forget(INFERENCESET, req.name, req.namespace)
            return None
        if is_being_deleted(set_obj):
            return None  # the garbage collector deletes the children (owner references)
        try:
            model = InferenceSet.model_validate(set_obj)
        except ValidationError as exc:
            # Only without the webhook (or from an older kaito) can such an object be stored.
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            await self._write_status(
                set_obj, _invalid_status(set_obj, f"the spec cannot be read: {where}: {first['msg']}; fix it")
            )
            return None
        uid = str(_meta(set_obj).get("uid") or "")
        cached = {
            str(_meta(ws).get("name")): ws
            for ws in self.cache.list(WORKSPACE, ns)
            if (ref := get_controller_of(ws)) is not None and ref.get("uid") == uid
        }
        view = self.pending.view(ns, cached)
        children = [child_of(req.name, ws) for ws in view.values()]
        want_hash = template_hash(model)
        step = plan(model, children, want_hash, _LazyChildren(model, uid))
        error = ""
        try:
            await self._act(set_obj, model, uid, step)
        except ApiError as exc:
            error = f"{exc.status} {exc.reason}: {exc.message}"
            self.events.emit(set_obj, WARNING, "WorkspaceWriteFailed", error)
        await self._write_status(set_obj, desired_status(set_obj, model, children, want_hash, step, error))
        if error:
            return Result(requeue=True)  # rate-limited retry: a refused write may be fixed by then
        if step.create or step.delete or step.roll or len(self.pending):
            # The cache's events bring the set back; this bounds a wait on a lost one.
            return Result(requeue_after=self.options.pending_ttl)
        return None

    async def _act(self, set_obj: Obj, model: InferenceSet, uid: str, step: Plan) -> None:
        ns = str(_meta(set_obj).get("namespace") or "")
        for name in step.delete:
            await self._delete(
                ns, name, set_obj, f"deleted Workspace {name}: scaled to {model.spec.replicas}"
            )
        for index in step.create:
            written = await self._apply(child_workspace(model, index, uid=uid))
            self.pending.applied(ns, written)
            self.events.emit(set_obj, NORMAL, "Created", f"created Workspace {_meta(written).get('name')}")
        for roll in step.roll:
            if roll.kind == "replace":
                await self._delete(
                    ns,
                    roll.name,
                    set_obj,
                    f"replacing Workspace {roll.name} ({roll.reason}) for the new template",
                )
            else:
                written = await self._apply(child_workspace(model, roll.index, uid=uid))
                self.pending.applied(ns, written)
                self.events.emit(
                    set_obj, NORMAL, "Updated", f"updated Workspace {roll.name} to the new template"
                )

    async def _apply(self, desired: Obj) -> Obj:
        return await self.client.apply(desired, field_manager=self.options.field_manager, force=True)

    async def _delete(self, ns: str, name: str, set_obj: Obj, message: str) -> None:
        current = self.cache.get(WORKSPACE, name, ns)
        uid = str(_meta(current or {}).get("uid") or "")
        try:
            await self.client.delete(WORKSPACE, name, ns, preconditions={"uid": uid} if uid else None)
        except (NotFoundError, ConflictError):
            return  # already gone, or the name now belongs to another object
        self.pending.deleted(ns, name, uid)
        self.events.emit(set_obj, NORMAL, "Deleted", message)

    async def _write_status(self, set_obj: Obj, new: Obj) -> None:
        meta = _meta(set_obj)
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        status = new.get("status") or {}
        if status == (set_obj.get("status") or {}):
            return  # stored, or written by us and not in the cache yet (self.recent)
        try:
            written = await self.client.patch(
                INFERENCESET,
                key[1],
                {"status": status},
                key[0],
                subresource="status",
                field_manager=self.options.field_manager,
            )
        except NotFoundError:
            return
        self.recent.remember(INFERENCESET, written)


class _LazyChildren(dict[int, Obj]):
    """Index -> desired child manifest, built on first lookup: a set of many replicas only builds
    the few the plan rolls."""

    def __init__(self, model: InferenceSet, uid: str) -> None:
        super().__init__()
        self._model, self._uid = model, uid

    def __missing__(self, index: int) -> Obj:
        built = child_workspace(self._model, index, uid=self._uid)
        self[index] = built
        return built


def _invalid_status(set_obj: Obj, message: str) -> Obj:
    new = {**set_obj, "status": dict(set_obj.get("status") or {})}
    new["status"]["conditions"] = [dict(c) for c in new["status"].get("conditions") or ()]
    set_condition(new, CONDITION_READY, False, "InvalidSpec", message)
    return new


def setup(manager: Manager, options: InferenceSetControllerOptions | None = None) -> InferenceSetReconciler:
    """Register the InferenceSet controller on ``manager``; returns the reconciler (its
    ``controller`` attribute is the runtime Controller)."""
    rec = InferenceSetReconciler(manager, options)
    rec.controller = (
        manager.builder()
        .named("inferenceset")
        .for_(INFERENCESET, predicates=[set_predicate()])
        .owns(WORKSPACE)
        .with_options(max_concurrent_reconciles=rec.options.max_concurrent_reconciles)
        .complete(rec)
    )
    # The informer the controller reads sets from drops remembered status writes it has shown.
    rec.recent.track(INFERENCESET, manager.cache.get_informer(INFERENCESET, namespace=manager.namespace))
    return rec


__all__ = ["INFERENCESET", "WORKSPACE", "InferenceSetReconciler", "set_predicate", "setup"]
