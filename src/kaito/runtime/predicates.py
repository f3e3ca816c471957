"""Event filters applied before an event turns into a queued reconcile request.

Reconciles are level-triggered, so dropping an event is only safe when the reconciler would do
nothing with it. Filtering early keeps the work queue small (status-only updates of the primary,
periodic resyncs) without risking missed work: a predicate never sees the reconciler's state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
_ObjFn = Callable[[Obj], bool]
_UpdateFn = Callable[[Obj, Obj], bool]


def _true1(_obj: Obj) -> bool:
    return True


def _true2(_old: Obj, _new: Obj) -> bool:
    return True


@dataclass(frozen=True)
class Predicate:
    """One filter per event type; a missing function lets that event type through.

    Kept as plain callables (not a class hierarchy) so that combinators and ad-hoc lambdas
    compose without subclassing.
    """

    create: _ObjFn = _true1
    update: _UpdateFn = _true2
    delete: _ObjFn = _true1
    generic: _ObjFn = _true1


def _meta(obj: Obj) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def generation_changed() -> Predicate:
    """Drop updates that did not change ``metadata.generation`` (status or metadata only).

    Objects without a generation (ConfigMaps, most core kinds) always pass: for them every
    update may be a spec change.
    """

    def update(old: Obj, new: Obj) -> bool:
        og, ng = _meta(old).get("generation"), _meta(new).get("generation")
        if og is None or ng is None:
            return True
        return bool(og != ng)

    return Predicate(update=update)


def resource_version_changed() -> Predicate:
    """Drop periodic resync updates, which re-deliver an unchanged object."""

    def update(old: Obj, new: Obj) -> bool:
        return bool(_meta(old).get("resourceVersion") != _meta(new).get("resourceVersion"))

    return Predicate(update=update)


def labels_changed() -> Predicate:
    """Pass updates that changed ``metadata.labels``."""

    def update(old: Obj, new: Obj) -> bool:
        return bool((_meta(old).get("labels") or {}) != (_meta(new).get("labels") or {}))

    return Predicate(update=update)


def annotations_changed() -> Predicate:
    """Pass updates that changed ``metadata.annotations``."""

    def update(old: Obj, new: Obj) -> bool:
        return bool((_meta(old).get("annotations") or {}) != (_meta(new).get("annotations") or {}))

    return Predicate(update=update)


def label_selector(match_labels: Mapping[str, str]) -> Predicate:
    """Pass only objects whose labels include every pair of ``match_labels``.

    An update passes when either side matches, so that an object leaving the selection is still
    seen once (the reconciler may need to clean up after it).
    """

    wanted = dict(match_labels)

    def matches(obj: Obj) -> bool:
        labels = _meta(obj).get("labels") or {}
        return all(labels.get(k) == v for k, v in wanted.items())

    return Predicate(
        create=matches,
        update=lambda old, new: matches(old) or matches(new),
        delete=matches,
        generic=matches,
    )


def namespace_in(*namespaces: str) -> Predicate:
    """Pass only objects in the given namespaces (cheap multi-tenant scoping of a shared cache)."""

    allowed = frozenset(namespaces)

    def matches(obj: Obj) -> bool:
        return _meta(obj).get("namespace") in allowed

    return Predicate(create=matches, update=lambda _o, n: matches(n), delete=matches, generic=matches)


def from_functions(
    *,
    create: _ObjFn | None = None,
    update: _UpdateFn | None = None,
    delete: _ObjFn | None = None,
    generic: _ObjFn | None = None,
) -> Predicate:
    return Predicate(
        create=create or _true1,
        update=update or _true2,
        delete=delete or _true1,
        generic=generic or _true1,
    )


def and_(*preds: Predicate) -> Predicate:
    return Predicate(
        create=lambda o: all(p.create(o) for p in preds),
        update=lambda o, n: all(p.update(o, n) for p in preds),
        delete=lambda o: all(p.delete(o) for p in preds),
        generic=lambda o: all(p.generic(o) for p in preds),
    )


def or_(*preds: Predicate) -> Predicate:
    """Pass when any predicate passes; ``or_()`` with no arguments passes nothing."""
    return Predicate(
        create=lambda o: any(p.create(o) for p in preds),
        update=lambda o, n: any(p.update(o, n) for p in preds),
        delete=lambda o: any(p.delete(o) for p in preds),
        generic=lambda o: any(p.generic(o) for p in preds),
    )


def not_(pred: Predicate) -> Predicate:
    return Predicate(
        create=lambda o: not pred.create(o),
        update=lambda o, n: not pred.update(o, n),
        delete=lambda o: not pred.delete(o),
        generic=lambda o: not pred.generic(o),
    )
