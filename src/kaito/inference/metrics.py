"""Prometheus metrics of the inference server, exposed with vLLM's own on ``/metrics``.

Request counts and latencies are measured at the HTTP edge (what a client sees, including
rejections); token counts and queue depth come from the engine, because only the engine knows
how many tokens a streamed response really produced and how many requests wait for a batch slot.
vLLM registers its own ``vllm:*`` metrics in the same default registry, so one scrape has both.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    "kaito_inference_requests_total", "HTTP requests by endpoint and status code", ["endpoint", "code"]
)
LATENCY = Histogram(
    "kaito_inference_request_duration_seconds",
    "Time from request to the last byte of the response",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
TTFB = Histogram(
    "kaito_inference_time_to_first_byte_seconds",
    "Time from request to the first body byte (first token when streaming)",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
TOKENS = Counter("kaito_inference_tokens_total", "Tokens processed by the engine", ["kind"])
IN_FLIGHT = Gauge("kaito_inference_requests_in_flight", "Generation requests admitted and not finished")
QUEUE_DEPTH = Gauge("kaito_inference_queue_depth", "Requests waiting in the engine for a batch slot")
RUNNING = Gauge("kaito_inference_requests_running", "Requests the engine is running")
REJECTED = Counter("kaito_inference_rejected_total", "Requests refused with 429 because the queue was full")
#: The same count under upstream Kaito's name, so its dashboards and alerts keep working.
RATELIMIT_REJECTED = Counter("kaito_ratelimit_rejected_total", "Requests rejected by the rate limiter (429)")
BUFFERED_BODY_BYTES = Gauge(
    "kaito_inference_buffered_body_bytes", "Bytes of request bodies held in memory before admission"
)
BODY_BUDGET_REJECTED = Counter(
    "kaito_inference_body_budget_rejected_total",
    "Requests refused with 503 because request bodies in memory were at their shared limit",
)
UNAUTHORIZED = Counter(
    "kaito_inference_unauthorized_total", "Requests refused with 401: no or a wrong API key"
)
READY = Gauge("kaito_inference_ready", "1 once the model is loaded and requests are served")


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def engine_stat_logger_factory() -> Any:
    """A vLLM StatLogger factory feeding the token counters and queue gauges (needs vllm)."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class KaitoStatLogger(StatLoggerBase):  # type: ignore[misc]
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(self, scheduler_stats: Any, iteration_stats: Any, *args: Any, **kwargs: Any) -> None:
            if iteration_stats is not None:
                TOKENS.labels("prompt").inc(iteration_stats.num_prompt_tokens)
                TOKENS.labels("generation").inc(iteration_stats.num_generation_tokens)
            if scheduler_stats is not None:
                QUEUE_DEPTH.set(scheduler_stats.num_waiting_reqs)
                RUNNING.set(scheduler_stats.num_running_reqs)

        def log_engine_initialized(self) -> None:
            return None

    return KaitoStatLogger
