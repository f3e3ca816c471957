"""Overload protection: a bounded waiting queue in front of the engine, 429 beyond it.

vLLM queues without limit; under overload latency grows until clients time out. Kaito bounds
the queue where the request enters: a request is admitted while fewer than
``max_running + max_queue`` generation requests are in flight (``max_running`` is the engine's
batch size, ``max_num_seqs``), otherwise it gets 429 with Retry-After so a load balancer or client
can back off. Counting at the edge is exact and costs two integer operations per request; the
engine's own waiting count lags by a scheduler step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kaito.inference import metrics

#: An ASGI answer: status, headers, body.
Rejection = tuple[int, list[tuple[bytes, bytes]], bytes]


def overloaded(status: int, message: str, retry_after: int, *, close: bool = False) -> Rejection:
    """The JSON error a refused request gets, in OpenAI's error shape, with Retry-After so a load
    balancer or client backs off instead of retrying at once."""
    error = {"message": f"{message}; retry after {retry_after}s", "type": "overloaded_error", "code": status}
    body = json.dumps({"error": error}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"retry-after", str(retry_after).encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    return status, headers, body


@dataclass
class OverloadGuard:
    max_running: int
    max_queue: int
    retry_after: int = 1
    in_flight: int = 0

    @property
    def limit(self) -> int:
        return self.max_running + self.max_queue

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            metrics.REJECTED.inc()
            return False
        self.in_flight += 1
        metrics.IN_FLIGHT.set(self.in_flight)
        return True

    def release(self) -> None:
        self.in_flight -= 1
        metrics.IN_FLIGHT.set(self.in_flight)

    def rejection(self) -> Rejection:
        message = f"server overloaded: {self.in_flight} requests in flight (limit {self.limit})"
        return overloaded(429, message, self.retry_after)


@dataclass
class BodyBudget:
    """A byte budget shared by every request body the server holds in memory at once.

    The front reads a request body whole before it is admitted (so a slow sender never holds an
    engine slot); without a shared bound, every connection could hold up to the per-request cap
    (32 MiB) at the same time - a dozen such connections held +372 MiB of memory. Bytes are
    reserved as they arrive (what is really held, not what a Content-Length promises, so a client
    that announces a large body and sends nothing reserves nothing) and released when the request
    is answered; a request that would go over the budget gets 503 with Retry-After.
    """

    limit: int
    retry_after: int = 1
    used: int = 0

    def try_reserve(self, n: int) -> bool:
        if self.used + n > self.limit:
            metrics.BODY_BUDGET_REJECTED.inc()
            return False
        self.used += n
        metrics.BUFFERED_BODY_BYTES.set(self.used)
        return True

    def fits(self, n: int) -> bool:
        return self.used + n <= self.limit

    def release(self, n: int) -> None:
        self.used -= n
        metrics.BUFFERED_BODY_BYTES.set(self.used)

    def rejection(self) -> Rejection:
        message = (
            f"server busy: request bodies in memory are at their limit ({self.used} of {self.limit} bytes)"
        )
        # the body may still be arriving: close, so the client stops sending it
        return overloaded(503, message, self.retry_after, close=True)
