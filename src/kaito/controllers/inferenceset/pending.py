"""Writes to child Workspaces that the informer cache has not shown yet (client-go's
"expectations").

Why: the rolling rule counts unavailable children. Right after the controller deletes or updates
one, the cache may still show it Ready on the old template for a few milliseconds; a reconcile in
that window would count it available and roll a second child, taking two out of service at once.
So until the cache catches up, the controller's own view of such a child is its write: the API's
answer to an apply, or "being deleted" after a delete. An entry lapses when the cache shows the
write (resourceVersion at or past it, or the object gone) or after ``ttl`` seconds, so a lost
watch event can stall a set for at most that long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str]


def _rv(obj: Obj | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or -1)
    except (TypeError, ValueError):
        return -1


class Pending:
    def __init__(self, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._applied: dict[Key, tuple[Obj, float]] = {}
        self._deleted: dict[Key, tuple[str, float]] = {}

    def applied(self, namespace: str, written: Obj) -> None:
        """The API's answer to a create or update of a child."""
        name = str((written.get("metadata") or {}).get("name") or "")
        self._deleted.pop((namespace, name), None)
        self._applied[(namespace, name)] = (written, self._clock() + self.ttl)

    def deleted(self, namespace: str, name: str, uid: str) -> None:
        self._applied.pop((namespace, name), None)
        self._deleted[(namespace, name)] = (uid, self._clock() + self.ttl)

    def view(self, namespace: str, cached: dict[str, Obj]) -> dict[str, Obj]:
        """``cached`` (name -> Workspace) with this controller's unseen writes laid over it."""
        now = self._clock()
        out = dict(cached)
        for (ns, name), (written, deadline) in list(self._applied.items()):
            if ns != namespace:
                continue
            have = cached.get(name)
            if now > deadline or (have is not None and _rv(have) >= _rv(written) >= 0):
                del self._applied[(ns, name)]
            else:
                out[name] = written
        for (ns, name), (uid, deadline) in list(self._deleted.items()):
            if ns != namespace:
                continue
            have = cached.get(name)
            meta = (have or {}).get("metadata") or {}
            if now > deadline or have is None or meta.get("uid") != uid or meta.get("deletionTimestamp"):
                del self._deleted[(ns, name)]
            else:
                shown = dict(have)
                shown["metadata"] = {**meta, "deletionTimestamp": "pending"}
                out[name] = shown
        return out

    def forget(self, namespace: str, names: set[str] | None = None) -> None:
        """Drop entries of ``namespace`` (only ``names`` when given): the set is gone."""

        def gone(key: Key) -> bool:
            return key[0] == namespace and (names is None or key[1] in names)

        for key in [k for k in self._applied if gone(k)]:
            del self._applied[key]
        for key in [k for k in self._deleted if gone(k)]:
            del self._deleted[key]

    def __len__(self) -> int:
        return len(self._applied) + len(self._deleted)


__all__ = ["Pending"]
