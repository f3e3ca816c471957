"""The shared informer cache: one informer per (kind, scope), and the client's read path.

Why shared: every extra informer for a kind is another watch connection and another copy of
every object in memory, so controllers that watch the same kind get the same informer.
Cluster-scoped kinds are keyed by name alone, whatever namespace a caller passes (the apiserver
ignores it too), so a reconciler handing on ``req.namespace`` never gets a false NotFound.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kaito.runtime.informer import Informer
from kaito.runtime.options import InformerOptions
from kaito.runtime.resources import GVK
from kaito.runtime.store import IndexFunc

if TYPE_CHECKING:
    from kaito.runtime.client import Client

Obj = dict[str, Any]


class InformerCache:
    """One shared informer per (kind, scope); also the Client's read path.

    The scope is the cache's ``namespace`` (a Manager passes its own): every informer of a
    namespace-restricted cache lists and watches that namespace only, whoever asks for it and
    whatever namespace they pass, so a reconcile can never start a cluster-wide watch the
    operator may not even be allowed. Cluster-scoped kinds are still listed cluster-wide (their
    URL has no namespace), under the same key, so asking for one before and after discovery
    answered gives the same informer.

    ``label_selectors`` restricts a kind's informer to matching objects (controller-runtime's
    ``cache.Options.ByObject[...].Label``): objects without the labels are neither transferred
    nor held, and cache reads of that kind see only matching ones.
    """

    def __init__(
        self,
        client: Client,
        *,
        namespace: str | None = None,
        label_selectors: Mapping[GVK, str] | None = None,
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
        self.label_selectors: dict[GVK, str] = dict(label_selectors or {})
        self._informers: dict[tuple[GVK, str | None, str | None], Informer] = {}
        self._started = False

    @property
    def resync(self) -> float | None:
        return self.options.resync

    def _cluster_scoped(self, gvk: GVK) -> bool:
        info = self.client.mapper.cached(gvk)
        return info is not None and not info.namespaced

    def _scope(self, gvk: GVK, namespace: str | None) -> str | None:
        """The namespace an informer of ``gvk`` is keyed by (and, for namespaced kinds, watches).

        A restricted cache has one scope: its namespace; asking for another is an error (the
        cache would hold nothing for it), as with controller-runtime's namespaced cache. The
        key does not depend on whether the REST mapper knows the kind yet, so concurrent
        callers with a cold mapper still share one informer. A cluster-wide cache may also
        hold per-namespace informers of namespaced kinds for callers that ask for one.
        """
        if self.namespace is not None:
            if namespace is not None and namespace != self.namespace and not self._cluster_scoped(gvk):
                raise ValueError(
                    f"the cache is restricted to namespace {self.namespace!r}: "
                    f"no informer for {gvk.kind} in {namespace!r}"
                )
            return self.namespace
        return None if self._cluster_scoped(gvk) else namespace

    def get_informer(
        self, gvk: GVK, namespace: str | None = None, *, label_selector: str | None = None
    ) -> Informer:
        """The informer for a kind; created on first use and started if the cache is running.

        ``namespace`` None means the cache's scope. ``label_selector`` None means the kind's
        selector from ``label_selectors`` (if any); another selector is a separate informer."""
        ns = self._scope(gvk, namespace)
        key = (gvk, ns, label_selector)
        inf = self._informers.get(key)
        if inf is None:
            selector = label_selector if label_selector is not None else self.label_selectors.get(gvk)
            inf = Informer(self.client, gvk, namespace=ns, label_selector=selector, options=self.options)
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
        inf = self._informers.get((gvk, self.namespace, None))
        if inf is not None and inf.has_synced:
            if cluster_scoped or self.namespace is None or namespace in (None, self.namespace):
                return inf, cluster_scoped
            return None  # a namespace outside a restricted cache: the API must answer
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
