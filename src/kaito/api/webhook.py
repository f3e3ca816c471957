"""Admission webhook for Workspaces (AdmissionReview v1): validating, plus light defaulting.

:func:`review` is the whole logic and takes and returns plain dicts, so tests and other servers can
call it directly; :func:`create_app` wraps it in FastAPI at ``/validate`` and ``/mutate``. A
malformed review is answered (denied, with the reason), never an HTTP 500: a crashing webhook
with ``failurePolicy: Fail`` would block every Workspace in the cluster.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kaito.api.validation import ValidationOptions, validate_workspace
from kaito.presets import get_sku

ADMISSION_API_VERSION = "admission.k8s.io/v1"
Mode = Literal["validate", "mutate"]


def review(body: Any, options: ValidationOptions | None = None, mode: Mode = "validate") -> dict[str, Any]:
    """Answer one AdmissionReview (the request dict as the apiserver sends it)."""
    uid = ""
    try:
        request = body.get("request") if isinstance(body, dict) else None
        if not isinstance(request, dict):
            return _response(uid, False, "AdmissionReview has no request")
        uid_raw = request.get("uid", "")
        uid = uid_raw if isinstance(uid_raw, str) else ""
        operation = request.get("operation")
        if operation not in ("CREATE", "UPDATE"):
            return _response(uid, True)
        obj = request.get("object")
        old = request.get("oldObject") if operation == "UPDATE" else None
        if mode == "mutate":
            return _mutate(uid, obj)
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if isinstance(meta, dict) and meta.get("deletionTimestamp"):
            # Finalizer removal must always go through.
            return _response(uid, True)
        result = validate_workspace(obj, old, options)
        if result.ok:
            return _response(uid, True, warnings=result.warnings)
        return _response(uid, False, result.message(), warnings=result.warnings, details=result.errors)
    except Exception as exc:  # deny with a reason, never fail the call
        return _response(uid, False, f"webhook could not process the request: {type(exc).__name__}: {exc}")


def _mutate(uid: str, obj: Any) -> dict[str, Any]:
    """Canonical SKU spelling, so node labels and kubectl columns match the cloud's name."""
    patch: list[dict[str, Any]] = []
    resource = obj.get("resource") if isinstance(obj, dict) else None
    itype = resource.get("instanceType") if isinstance(resource, dict) else None
    if isinstance(itype, str):
        sku = get_sku(itype)
        if sku is not None and sku.name != itype:
            patch.append({"op": "replace", "path": "/resource/instanceType", "value": sku.name})
    resp = _response(uid, True)
    if patch:
        resp["response"]["patchType"] = "JSONPatch"
        resp["response"]["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return resp


def _response(
    uid: str,
    allowed: bool,
    message: str = "",
    *,
    warnings: list[str] | None = None,
    details: list[Any] | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        status: dict[str, Any] = {"code": 422, "reason": "Invalid", "message": message or "denied"}
        if details:
            status["details"] = {
                "causes": [
                    {"field": e.field, "message": e.message, "reason": "FieldValueInvalid"} for e in details
                ]
            }
        response["status"] = status
    if warnings:
        response["warnings"] = [w[:500] for w in warnings]
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}


def create_app(options: ValidationOptions | None = None) -> FastAPI:
    """The webhook server; TLS is the job of whoever runs it (uvicorn flags or a sidecar)."""
    app = FastAPI(title="kaito workspace webhook", docs_url=None, redoc_url=None, openapi_url=None)

    async def _read(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return None

    @app.post("/validate")
    async def validate_endpoint(request: Request) -> JSONResponse:
        return JSONResponse(review(await _read(request), options, "validate"))

    @app.post("/mutate")
    async def mutate_endpoint(request: Request) -> JSONResponse:
        return JSONResponse(review(await _read(request), options, "mutate"))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
