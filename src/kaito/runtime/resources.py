"""Group/version/kind identity and REST discovery.

Objects are plain dicts, so the only thing a caller has to name a type is its GVK; the URL
(plural, namespaced or not) comes from discovery, which is cached per group-version and
refreshed once on a miss so that CRDs installed after start-up are still found.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from kaito.runtime.errors import NotFoundError


@dataclass(frozen=True, slots=True)
class GVK:
    group: str
    version: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @classmethod
    def from_api_version(cls, api_version: str, kind: str) -> GVK:
        group, sep, version = api_version.rpartition("/")
        return cls(group if sep else "", version, kind)

    @classmethod
    def of(cls, obj: dict[str, Any]) -> GVK:
        try:
            return cls.from_api_version(obj["apiVersion"], obj["kind"])
        except KeyError as exc:
            raise ValueError(f"object has no {exc.args[0]}: cannot tell its type") from None

    def __str__(self) -> str:
        return f"{self.api_version}, Kind={self.kind}"


def _q(s: str) -> str:
    return quote(s, safe="")


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    gvk: GVK
    plural: str
    namespaced: bool
    subresources: frozenset[str] = field(default_factory=frozenset)

    @property
    def base(self) -> str:
        if self.gvk.group:
            return f"/apis/{self.gvk.group}/{self.gvk.version}"
        return f"/api/{self.gvk.version}"

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """URL path for a collection (no name) or one object; namespace is ignored for
        cluster-scoped kinds so callers may pass an object's (absent) namespace blindly."""
        parts = [self.base]
        if self.namespaced and namespace:
            parts.append(f"/namespaces/{_q(namespace)}")
        parts.append(f"/{self.plural}")
        if name is not None:
            if not name:
                raise ValueError(f"empty name for {self.gvk.kind}")
            parts.append(f"/{_q(name)}")
            if subresource:
                parts.append(f"/{subresource}")
        elif subresource:
            raise ValueError("a subresource needs an object name")
        return "".join(parts)


FetchJSON = Callable[[str], Awaitable[dict[str, Any]]]


class RESTMapper:
    """Maps GVKs to resources via the discovery endpoints, one request per group-version."""

    def __init__(self, fetch: FetchJSON):
        self._fetch = fetch
        self._by_gv: dict[str, dict[str, ResourceInfo]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def register(self, info: ResourceInfo) -> None:
        """Seed a mapping without discovery (tests, or kinds the caller already knows)."""
        self._by_gv.setdefault(info.gvk.group_version, {})[info.gvk.kind] = info

    def cached(self, gvk: GVK) -> ResourceInfo | None:
        """The mapping if it is already known; lets hot paths skip an await."""
        kinds = self._by_gv.get(gvk.group_version)
        return kinds.get(gvk.kind) if kinds else None

    def invalidate(self, group_version: str | None = None) -> None:
        if group_version is None:
            self._by_gv.clear()
        else:
            self._by_gv.pop(group_version, None)

    async def resource_for(self, gvk: GVK) -> ResourceInfo:
        info = self.cached(gvk)
        if info is not None:
            return info
        gv = gvk.group_version
        lock = self._locks.setdefault(gv, asyncio.Lock())
        async with lock:
            info = self.cached(gvk)
            if info is not None:
                return info
            # Either never discovered or discovered before the CRD existed: (re)discover once.
            await self._discover(gvk)
        info = self.cached(gvk)
        if info is None:
            raise NotFoundError(404, "NotFound", f"no resource for {gvk} on the server")
        return info

    async def _discover(self, gvk: GVK) -> None:
        path = f"/apis/{gvk.group}/{gvk.version}" if gvk.group else f"/api/{gvk.version}"
        try:
            doc = await self._fetch(path)
        except NotFoundError:
            self._by_gv[gvk.group_version] = dict(self._by_gv.get(gvk.group_version, {}))
            return
        kinds: dict[str, ResourceInfo] = {}
        subs: dict[str, set[str]] = {}
        for r in doc.get("resources", []):
            name: str = r.get("name", "")
            if "/" in name:
                parent, _, sub = name.partition("/")
                subs.setdefault(parent, set()).add(sub)
        for r in doc.get("resources", []):
            name = r.get("name", "")
            if "/" in name:
                continue
            kind = r.get("kind", "")
            if not kind or kind in kinds:
                continue
            kinds[kind] = ResourceInfo(
                gvk=GVK(gvk.group, gvk.version, kind),
                plural=name,
                namespaced=bool(r.get("namespaced", False)),
                subresources=frozenset(subs.get(name, ())),
            )
        self._by_gv[gvk.group_version] = kinds


# Well-known kinds, so operators need not spell out a GVK for the built-in types.
POD = GVK("", "v1", "Pod")
SERVICE = GVK("", "v1", "Service")
CONFIGMAP = GVK("", "v1", "ConfigMap")
SECRET = GVK("", "v1", "Secret")
NAMESPACE = GVK("", "v1", "Namespace")
NODE = GVK("", "v1", "Node")
EVENT = GVK("", "v1", "Event")
DEPLOYMENT = GVK("apps", "v1", "Deployment")
STATEFULSET = GVK("apps", "v1", "StatefulSet")
CONTROLLERREVISION = GVK("apps", "v1", "ControllerRevision")
JOB = GVK("batch", "v1", "Job")
LEASE = GVK("coordination.k8s.io", "v1", "Lease")
CRD = GVK("apiextensions.k8s.io", "v1", "CustomResourceDefinition")
