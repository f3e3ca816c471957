"""The shared informer cache: one informer per (kind, namespace, selector), and the client's
read path.

Why shared: every extra informer for a kind is another watch connection and another copy of
every object in memory, so controllers that watch the same kind get the same informer.
Cluster-scoped kinds are keyed by name alone, whatever namespace a caller passes (the apiserver
ignores it too), so a reconciler handing on ``req.namespace`` never gets a false NotFound.
"""

from __future__ import annotations

import asyncio
import builtins
from typing import TYPE_CHECKING, Any

from kaito.runtime.informer import Informer
from kaito.runtime.options import InformerOptions
from kaito.runtime.resources import GVK
from kaito.runtime.store import IndexFunc

if TYPE_CHECKING:
    from kaito.runtime.client import Client

Obj = dict[str, Any]


class InformerCache:
    """One shared informer per (kind, namespace); also the Client's read path."""

    def __init__(
        self,
        client: Client,
        *,
        namespace: str | None = None,
        options: InformerOptions | None = None,
        strip_managed_fields: bool | None = None,
        resync: float | None = None,
        **informer_options: Any,
    ):
        opts = options or InformerOptions()
        overrides = dict(informer_options)
        if strip_managed_fields is not None:
            overrides["strip_managed_fields"] = strip_managed_fields
        if resync is not None:
            overrides["resync"] = resync
        self.options = opts.replace(**overrides) if overrides else opts
        self.client = client
        self.namespace = namespace
        self._informers: dict[tuple[GVK, str | None, str | None], Informer] = {}
        self._started = False

    @property
    def resync(self) -> float | None:
        return self.options.resync

    def _cluster_scoped(self, gvk: GVK) -> bool:
        info = self.client.mapper.cached(gvk)
        return info is not None and not info.namespaced

    def get_informer(
        self, gvk: GVK, namespace: str | None = None, *, label_selector: str | None = None
    ) -> Informer:
        """The informer for a kind; created on first use and started if the cache is running."""
        ns = namespace if namespace is not None else self.namespace
        if self._cluster_scoped(gvk):
            ns = None
        key = (gvk, ns, label_selector)
        inf = self._informers.get(key)
        if inf is None:
            inf = Informer(
                self.client, gvk, namespace=ns, label_selector=label_selector, options=self.options
            )
            self._informers[key] = inf
            if self._started:
                inf.start_nowait()
        return inf

    @property
    def informers(self) -> builtins.list[Informer]:
        return list(self._informers.values())

    async def start(self) -> None:
        self._started = True
        for inf in list(self._informers.values()):
            await inf.start()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        results = await asyncio.gather(*(i.wait_for_sync(timeout) for i in list(self._informers.values())))
        return all(results)

    async def stop(self) -> None:
        self._started = False
        await asyncio.gather(*(i.stop() for i in list(self._informers.values())))

    def add_index(self, gvk: GVK, name: str, fn: IndexFunc, namespace: str | None = None) -> None:
        self.get_informer(gvk, namespace).add_index(name, fn)

    def by_index(self, gvk: GVK, name: str, value: str, namespace: str | None = None) -> builtins.list[Obj]:
        return self.get_informer(gvk, namespace).store.by_index(name, value)

    # ----- the client's read path (CacheReader)

    def _reader(self, gvk: GVK, namespace: str | None) -> tuple[Informer, bool] | None:
        """A synced informer that can answer for ``namespace``, and whether the kind is
        cluster-scoped (then any unfiltered informer of the kind holds every object)."""
        cluster_scoped = self._cluster_scoped(gvk)
        inf = self._informers.get((gvk, None, None))
        if inf is not None and inf.has_synced:
            return inf, cluster_scoped
        if cluster_scoped:
            for (g, _ns, selector), inf in self._informers.items():
                if g == gvk and selector is None and inf.has_synced:
                    return inf, True
        elif namespace is not None:
            inf = self._informers.get((gvk, namespace, None))
            if inf is not None and inf.has_synced:
                return inf, False
        return None

    def can_serve(self, gvk: GVK, namespace: str | None = None) -> bool:
        return self._reader(gvk, namespace) is not None

    def get(self, gvk: GVK, name: str, namespace: str | None = None) -> Obj | None:
        found = self._reader(gvk, namespace)
        if found is None:
            raise LookupError(f"no synced informer for {gvk}")
        inf, cluster_scoped = found
        return inf.store.get_by(None if cluster_scoped else namespace, name)

    def list(
        self, gvk: GVK, namespace: str | None = None, label_selector: str | dict[str, str] | None = None
    ) -> builtins.list[Obj]:
        found = self._reader(gvk, namespace)
        if found is None:
            raise LookupError(f"no synced informer for {gvk}")
        inf, cluster_scoped = found
        return inf.store.list(None if cluster_scoped else namespace, label_selector=label_selector)
