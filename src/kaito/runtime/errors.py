"""Typed API errors.

Callers branch on *kind* of failure (absent, lost a race, already there, history compacted),
never on raw status codes, so each meaningful apiserver answer gets its own exception class.
409 is split by ``reason`` because "Conflict" (stale resourceVersion: re-read and retry) and
"AlreadyExists" (create raced: usually fine) call for opposite reactions.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An apiserver answer that was not a success; keeps the Status body for diagnostics."""

    def __init__(self, status: int, reason: str = "", message: str = "", body: dict[str, Any] | None = None):
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body
        super().__init__(f"{status} {reason}: {message}" if reason or message else str(status))


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    pass


class AlreadyExistsError(ApiError):
    pass


class GoneError(ApiError):
    pass


class ForbiddenError(ApiError):
    pass


class InvalidError(ApiError):
    pass


class UnauthorizedError(ApiError):
    pass


class TooManyRequestsError(ApiError):
    pass


class BadRequestError(ApiError):
    pass


class ServerTimeoutError(ApiError):
    pass


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    410: GoneError,
    422: InvalidError,
    429: TooManyRequestsError,
    504: ServerTimeoutError,
}


def api_error_from_response(status: int, body: dict[str, Any] | None) -> ApiError:
    """Map an HTTP status + (optional) metav1.Status body to the most specific error class."""
    reason = ""
    message = ""
    if isinstance(body, dict):
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or "")
    cls: type[ApiError]
    if status == 409:
        cls = AlreadyExistsError if reason == "AlreadyExists" else ConflictError
    else:
        cls = _BY_STATUS.get(status, ApiError)
    if status == 500 and reason == "Expired":
        # Some code paths report an expired continue token this way; it means the same as 410.
        cls = GoneError
    return cls(status, reason, message, body if isinstance(body, dict) else None)


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, NotFoundError)


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ConflictError)


def is_already_exists(exc: BaseException) -> bool:
    return isinstance(exc, AlreadyExistsError)
