"""The informer's local store: plain dicts keyed by "namespace/name", with secondary indexes.

It is the hot data structure of every controller (thousands of objects, read on every reconcile),
so it stays lean: objects are stored as parsed, ``metadata.managedFields`` (often half an
object's size and useless to a reconciler) is dropped by default, and reads return the stored
dict itself unless the caller asks for a copy. Callers must treat uncopied results as read-only.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Iterator
from typing import Any

IndexFunc = Callable[[dict[str, Any]], list[str]]

NAMESPACE_INDEX = "namespace"
OWNER_INDEX = "owner"


def key_of(obj: dict[str, Any]) -> str:
    """client-go's MetaNamespaceKeyFunc: "namespace/name", or "name" when cluster-scoped."""
    meta = obj["metadata"]
    ns = meta.get("namespace")
    name: str = meta["name"]
    return f"{ns}/{name}" if ns else name


def split_key(key: str) -> tuple[str | None, str]:
    ns, sep, name = key.partition("/")
    return (ns, name) if sep else (None, ns)


def namespace_index(obj: dict[str, Any]) -> list[str]:
    ns = obj["metadata"].get("namespace")
    return [ns] if ns else []


def controller_owner_index(obj: dict[str, Any]) -> list[str]:
    """The uid of the controlling owner: what ``owns()`` maps a child event back through."""
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return [ref["uid"]]
    return []


def all_owners_index(obj: dict[str, Any]) -> list[str]:
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or () if "uid" in ref]


def deep_copy(obj: Any) -> Any:
    """A copy of JSON-shaped data; several times faster than copy.deepcopy for dict trees."""
    if isinstance(obj, dict):
        return {k: deep_copy(v) if isinstance(v, dict | list) else v for k, v in obj.items()}
    if isinstance(obj, list):
        return [deep_copy(v) if isinstance(v, dict | list) else v for v in obj]
    return obj


def strip_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if meta is not None:
        meta.pop("managedFields", None)
    return obj


def match_labels(labels: dict[str, str] | None, selector: str | dict[str, str] | None) -> bool:
    """Evaluate a label selector client-side, so cached lists honour it like the API would.

    Supports the string syntax (``a=b,c!=d,e in (x,y),f notin (z),g,!h``) and equality dicts.
    """
    if not selector:
        return True
    labels = labels or {}
    if isinstance(selector, dict):
        return all(labels.get(k) == v for k, v in selector.items())
    return all(_match_requirement(labels, req) for req in _parse_selector(selector))


_SelectorReq = tuple[str, str, tuple[str, ...]]
_selector_cache: dict[str, list[_SelectorReq]] = {}


def _parse_selector(selector: str) -> list[_SelectorReq]:
    cached = _selector_cache.get(selector)
    if cached is not None:
        return cached
    reqs: list[_SelectorReq] = []
    parts: list[str] = []
    depth, cur = 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for raw in parts:
        p = raw.strip()
        if not p:
            continue
        lowered = f" {p} "
        if " notin " in lowered or " in " in lowered:
            op = "notin" if " notin " in lowered else "in"
            key, _, rest = p.partition(f" {op} ")
            values = tuple(v.strip() for v in rest.strip().strip("()").split(",") if v.strip())
            reqs.append((key.strip(), op, values))
        elif "!=" in p:
            k, _, v = p.partition("!=")
            reqs.append((k.strip(), "!=", (v.strip(),)))
        elif "==" in p:
            k, _, v = p.partition("==")
            reqs.append((k.strip(), "=", (v.strip(),)))
        elif "=" in p:
            k, _, v = p.partition("=")
            reqs.append((k.strip(), "=", (v.strip(),)))
        elif p.startswith("!"):
            reqs.append((p[1:].strip(), "!exists", ()))
        else:
            reqs.append((p, "exists", ()))
    if len(_selector_cache) < 1024:
        _selector_cache[selector] = reqs
    return reqs


def _match_requirement(labels: dict[str, str], req: _SelectorReq) -> bool:
    key, op, values = req
    if op == "=":
        return labels.get(key) == values[0]
    if op == "!=":
        return labels.get(key) != values[0]
    if op == "in":
        return key in labels and labels[key] in values
    if op == "notin":
        return labels.get(key) not in values
    if op == "exists":
        return key in labels
    return key not in labels


class Store:
    """Keyed object store with indexes. asyncio-only: no locking, mutate from the loop thread."""

    def __init__(
        self,
        *,
        strip_managed_fields: bool = True,
        indexers: dict[str, IndexFunc] | None = None,
        default_indexers: bool = True,
    ):
        self.strip_managed_fields = strip_managed_fields
        self.resource_version: str = ""
        self._items: dict[str, dict[str, Any]] = {}
        self._indexers: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}
        if default_indexers:
            self._indexers[NAMESPACE_INDEX] = namespace_index
            self._indexers[OWNER_INDEX] = controller_owner_index
            self._indices[NAMESPACE_INDEX] = {}
            self._indices[OWNER_INDEX] = {}
        for name, fn in (indexers or {}).items():
            self.add_indexer(name, fn)

    # ----- indexes

    def add_indexer(self, name: str, fn: IndexFunc) -> None:
        """Register an index; existing objects are indexed immediately, so this is safe after sync."""
        if name in self._indexers and self._indexers[name] is not fn:
            raise ValueError(f"indexer {name!r} already registered")
        self._indexers[name] = fn
        index: dict[str, set[str]] = {}
        for key, obj in self._items.items():
            for value in fn(obj):
                index.setdefault(value, set()).add(key)
        self._indices[name] = index

    def has_indexer(self, name: str) -> bool:
        return name in self._indexers

    def index_keys(self, name: str, value: str) -> list[str]:
        try:
            return list(self._indices[name].get(value, ()))
        except KeyError:
            raise KeyError(f"no indexer named {name!r}") from None

    def by_index(self, name: str, value: str, *, copy: bool = False) -> list[dict[str, Any]]:
        try:
            keys = self._indices[name].get(value, ())
        except KeyError:
            raise KeyError(f"no indexer named {name!r}") from None
        items = self._items
        if copy:
            return [deep_copy(items[k]) for k in keys]
        return [items[k] for k in keys]

    def _index(self, key: str, obj: dict[str, Any]) -> None:
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj):
                bucket = index.get(value)
                if bucket is None:
                    index[value] = {key}
                else:
                    bucket.add(key)

    def _unindex(self, key: str, obj: dict[str, Any]) -> None:
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj):
                bucket = index.get(value)
                if bucket is not None:
                    bucket.discard(key)
                    if not bucket:
                        del index[value]

    # ----- mutation

    def update(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Insert or replace; returns the previous object (for update events) or None."""
        if self.strip_managed_fields:
            obj["metadata"].pop("managedFields", None)
        key = key_of(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        self._index(key, obj)
        return old

    add = update

    def delete(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        return self.delete_key(key_of(obj))

    def delete_key(self, key: str) -> dict[str, Any] | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def replace(self, objs: Iterable[dict[str, Any]], resource_version: str) -> None:
        """Swap the whole content (after a relist); indexes are rebuilt from scratch."""
        self._items = {}
        for name in self._indices:
            self._indices[name] = {}
        for obj in objs:
            self.update(obj)
        self.resource_version = resource_version

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
            keys = self._indices.get(NAMESPACE_INDEX, {}).get(namespace)
            if NAMESPACE_INDEX in self._indices:
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
