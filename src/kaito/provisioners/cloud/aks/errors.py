"""ARM's answers as CloudErrors: which refusals are worth asking again and which are final."""

from __future__ import annotations

from kaito.nodes import CloudError

#: ARM error codes that mean "ask again" whatever the HTTP status carrying them (an operation's
#: error body arrives in a 200 poll answer): throttling, server-side faults, timeouts, an operation
#: pre-empted by another. Anything else (QuotaExceeded, SkuNotAvailable, InvalidParameter...) is
#: an answer that asking again will not change. A create whose operation failed with one of these
#: is judged by the pool's provisioningState instead (Failed there still means failed).
RETRYABLE_CODES = frozenset(
    {
        "RetryableError",
        "TooManyRequests",
        "InternalServerError",
        "InternalOperationError",
        "ServiceUnavailable",
        "GatewayTimeout",
        "ServerTimeout",
        "RequestTimeout",
        "OperationPreempted",
    }
)


def _retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def error_of(exc: BaseException) -> CloudError:
    """An SDK exception as a CloudError. Transport failures (reset, timeout: not an
    HttpResponseError), 408/429/5xx and ARM's transient codes are retryable; other 4xx and a
    terminal operation failure (a 200 poll answer saying Failed with QuotaExceeded...) are not."""
    from azure.core.exceptions import HttpResponseError

    if isinstance(exc, HttpResponseError):
        err = exc.error
        code = getattr(err, "code", None) or str(getattr(exc, "reason", "") or "CloudError")
        message = getattr(err, "message", None) or str(exc.message or exc)
        status = exc.status_code or 0
        return CloudError(code, message, retryable=_retryable_status(status) or code in RETRYABLE_CODES)
    return CloudError("CloudError", str(exc) or type(exc).__name__, retryable=True)


__all__ = ["RETRYABLE_CODES", "error_of"]
