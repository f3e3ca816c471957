"""A dict-based Kubernetes client: reads from the informer cache, writes to the API.

Built directly on aiohttp rather than kubernetes_asyncio's generated APIs because those
deserialise every response into models (slow, and controllers want dicts anyway) and have a
class per kind (useless for CRDs). The configuration is a slim ``RestConfig``
(:mod:`kaito.runtime._internal.kubeconfig`); a kubernetes_asyncio ``Configuration`` is accepted
too, duck-typed, so nothing here imports kubernetes_asyncio (its import alone costs ~34 MB RSS).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import platform
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random

from kaito.runtime._internal.kubeconfig import RestConfig, as_rest_config
from kaito.runtime._internal.kubeconfig import (
    load_configuration as load_configuration,
)
from kaito.runtime._internal.objects import deep_copy
from kaito.runtime.errors import ApiError, ConflictError, GoneError, NotFoundError, api_error_from_response
from kaito.runtime.resources import GVK, ResourceInfo, RESTMapper

if TYPE_CHECKING:
    from kubernetes_asyncio.client import Configuration

T = TypeVar("T")

PatchType = Literal["merge", "json", "strategic", "apply"]

# Bodies above this are parsed in a worker thread: json.loads of a multi-megabyte LIST would
# otherwise stall the event loop (and every reconcile, probe and lease renewal on it).
_PARSE_OFF_LOOP_BYTES = 1 << 20

PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",  # JSON is YAML, so a JSON body is fine
}


class CacheReader(Protocol):
    """What the client needs from a cache to serve reads locally (see InformerCache)."""

    def can_serve(self, gvk: GVK, namespace: str | None = None) -> bool: ...

    def get(self, gvk: GVK, name: str, namespace: str | None = None) -> dict[str, Any] | None: ...

    def list(
        self, gvk: GVK, namespace: str | None = None, label_selector: str | dict[str, str] | None = None
    ) -> list[dict[str, Any]]: ...


def default_user_agent(component: str = "kaito") -> str:
    """client-go style "<component>/<version> (<os>/<arch>) kaito.runtime" so audit logs show who."""
    try:
        version = metadata.version("kaito")
    except metadata.PackageNotFoundError:
        version = "0.0.0"
    return (
        f"{component}/v{version} ({sys.platform}/{platform.machine() or 'unknown'}) "
        f"kaito.runtime python/{platform.python_version()}"
    )


def ssl_context_for(config: RestConfig | Configuration) -> ssl.SSLContext | bool:
    """TLS settings (CA, client certificate, verification) of either kind of configuration."""
    return as_rest_config(config).ssl_context()


def _params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    out: dict[str, str] = {}
    for k, v in params.items():
        if v is None:
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


class Client:
    """One aiohttp session per client; safe to share across every controller in a process."""

    def __init__(
        self,
        config: RestConfig | Configuration,
        *,
        user_agent: str | None = None,
        timeout: float = 30.0,
        cache: CacheReader | None = None,
        trace_configs: Iterable[aiohttp.TraceConfig] = (),
        field_manager: str | None = None,
        max_throttle_retries: int = 10,
        max_connections: int = 32,
    ):
        """``max_connections`` caps the pooled connections of ordinary requests (more wait for
        one); watches and other streams get connections of their own, without a cap, since each
        pins one for minutes. Every idle TLS connection holds asyncio's 256 KiB read buffer, so
        without the cap a burst of 120 requests left 16 MB resident until keep-alive ran out."""
        self.config = config  # as given (a RestConfig or a kubernetes_asyncio Configuration)
        self.rest_config = as_rest_config(config)
        self.base_url = self.rest_config.host.rstrip("/")
        self.user_agent = user_agent or default_user_agent()
        self.timeout = timeout
        self.cache = cache
        self.field_manager = field_manager
        self.max_throttle_retries = max_throttle_retries
        self.max_connections = max_connections
        self._trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None
        self._stream_session: aiohttp.ClientSession | None = None
        self._static_auth = self.rest_config.static_authorization()
        self._request_kwargs: dict[str, Any] = {}
        if self.rest_config.tls_server_name and self.base_url.startswith("https"):
            self._request_kwargs["server_hostname"] = self.rest_config.tls_server_name
        self.mapper = RESTMapper(self._get_json)

    # ----- session

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session of ordinary requests, created lazily so a Client can be built outside the
        event loop; at most ``max_connections`` connections."""
        if self._session is None or self._session.closed:
            self._session = self._new_session(self.max_connections)
        return self._session

    @property
    def stream_session(self) -> aiohttp.ClientSession:
        """The session of watches and other streams: no pool limit, since every watch pins one
        connection for minutes and a limit would leave informers waiting on each other."""
        if self._stream_session is None or self._stream_session.closed:
            self._stream_session = self._new_session(0)
        return self._stream_session

    def _new_session(self, limit: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limit, ssl=self.rest_config.ssl_context(), keepalive_timeout=60
        )
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if self._static_auth:
            headers["Authorization"] = self._static_auth
        return aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            trace_configs=self._trace_configs or None,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            json_serialize=json.dumps,
        )

    async def close(self) -> None:
        for session in (self._session, self._stream_session):
            if session is not None and not session.closed:
                await session.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _auth_headers(self) -> dict[str, str] | None:
        # Tokens that change (exec plugins, rotated token files) are asked for per request; the
        # RestConfig caches them, so this is a dict lookup or a stat() at most once a second.
        if not self.rest_config.dynamic_auth:
            return None
        token = await self.rest_config.authorization()
        return {"Authorization": token} if token else None

    # ----- raw HTTP

    async def raw_request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        stream: bool = False,
        request_timeout: aiohttp.ClientTimeout | float | None = None,
    ) -> Any:
        """One API call. Returns parsed JSON, or (``stream=True``) the open response, which the
        caller must release; non-2xx answers raise the matching ``ApiError`` either way."""
        headers = await self._auth_headers()
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers = dict(headers or {})
            headers["Content-Type"] = content_type
        timeout = request_timeout
        if isinstance(timeout, int | float):
            timeout = aiohttp.ClientTimeout(total=timeout)
        kwargs: dict[str, Any] = dict(self._request_kwargs)
        if timeout is not None:
            kwargs["timeout"] = timeout
        reauthenticated = False
        attempt = 0
        while True:
            session = self.stream_session if stream else self.session
            resp = await session.request(
                method, self.base_url + path, params=_params(params), data=data, headers=headers, **kwargs
            )
            if resp.status == 401 and not reauthenticated and self.rest_config.invalidate_credentials():
                # The cached credential was refused (expired early, rotated): as client-go does,
                # fetch a new one and resend once.
                reauthenticated = True
                resp.release()
                headers = {**(headers or {}), **(await self._auth_headers() or {})}
                continue
            delay = _throttle_delay(resp)
            if delay is None or attempt >= self.max_throttle_retries:
                break
            attempt += 1
            # The apiserver did not process the request (priority-and-fairness rejection, or a
            # CRD's storage still initialising): waiting as told and resending is safe for every
            # verb, which is what client-go does too.
            resp.release()
            await asyncio.sleep(delay)
        if resp.status >= 400:
            try:
                raw = await resp.read()
            finally:
                resp.release()
            raise _error(resp.status, raw)
        if stream:
            return resp
        try:
            raw = await resp.read()
        finally:
            resp.release()
        if not raw:
            return None
        if len(raw) > _PARSE_OFF_LOOP_BYTES:
            return await asyncio.to_thread(json.loads, raw)
        return json.loads(raw)

    async def _get_json(self, path: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.raw_request("GET", path)
        return result

    # ----- helpers

    async def _info(self, gvk: GVK) -> ResourceInfo:
        info = self.mapper.cached(gvk)
        return info if info is not None else await self.mapper.resource_for(gvk)

    async def is_namespaced(self, gvk: GVK) -> bool:
        return (await self._info(gvk)).namespaced

    def _write_params(self, dry_run: bool, field_manager: str | None) -> dict[str, Any] | None:
        params: dict[str, Any] = {}
        fm = field_manager or self.field_manager
        if fm:
            params["fieldManager"] = fm
        if dry_run:
            params["dryRun"] = "All"
        return params or None

    @staticmethod
    def _target(obj: dict[str, Any], info: ResourceInfo) -> tuple[str | None, str]:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace")
        if info.namespaced and not ns:
            raise ValueError(f"{info.gvk.kind} {meta.get('name')!r} is namespaced but has no namespace")
        return (ns if info.namespaced else None), meta.get("name", "")

    # ----- reads

    async def get(
        self, gvk: GVK, name: str, namespace: str | None = None, *, cached: bool = True, copy: bool = True
    ) -> dict[str, Any]:
        """Cached when an informer for the kind is synced; then ``copy=False`` returns the shared
        (read-only!) object and skips a deep copy."""
        cache = self.cache
        if cached and cache is not None and cache.can_serve(gvk, namespace):
            obj = cache.get(gvk, name, namespace)
            if obj is None:
                raise NotFoundError(404, "NotFound", f'{gvk.kind} "{name}" not found (cache)')
            return deep_copy(obj) if copy else obj
        info = await self._info(gvk)
        result: dict[str, Any] = await self.raw_request("GET", info.path(namespace, name))
        return result

    async def list(
        self,
        gvk: GVK,
        namespace: str | None = None,
        *,
        label_selector: str | dict[str, str] | None = None,
        field_selector: str | None = None,
        cached: bool = True,
        copy: bool = True,
        limit: int | None = None,
    ) -> builtins.list[dict[str, Any]]:
        cache = self.cache
        if cached and field_selector is None and cache is not None and cache.can_serve(gvk, namespace):
            items = cache.list(gvk, namespace, label_selector)
            return [deep_copy(o) for o in items] if copy else items
        return await self.list_from_api(
            gvk, namespace, label_selector=label_selector, field_selector=field_selector, limit=limit
        )

    async def list_from_api(
        self,
        gvk: GVK,
        namespace: str | None = None,
        *,
        label_selector: str | dict[str, str] | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        resource_version: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """A paginated LIST; items get apiVersion/kind filled in (the API leaves them out)."""
        items, _ = await self.list_with_version(
            gvk, namespace, label_selector=label_selector, field_selector=field_selector,
            limit=limit, resource_version=resource_version,
        )
        return items

    async def list_with_version(
        self,
        gvk: GVK,
        namespace: str | None = None,
        *,
        label_selector: str | dict[str, str] | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
        request_timeout: aiohttp.ClientTimeout | float | None = None,
        each: Callable[[dict[str, Any]], object] | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        """A LIST, paginated when ``limit`` is set (each page is read and parsed on its own, so
        the event loop runs between pages). A continue token that expired mid-way (etcd
        compacted past it) restarts as one unpaginated LIST, as client-go's pager does: pages
        from two different revisions must never be stitched together.

        ``each`` is called on every item as soon as its page is parsed, before the next page is
        read (the informer's store drops ``managedFields`` there): what it frees is reused by the
        next page's parse instead of lingering, scattered among the kept objects, until the
        whole LIST is in."""
        info = await self._info(gvk)
        if isinstance(label_selector, dict):
            label_selector = ",".join(f"{k}={v}" for k, v in label_selector.items())
        first: dict[str, Any] = {
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "limit": limit,
            "resourceVersion": resource_version,
            "resourceVersionMatch": resource_version_match,
        }
        params = first
        items: builtins.list[dict[str, Any]] = []
        api_version, kind = gvk.api_version, gvk.kind
        while True:
            try:
                page = await self.raw_request(
                    "GET", info.path(namespace), params=params, request_timeout=request_timeout
                )
            except GoneError:
                if "continue" not in params:
                    raise
                params = {**first, "limit": None}
                items = []
                continue
            for item in page.get("items") or ():
                item["apiVersion"] = api_version
                item["kind"] = kind
                if each is not None:
                    each(item)
                items.append(item)
            meta = page.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                return items, meta.get("resourceVersion", "")
            params = {"limit": limit, "continue": cont, "labelSelector": label_selector,
                      "fieldSelector": field_selector}

    # ----- writes

    async def create(
        self, obj: dict[str, Any], *, field_manager: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        gvk = GVK.of(obj)
        info = await self._info(gvk)
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace")
        if info.namespaced and not ns:
            raise ValueError(f"{gvk.kind} is namespaced: set metadata.namespace")
        result: dict[str, Any] = await self.raw_request(
            "POST", info.path(ns if info.namespaced else None), body=obj,
            params=self._write_params(dry_run, field_manager),
        )
        return result

    async def update(
        self, obj: dict[str, Any], *, field_manager: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """PUT: optimistic concurrency through metadata.resourceVersion (ConflictError if stale)."""
        info = await self._info(GVK.of(obj))
        ns, name = self._target(obj, info)
        result: dict[str, Any] = await self.raw_request(
            "PUT", info.path(ns, name), body=obj, params=self._write_params(dry_run, field_manager)
        )
        return result

    async def update_status(
        self, obj: dict[str, Any], *, field_manager: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        info = await self._info(GVK.of(obj))
        ns, name = self._target(obj, info)
        result: dict[str, Any] = await self.raw_request(
            "PUT", info.path(ns, name, "status"), body=obj, params=self._write_params(dry_run, field_manager)
        )
        return result

    async def patch(
        self,
        gvk: GVK,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
        field_manager: str | None = None,
        force: bool = False,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        info = await self._info(gvk)
        params = self._write_params(dry_run, field_manager) or {}
        if patch_type == "apply":
            if "fieldManager" not in params:
                raise ValueError("server-side apply needs a field_manager")
            if force:
                params["force"] = True
        elif force:
            raise ValueError("force only applies to server-side apply")
        try:
            content_type = PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise ValueError(f"unknown patch type {patch_type!r}") from None
        result: dict[str, Any] = await self.raw_request(
            "PATCH", info.path(namespace, name, subresource), body=patch, params=params,
            content_type=content_type,
        )
        return result

    async def apply(
        self,
        obj: dict[str, Any],
        *,
        field_manager: str | None = None,
        force: bool = False,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply: send only the fields this manager owns; the server merges."""
        gvk = GVK.of(obj)
        meta = obj.get("metadata") or {}
        return await self.patch(
            gvk, meta["name"], obj, meta.get("namespace"), patch_type="apply",
            field_manager=field_manager, force=force, subresource=subresource, dry_run=dry_run,
        )

    async def delete(
        self,
        gvk: GVK,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: Literal["Foreground", "Background", "Orphan"] | None = None,
        grace_period_seconds: int | None = None,
        preconditions: dict[str, str] | None = None,
        ignore_not_found: bool = False,
    ) -> dict[str, Any] | None:
        info = await self._info(gvk)
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            body["preconditions"] = preconditions
        try:
            result: dict[str, Any] | None = await self.raw_request(
                "DELETE", info.path(namespace, name), body=body
            )
            return result
        except NotFoundError:
            if ignore_not_found:
                return None
            raise

    async def delete_obj(self, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any] | None:
        meta = obj["metadata"]
        return await self.delete(GVK.of(obj), meta["name"], meta.get("namespace"), **kwargs)


def _throttle_delay(resp: aiohttp.ClientResponse) -> float | None:
    """Seconds to wait before resending, when the server asked us to (429, or 5xx + Retry-After)."""
    header = resp.headers.get("Retry-After")
    if resp.status != 429 and not (resp.status >= 500 and header):
        return None
    try:
        seconds = float(header) if header else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), 10.0)


def _error(status: int, raw: bytes) -> ApiError:
    body: dict[str, Any] | None
    try:
        parsed = json.loads(raw) if raw else None
        body = parsed if isinstance(parsed, dict) else None
    except ValueError:
        body = {"message": raw[:500].decode(errors="replace")}
    return api_error_from_response(status, body)


async def retry_on_conflict(
    fn: Callable[[], Awaitable[T]], attempts: int = 5, *, wait_min: float = 0.01, wait_max: float = 0.05
) -> T:
    """client-go's RetryOnConflict: re-run a read-modify-write closure while it loses races.

    ``fn`` must re-read the object each time; retrying a stale write can never succeed.
    """
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(attempts),
        retry=retry_if_exception_type(ConflictError),
        wait=wait_random(wait_min, wait_max),
        reraise=True,
    ):
        with attempt:
            return await fn()
    raise AssertionError("unreachable")  # pragma: no cover
