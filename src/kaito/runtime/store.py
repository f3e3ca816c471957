"""The informer's local store: plain dicts keyed by "namespace/name", with secondary indexes.

It is the hot data structure of every controller (thousands of objects, read on every reconcile),
so it stays lean: objects are stored as parsed, ``metadata.managedFields`` (often half an
object's size and useless to a reconciler) is dropped by default, and reads return the stored
dict itself unless the caller asks for a copy. Callers must treat uncopied results as read-only.

Index values are remembered per key when an object is stored, and removal uses those
remembered values: recomputing them from the old object would go wrong if anyone had mutated
it in place since. An index function that raises leaves that object out of that index (and
logs) instead of failing the update: one bad object must not stop the informer feeding the store.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import structlog

from kaito.runtime._internal.objects import deep_copy
from kaito.runtime._internal.selectors import match_labels

IndexFunc = Callable[[dict[str, Any]], list[str]]

NAMESPACE_INDEX = "namespace"

_log = structlog.get_logger("kaito.runtime.store")


def key_of(obj: dict[str, Any]) -> str:
    """client-go's MetaNamespaceKeyFunc: "namespace/name", or "name" when cluster-scoped."""
    meta = obj["metadata"]
    ns = meta.get("namespace")
    name: str = meta["name"]
    return f"{ns}/{name}" if ns else name


#: Longest string value ``Store.prepare`` interns: names, label values, enum-like fields and
#: short numbers; longer values (commands, images, annotations) are rarely repeated.
_SHARED_VALUE_LEN = 64


def _share_dict(d: dict[str, Any], intern: Callable[[str], str] = sys.intern) -> None:
    """Intern ``d``'s keys and short string values, recursively, in place (every dict and
    list keeps its identity: callers may hold references into the object)."""
    items = list(d.items())
    d.clear()
    for k, v in items:
        t = type(v)
        if t is str:
            if len(v) <= _SHARED_VALUE_LEN:
                v = intern(v)
        elif t is dict:
            _share_dict(v)
        elif t is list:
            _share_list(v)
        d[intern(k)] = v


def _share_list(items: list[Any], intern: Callable[[str], str] = sys.intern) -> None:
    for i, v in enumerate(items):
        t = type(v)
        if t is str:
            if len(v) <= _SHARED_VALUE_LEN:
                items[i] = intern(v)
        elif t is dict:
            _share_dict(v)
        elif t is list:
            _share_list(v)


def namespace_index(obj: dict[str, Any]) -> list[str]:
    ns = obj["metadata"].get("namespace")
    return [ns] if ns else []


class Store:
    """Keyed object store with indexes. asyncio-only: no locking, mutate from the loop thread."""

    def __init__(
        self,
        *,
        strip_managed_fields: bool = True,
        share_strings: bool = True,
        indexers: dict[str, IndexFunc] | None = None,
        default_indexers: bool = True,
    ):
        self.strip_managed_fields = strip_managed_fields
        self.share_strings = share_strings
        self.resource_version: str = ""
        self._items: dict[str, dict[str, Any]] = {}
        self._indexers: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}
        self._values: dict[str, dict[str, tuple[str, ...]]] = {}  # index -> key -> its values
        if default_indexers:
            self.add_indexer(NAMESPACE_INDEX, namespace_index)
        for name, fn in (indexers or {}).items():
            self.add_indexer(name, fn)

    # ----- indexes

    def add_indexer(self, name: str, fn: IndexFunc) -> None:
        """Register an index; existing objects are indexed immediately, so this is safe after sync."""
        if name in self._indexers and self._indexers[name] is not fn:
            raise ValueError(f"indexer {name!r} already registered")
        self._indexers[name] = fn
        self._indices[name] = {}
        self._values[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, fn, key, obj)

    def by_index(self, name: str, value: str, *, copy: bool = False) -> list[dict[str, Any]]:
        try:
            keys = self._indices[name].get(value, ())
        except KeyError:
            raise KeyError(f"no indexer named {name!r}") from None
        items = self._items
        if copy:
            return [deep_copy(items[k]) for k in keys]
        return [items[k] for k in keys]

    def _index_one(self, name: str, fn: IndexFunc, key: str, obj: dict[str, Any]) -> None:
        try:
            values = tuple(fn(obj))
        except Exception:
            _log.exception("index function failed; object left out of the index", index=name, key=key)
            return
        if not values:
            return
        self._values[name][key] = values
        index = self._indices[name]
        for value in values:
            bucket = index.get(value)
            if bucket is None:
                index[value] = {key}
            else:
                bucket.add(key)

    def _index(self, key: str, obj: dict[str, Any]) -> None:
        for name, fn in self._indexers.items():
            self._index_one(name, fn, key, obj)

    def _unindex(self, key: str) -> None:
        for name, index in self._indices.items():
            for value in self._values[name].pop(key, ()):
                bucket = index.get(value)
                if bucket is not None:
                    bucket.discard(key)
                    if not bucket:
                        del index[value]

    # ----- mutation

    def prepare(self, obj: dict[str, Any], *, share: bool = False) -> None:
        """Trim ``obj`` the way ``update`` will store it (drop ``managedFields``), in place.

        ``update`` does it anyway; calling it as soon as an object is parsed, before the next
        page of a LIST is read, lets that page's parse reuse the memory instead of leaving it
        free but scattered among the kept objects: measured on 100,000 ConfigMaps, RSS per
        cached object 3.4 KB when every page's managedFields lived until the LIST ended,
        1.7 KB when they are dropped per page (docs/performance.md).

        It also interns the namespace and the label values: JSON decoding makes a new string
        for every value of every object, though an informer's objects mostly share one
        namespace and a few label values (keys are already shared within a page).

        ``share`` (with the store's ``share_strings``, the default) interns every key and
        every short string value instead, recursively: what ``update`` does for an object that
        arrived on its own, as watch events do. Such an object shares nothing with the others
        (``json.loads`` shares keys only within one call), though they repeat the same few
        hundred keys and many values ("True", "Running", the Workspace's name in labels,
        selectors and owner references). Measured on a StatefulSet and a Pod as kaito writes
        them, one ``json.loads`` each: 15.1 KB as parsed, 8.2 KB shared, for about twice the
        parse's CPU (docs/performance.md). A LIST page's objects already share their keys, and
        a big sync would pay that CPU for little, so the paged and streamed syncs do not ask."""
        meta = obj["metadata"]
        if self.strip_managed_fields:
            meta.pop("managedFields", None)
        if share and self.share_strings:
            _share_dict(obj)
            return
        ns = meta.get("namespace")
        if type(ns) is str:
            meta["namespace"] = sys.intern(ns)
        labels = meta.get("labels")
        if type(labels) is dict:
            for k, v in labels.items():
                if type(v) is str and len(v) <= 63:  # label values are at most 63 characters
                    labels[k] = sys.intern(v)

    def update(self, obj: dict[str, Any], *, prepared: bool = False) -> dict[str, Any] | None:
        """Insert or replace; returns the previous object (for update events) or None.
        ``prepared``: ``prepare`` already ran on ``obj`` (a LIST page's objects)."""
        if not prepared:
            self.prepare(obj, share=True)
        key = key_of(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key)
        self._items[key] = obj
        self._index(key, obj)
        return old

    add = update

    def delete(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        return self.delete_key(key_of(obj))

    def delete_key(self, key: str) -> dict[str, Any] | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key)
        return old

    # ----- reads

    def get(self, key: str, *, copy: bool = False) -> dict[str, Any] | None:
        obj = self._items.get(key)
        if obj is not None and copy:
            return deep_copy(obj)  # type: ignore[no-any-return]
        return obj

    def get_by(self, namespace: str | None, name: str, *, copy: bool = False) -> dict[str, Any] | None:
        return self.get(f"{namespace}/{name}" if namespace else name, copy=copy)

    def list(
        self,
        namespace: str | None = None,
        *,
        label_selector: str | dict[str, str] | None = None,
        copy: bool = False,
    ) -> list[dict[str, Any]]:
        if namespace:
            if NAMESPACE_INDEX in self._indices:
                keys = self._indices[NAMESPACE_INDEX].get(namespace)
                objs: Iterable[dict[str, Any]] = [self._items[k] for k in keys] if keys else []
            else:
                objs = (o for o in self._items.values() if o["metadata"].get("namespace") == namespace)
        else:
            objs = self._items.values()
        if label_selector:
            objs = [o for o in objs if match_labels(o["metadata"].get("labels"), label_selector)]
        if copy:
            return [deep_copy(o) for o in objs]
        return list(objs)

    def keys(self) -> builtins.list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._items.values()))
