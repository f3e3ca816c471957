"""Admission for Workspaces and InferenceSets: the validating and defaulting decisions, served by
the runtime.

The TLS serving, certificate reload, AdmissionReview decoding and metrics belong to
:class:`kaito.runtime.WebhookServer`; this module holds only kaito's decisions, as two handlers
(AdmissionReview ``request`` dict -> ``response`` dict). :func:`register` mounts them at the
kubebuilder-style paths for both served versions, :func:`new_webhook_server` builds a server with
them, and :func:`review` answers a whole AdmissionReview without any server (tests, offline tools).

A malformed request is denied with the reason, never crashed on: a crashing webhook with
``failurePolicy: Fail`` would block every Workspace in the cluster.

Given a :class:`kaito.runtime.Client` (the operator passes its own), the validating handler reads
the ConfigMaps that ``inference.config`` and ``tuning.config`` name, as upstream's webhook does,
so a missing or broken config is refused at ``kubectl apply`` instead of failing a pod later. It lists
with a field selector rather than GETting: the operator's role has list/watch on ConfigMaps, not
get, and a list is never served from a stale cache.

The lookup must not be an oracle for ConfigMaps the caller may not read. It looks only in the
namespace the apiserver put in the request (the Workspace's); a request that names none, or whose
object names another, is not looked up; and a ConfigMap the operator may not read is answered
exactly as an absent one (the reason goes to the operator's log). All lookups of one request share
one deadline, well inside the apiserver's 10 s for the whole call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from kaito.api.hub import hub_preset_of, lookup_hub_models
from kaito.api.inferenceset import InferenceSet
from kaito.api.inferenceset.child import child_workspace
from kaito.api.inferenceset.validation import validate_inferenceset
from kaito.api.validation import (
    ConfigMaps,
    HubModels,
    ValidationOptions,
    ValidationResult,
)
from kaito.api.workspace.validation import validate_workspace
from kaito.presets import get_sku
from kaito.runtime import (
    CONFIGMAP,
    AdmissionHandler,
    ApiError,
    Client,
    Metrics,
    WebhookServer,
    WebhookServerOptions,
    allowed,
    denied,
    get_logger,
    patched,
)

ADMISSION_API_VERSION = "admission.k8s.io/v1"
VERSIONS = ("v1alpha1", "v1beta1")
VALIDATE_PATHS = tuple(f"/validate-kaito-sh-{v}-workspace" for v in VERSIONS)
MUTATE_PATHS = tuple(f"/mutate-kaito-sh-{v}-workspace" for v in VERSIONS)
#: InferenceSets are validated only (upstream's SetDefaults is empty too).
INFERENCESET_VALIDATE_PATHS = tuple(f"/validate-kaito-sh-{v}-inferenceset" for v in VERSIONS)
Mode = Literal["validate", "mutate"]
# The apiserver keeps warnings short; a long one is cut rather than dropped.
_MAX_WARNING = 500
#: The apiserver gives the whole webhook call 10 s (timeoutSeconds); all of a request's lookups
#: together get half.
LOOKUP_TIMEOUT = 5.0
#: The Hub lookup of an ``org/model`` preset runs beside the ConfigMap lookups, in the same budget.
HUB_TIMEOUT = LOOKUP_TIMEOUT
#: API statuses for a ConfigMap the operator may not read: answered as if it were absent, so the
#: answer says nothing of a namespace the operator (and maybe the caller) may not look into.
_UNREADABLE = (401, 403, 404)
_log = get_logger("kaito.api.webhook")


Validator = Callable[..., ValidationResult]


def validate_request(
    request: Any,
    options: ValidationOptions | None = None,
    *,
    config_maps: ConfigMaps | None = None,
    validator: Validator = validate_workspace,
    hub_models: HubModels | None = None,
) -> dict[str, Any]:
    """The validating decision for one AdmissionReview ``request``; ``config_maps`` is what was
    read of the namespace's ConfigMaps (see :func:`lookup_config_maps`); ``validator`` is the
    kind's (:func:`validate_workspace` or :func:`validate_inferenceset`)."""
    try:
        if not isinstance(request, dict):
            return denied("AdmissionReview has no request", code=400, reason="BadRequest")
        operation = request.get("operation")
        if operation not in ("CREATE", "UPDATE"):
            return allowed()
        obj = request.get("object")
        old = request.get("oldObject") if operation == "UPDATE" else None
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if isinstance(meta, dict) and meta.get("deletionTimestamp"):
            return allowed()  # finalizer removal must always go through
        extra = {"hub_models": hub_models} if hub_models is not None else {}
        result = validator(obj, old, options, config_maps=config_maps, **extra)
        # A check that could not run is said, not passed silently (only without a client).
        warnings = [w[:_MAX_WARNING] for w in (*result.warnings, *result.skipped)]
        if result.ok:
            return allowed(warnings=warnings)
        causes = [
            {"field": e.field, "message": e.message, "reason": "FieldValueInvalid"} for e in result.errors
        ]
        return denied(result.message(), code=422, reason="Invalid", causes=causes, warnings=warnings)
    except Exception as exc:  # deny with a reason, never fail the call
        return denied(
            f"webhook could not process the request: {type(exc).__name__}: {exc}", code=422, reason="Invalid"
        )


async def lookup_config_maps(client: Client, request: Any) -> ConfigMaps | None:
    """The ConfigMaps ``inference.config`` / ``tuning.config`` name, read from the Workspace's
    namespace: ``{name: object}``, ``{name: None}`` when absent or not readable, ``{name: reason}``
    when the API did not answer in time or failed; None when there is nothing to look up (none
    named, or unchanged on UPDATE). Never longer than :data:`LOOKUP_TIMEOUT` in all."""
    if not isinstance(request, dict):
        return None
    obj, old = request.get("object"), request.get("oldObject")
    update = request.get("operation") == "UPDATE"
    pairs = [(_config(obj, section), _config(old, section)) for section in ("inference", "tuning")]
    wanted = [
        name for name, before in pairs if isinstance(name, str) and name and not (update and before == name)
    ]
    if not wanted:
        return None
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    namespace = request.get("namespace")
    named = meta.get("namespace") if isinstance(meta, dict) else None
    if not isinstance(namespace, str) or not namespace or (named and named != namespace):
        # Not a request the apiserver sends for a Workspace: whatever it names is not looked in.
        return dict.fromkeys(wanted)
    names = list(dict.fromkeys(wanted))

    async def one(name: str) -> Any:
        try:
            items = await client.list(
                CONFIGMAP, namespace, field_selector=f"metadata.name={name}", cached=False
            )
        except ApiError as exc:
            if exc.status in _UNREADABLE:
                _log.warning(
                    "webhook may not read a ConfigMap; answered as absent (check the operator's role)",
                    namespace=namespace,
                    name=name,
                    error=str(exc),
                )
                return None
            return f"the API failed ({exc.status}); try again"
        return next((i for i in items if (i.get("metadata") or {}).get("name") == name), None)

    tasks = [asyncio.ensure_future(one(name)) for name in names]
    done, pending = await asyncio.wait(tasks, timeout=LOOKUP_TIMEOUT)
    for task in pending:
        task.cancel()
    late = f"the API did not answer within {LOOKUP_TIMEOUT:g}s; try again"
    return {name: task.result() if task in done else late for name, task in zip(names, tasks, strict=True)}


def _config(obj: Any, section: str) -> Any:
    spec = obj.get(section) if isinstance(obj, dict) else None
    return spec.get("config") if isinstance(spec, dict) else None


async def validate_request_with_api(
    request: Any, options: ValidationOptions | None, client: Client
) -> dict[str, Any]:
    """:func:`validate_request` after reading, through ``client``, what the rules need: the
    ConfigMaps and, for an ``org/model`` preset, the model on the Hugging Face Hub (both at once,
    inside the lookup budget)."""
    hub = asyncio.ensure_future(_lookup_hub(request, client))
    try:
        config_maps = await lookup_config_maps(client, request)
    except Exception as exc:  # a lookup failure is a reason to deny, never a crash
        obj = request.get("object") if isinstance(request, dict) else None
        names = [n for n in (_config(obj, "inference"), _config(obj, "tuning")) if isinstance(n, str)]
        config_maps = dict.fromkeys(names, f"{type(exc).__name__}: {exc}") or None
    return validate_request(request, options, config_maps=config_maps, hub_models=await hub)


async def _lookup_hub(request: Any, client: Client) -> HubModels | None:
    if not isinstance(request, dict) or request.get("operation") not in ("CREATE", "UPDATE"):
        return None
    old = request.get("oldObject") if request.get("operation") == "UPDATE" else None
    try:
        return await lookup_hub_models(
            client, request.get("namespace"), request.get("object"), old, budget=HUB_TIMEOUT
        )
    except Exception as exc:  # deny with the reason rather than admit unsized
        found = hub_preset_of(request.get("object"))
        return {found[0]: f"could not look the model up on the Hugging Face Hub: {exc}"} if found else None


def as_workspace_request(request: Any) -> Any:
    """An InferenceSet AdmissionReview request with its objects replaced by the Workspaces their
    templates make (index 0), so the Workspace's ConfigMap lookup reads what the children will
    name; anything unparseable is passed through for the validator to refuse."""
    if not isinstance(request, dict):
        return request

    def child(obj: Any) -> Any:
        if not isinstance(obj, dict):
            return obj
        try:
            return child_workspace(InferenceSet.model_validate(obj), 0)
        except Exception:
            return None

    return {**request, "object": child(request.get("object")), "oldObject": child(request.get("oldObject"))}


async def validate_inferenceset_request_with_api(
    request: Any, options: ValidationOptions | None, client: Client
) -> dict[str, Any]:
    """:func:`validate_request` for an InferenceSet after reading the ConfigMap its template names
    and, for an ``org/model`` preset, the model on the Hub."""
    as_ws = as_workspace_request(request)
    hub = asyncio.ensure_future(_lookup_hub(as_ws, client))
    try:
        config_maps = await lookup_config_maps(client, as_ws)
    except Exception as exc:  # a lookup failure is a reason to deny, never a crash
        obj = as_ws.get("object") if isinstance(as_ws, dict) else None
        named = [n for n in (_config(obj, "inference"),) if isinstance(n, str)]
        config_maps = dict.fromkeys(named, f"{type(exc).__name__}: {exc}") or None
    return validate_request(
        request, options, config_maps=config_maps, validator=validate_inferenceset, hub_models=await hub
    )


def _instance_type(obj: Any) -> Any:
    resource = obj.get("resource") if isinstance(obj, dict) else None
    return resource.get("instanceType") if isinstance(resource, dict) else None


def default_request(request: Any) -> dict[str, Any]:
    """The defaulting decision: the instance type in the SKU table's spelling, so node labels and
    kubectl columns match the cloud's name (``standard_nc6s_v3`` -> ``Standard_NC6s_v3``).

    Only on CREATE. On UPDATE the stored spelling wins: the field is immutable (CEL and the
    validator), so rewriting it would turn a harmless re-apply into a rejection when the object
    was stored before this webhook ran. A different spelling of the stored SKU is patched back to
    the stored one; anything else is left for the validator to judge."""
    try:
        if not isinstance(request, dict):
            return denied("AdmissionReview has no request", code=400, reason="BadRequest")
        operation = request.get("operation")
        if operation not in ("CREATE", "UPDATE"):
            return allowed()
        itype = _instance_type(request.get("object"))
        if not isinstance(itype, str):
            return allowed()
        sku = get_sku(itype)
        if operation == "UPDATE":
            stored = _instance_type(request.get("oldObject"))
            if not isinstance(stored, str) or stored == itype or sku is None:
                return allowed()
            if sku == get_sku(stored):
                return patched([{"op": "replace", "path": "/resource/instanceType", "value": stored}])
            return allowed()
        if sku is not None and sku.name != itype:
            return patched([{"op": "replace", "path": "/resource/instanceType", "value": sku.name}])
        return allowed()
    except Exception as exc:
        return denied(
            f"webhook could not process the request: {type(exc).__name__}: {exc}", code=422, reason="Invalid"
        )


def validating_handler(
    options: ValidationOptions | None = None, client: Client | None = None
) -> AdmissionHandler:
    """Without a client the ConfigMap rule is skipped (tests and offline tools)."""
    if client is None:

        def handle(request: dict[str, Any]) -> dict[str, Any]:
            return validate_request(request, options)

        return handle

    async def handle_with_api(request: dict[str, Any]) -> dict[str, Any]:
        return await validate_request_with_api(request, options, client)

    return handle_with_api


def inferenceset_validating_handler(
    options: ValidationOptions | None = None, client: Client | None = None
) -> AdmissionHandler:
    """InferenceSets: the set's rules and the Workspace rules on the Workspace its template makes."""
    if client is None:

        def handle(request: dict[str, Any]) -> dict[str, Any]:
            return validate_request(request, options, validator=validate_inferenceset)

        return handle

    async def handle_with_api(request: dict[str, Any]) -> dict[str, Any]:
        return await validate_inferenceset_request_with_api(request, options, client)

    return handle_with_api


def defaulting_handler() -> AdmissionHandler:
    return default_request


def register(
    server: WebhookServer, options: ValidationOptions | None = None, client: Client | None = None
) -> None:
    """Mount validation and defaulting for both Workspace versions, and validation for both
    InferenceSet versions, on ``server``."""
    for path in VALIDATE_PATHS:
        server.register(path, validating_handler(options, client))
    for path in INFERENCESET_VALIDATE_PATHS:
        server.register(path, inferenceset_validating_handler(options, client))
    for path in MUTATE_PATHS:
        server.register(path, defaulting_handler())


def new_webhook_server(
    server_options: WebhookServerOptions | None = None,
    options: ValidationOptions | None = None,
    *,
    metrics: Metrics | None = None,
    client: Client | None = None,
) -> WebhookServer:
    """A runtime webhook server serving kaito's Workspace admission; add it to the Manager.
    ``client`` lets validation read the inference ConfigMap (the operator passes its own)."""
    server = WebhookServer(server_options, metrics=metrics)
    register(server, options, client)
    return server


def review(body: Any, options: ValidationOptions | None = None, mode: Mode = "validate") -> dict[str, Any]:
    """Answer one whole AdmissionReview (as the apiserver sends it) without a server."""
    request = body.get("request") if isinstance(body, dict) else None
    uid_raw = request.get("uid", "") if isinstance(request, dict) else ""
    uid = uid_raw if isinstance(uid_raw, str) else ""
    resp = validate_request(request, options) if mode == "validate" else default_request(request)
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": {"uid": uid, **resp}}
