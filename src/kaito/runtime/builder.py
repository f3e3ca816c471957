"""The fluent controller builder: ``mgr.builder().named(..).for_(..).owns(..).complete(r)``.

It sits between the controller and the manager: it needs a few of the manager's parts (the
shared informer cache, the client's REST mapper, the metrics registry, ``add``), which it reaches
through the small ``ControllerHost`` protocol, so ``controller`` never imports ``manager`` and
``manager`` imports this module only to hand itself over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from kaito.runtime.controller import (
    Controller,
    EventSource,
    Mapper,
    Obj,
    ReconcileFn,
    Reconciler,
    Request,
)
from kaito.runtime.metrics import Metrics
from kaito.runtime.options import ControllerOptions
from kaito.runtime.predicates import Predicate
from kaito.runtime.resources import GVK, ResourceInfo
from kaito.runtime.workqueue import RateLimiter


class _Mapper(Protocol):
    def cached(self, gvk: GVK) -> ResourceInfo | None: ...


class _Cache(Protocol):
    def get_informer(self, gvk: GVK, namespace: str | None = None) -> Any: ...


class ControllerHost(Protocol):
    """The parts of a Manager the builder wires a controller into."""

    metrics: Metrics
    namespace: str | None
    cache_sync_timeout: float

    @property
    def cache(self) -> _Cache: ...

    @property
    def rest_mapper(self) -> _Mapper: ...

    def add(self, runnable: Any) -> None: ...


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


class ControllerBuilder:
    """Fluent wiring of sources to a controller, registered on a manager by ``complete``."""

    def __init__(self, manager: ControllerHost) -> None:
        self._mgr = manager
        self._name: str | None = None
        self._for: tuple[GVK, Sequence[Predicate]] | None = None
        self._owns: list[tuple[GVK, Sequence[Predicate]]] = []
        self._watches: list[tuple[GVK, Mapper, Sequence[Predicate]]] = []
        self._options = ControllerOptions(cache_sync_timeout=manager.cache_sync_timeout)

    def named(self, name: str) -> ControllerBuilder:
        self._name = name
        return self

    def for_(self, gvk: GVK, predicates: Sequence[Predicate] = ()) -> ControllerBuilder:
        if self._for is not None:
            raise ValueError("for_() may be called only once: a controller has one primary kind")
        self._for = (gvk, tuple(predicates))
        return self

    def owns(self, gvk: GVK, predicates: Sequence[Predicate] = ()) -> ControllerBuilder:
        self._owns.append((gvk, tuple(predicates)))
        return self

    def watches(self, gvk: GVK, mapper: Mapper, predicates: Sequence[Predicate] = ()) -> ControllerBuilder:
        self._watches.append((gvk, mapper, tuple(predicates)))
        return self

    def with_options(
        self,
        options: ControllerOptions | None = None,
        *,
        max_concurrent_reconciles: int | None = None,
        reconcile_timeout: float | None = None,
        rate_limiter: Callable[[], RateLimiter] | None = None,
        recover_panic: bool | None = None,
    ) -> ControllerBuilder:
        """A whole ``ControllerOptions``, and/or single fields on top of it."""
        if options is not None:
            self._options = options
        changes: dict[str, Any] = {
            k: v
            for k, v in (
                ("max_concurrent_reconciles", max_concurrent_reconciles),
                ("reconcile_timeout", reconcile_timeout),
                ("rate_limiter", rate_limiter),
                ("recover_panic", recover_panic),
            )
            if v is not None
        }
        if changes:
            self._options = self._options.replace(**changes)
        return self

    def complete(self, reconciler: Reconciler | ReconcileFn) -> Controller:
        if self._for is None:
            raise ValueError("for_() is required: name the controller's primary kind")
        for_gvk, for_preds = self._for
        name = self._name or for_gvk.kind.lower()
        mgr = self._mgr
        ctrl = Controller(name, reconciler, self._options, metrics=mgr.metrics)
        ns = mgr.namespace
        mapper = mgr.rest_mapper

        def inform(gvk: GVK) -> EventSource:
            informer: EventSource = mgr.cache.get_informer(gvk, namespace=ns)
            return informer

        ctrl.watch(for_gvk, inform(for_gvk), lambda o: (Request.from_object(o),), for_preds)
        owner_group, owner_kind = for_gvk.group, for_gvk.kind

        def to_owner(obj: Obj) -> Iterable[Request]:
            meta = obj.get("metadata") or {}
            for ref in meta.get("ownerReferences") or ():
                if (
                    ref.get("controller")
                    and ref.get("kind") == owner_kind
                    and _group(str(ref.get("apiVersion", ""))) == owner_group
                ):
                    # Handlers run only once the controller's informers synced, so discovery
                    # of the owner kind has answered by now (whenever its CRD appeared).
                    info = mapper.cached(for_gvk)
                    namespaced = info.namespaced if info is not None else True
                    return (Request(meta.get("namespace") if namespaced else None, ref["name"]),)
            return ()

        for gvk, preds in self._owns:
            ctrl.watch(gvk, inform(gvk), to_owner, preds)
        for gvk, mapper_fn, preds in self._watches:
            ctrl.watch(gvk, inform(gvk), mapper_fn, preds)
        mgr.add(ctrl)
        return ctrl
