"""Prometheus metrics under controller-runtime's and client-go's names.

Dashboards and alerts written for Go operators (reconcile error rate, queue depth, leader
status) work unchanged. Every collector lives on a registry owned by one Manager, never on the
process-global default, so two managers in one process (tests, multi-tenant embedders) do not
clash on registration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "CONTENT_TYPE_LATEST",
    "ControllerMetrics",
    "Metrics",
    "QueueMetrics",
    "exposition",
]

# controller-runtime's reconcile_time_seconds buckets (pkg/internal/controller/metrics).
_RECONCILE_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9,
    1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0,
    25.0, 30.0, 40.0, 50.0, 60.0,
)  # fmt: skip
# client-go workqueue buckets (ExponentialBuckets(10e-9, 10, 12)): 10^-8 .. 10^3 seconds, so a
# key that waited out a long backoff still lands in a real bucket, not in +Inf.
_QUEUE_BUCKETS = tuple(10.0**e for e in range(-8, 4))


class Metrics:
    """All runtime collectors of one manager, registered on its own CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_errors_total = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            ["controller"],
            registry=r,
        )
        self.terminal_reconcile_errors_total = Counter(
            "controller_runtime_terminal_reconcile_errors_total",
            "Total number of terminal reconciliation errors per controller",
            ["controller"],
            registry=r,
        )
        self.reconcile_panics_total = Counter(
            "controller_runtime_reconcile_panics_total",
            "Total number of reconciliation panics per controller (reconcile timeouts here)",
            ["controller"],
            registry=r,
        )
        self.reconcile_time_seconds = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"],
            buckets=_RECONCILE_BUCKETS,
            registry=r,
        )
        self.max_concurrent_reconciles = Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            ["controller"],
            registry=r,
        )
        self.active_workers = Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            ["controller"],
            registry=r,
        )
        qlabels = ["controller", "name"]
        self.workqueue_depth = Gauge("workqueue_depth", "Current depth of workqueue", qlabels, registry=r)
        self.workqueue_adds_total = Counter(
            "workqueue_adds_total", "Total number of adds handled by workqueue", qlabels, registry=r
        )
        self.workqueue_queue_duration_seconds = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            qlabels,
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.workqueue_work_duration_seconds = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            qlabels,
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.workqueue_retries_total = Counter(
            "workqueue_retries_total", "Total number of retries handled by workqueue", qlabels, registry=r
        )
        self.workqueue_unfinished_work_seconds = Gauge(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been observed by "
            "work_duration. Large values indicate stuck threads.",
            qlabels,
            registry=r,
        )
        self.workqueue_longest_running_processor_seconds = Gauge(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running",
            qlabels,
            registry=r,
        )
        self.leader_election_master_status = Gauge(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
            "1 indicates master. 'name' is the string used to identify the lease.",
            ["name"],
            registry=r,
        )
        self.rest_client_requests_total = Counter(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host",
            ["code", "method", "host"],
            registry=r,
        )

    def controller(self, name: str) -> ControllerMetrics:
        return ControllerMetrics(self, name)

    def queue(self, name: str, clock: Callable[[], float] = time.monotonic) -> QueueMetrics:
        return QueueMetrics(self, name, clock)

    def set_leader(self, lease_name: str, leading: bool) -> None:
        self.leader_election_master_status.labels(name=lease_name).set(1 if leading else 0)

    def exposition(self) -> bytes:
        return exposition(self.registry)

    def rest_client_trace_config(self) -> Any:
        """An aiohttp TraceConfig feeding ``rest_client_requests_total`` (client-go's name)."""
        import aiohttp

        counter = self.rest_client_requests_total
        trace = aiohttp.TraceConfig()

        async def on_end(_s: Any, _ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
            counter.labels(
                code=str(params.response.status), method=params.method, host=params.url.host or ""
            ).inc()

        async def on_error(_s: Any, _ctx: Any, params: aiohttp.TraceRequestExceptionParams) -> None:
            counter.labels(code="<error>", method=params.method, host=params.url.host or "").inc()

        trace.on_request_end.append(on_end)
        trace.on_request_exception.append(on_error)
        trace.freeze()
        return trace


class ControllerMetrics:
    """Label-bound children for one controller, resolved once instead of per reconcile."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        m = metrics
        self._results = {
            res: m.reconcile_total.labels(controller=name, result=res)
            for res in ("success", "error", "requeue", "requeue_after")
        }
        self.errors = m.reconcile_errors_total.labels(controller=name)
        self.terminal_errors = m.terminal_reconcile_errors_total.labels(controller=name)
        self.panics = m.reconcile_panics_total.labels(controller=name)
        self.reconcile_time = m.reconcile_time_seconds.labels(controller=name)
        self.max_concurrent = m.max_concurrent_reconciles.labels(controller=name)
        self.active_workers = m.active_workers.labels(controller=name)

    def result(self, result: str) -> None:
        self._results[result].inc()


class QueueMetrics:
    """client-go's defaultQueueMetrics: the WorkQueueMetrics hooks the work queue calls.

    Timestamps are kept per item (first add → get for queue latency, get → done for work
    duration), mirroring client-go so the histograms mean the same thing.
    """

    def __init__(self, metrics: Metrics, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        labels = {"controller": name, "name": name}
        self._clock = clock
        self._depth = metrics.workqueue_depth.labels(**labels)
        self._adds = metrics.workqueue_adds_total.labels(**labels)
        self._latency = metrics.workqueue_queue_duration_seconds.labels(**labels)
        self._work = metrics.workqueue_work_duration_seconds.labels(**labels)
        self._retries = metrics.workqueue_retries_total.labels(**labels)
        self._added_at: dict[Hashable, float] = {}
        self._started_at: dict[Hashable, float] = {}
        # Worked out when the registry is collected (a scrape, on the event loop like every
        # other use of these dicts), not on a timer: client-go refreshes them every 500 ms from a
        # goroutine, which here was a wake-up every 500 ms per queue for the process's life,
        # scraped or not, converged or not. A scrape now also never reads a value 500 ms stale.
        metrics.workqueue_unfinished_work_seconds.labels(**labels).set_function(self.unfinished_seconds)
        metrics.workqueue_longest_running_processor_seconds.labels(**labels).set_function(
            self.longest_running_seconds
        )

    def add(self, item: Any) -> None:
        self._adds.inc()
        self._depth.inc()
        self._added_at.setdefault(item, self._clock())

    def get(self, item: Any) -> None:
        self._depth.dec()
        now = self._clock()
        self._started_at[item] = now
        added = self._added_at.pop(item, None)
        if added is not None:
            self._latency.observe(now - added)

    def done(self, item: Any) -> None:
        started = self._started_at.pop(item, None)
        if started is not None:
            self._work.observe(self._clock() - started)

    def retry(self) -> None:
        self._retries.inc()

    def unfinished_seconds(self) -> float:
        """``workqueue_unfinished_work_seconds``: the ages of the items being processed, summed."""
        if not self._started_at:
            return 0.0
        now = self._clock()
        return sum(now - started for started in self._started_at.values())

    def longest_running_seconds(self) -> float:
        """``workqueue_longest_running_processor_seconds``: the oldest item being processed."""
        if not self._started_at:
            return 0.0
        return self._clock() - min(self._started_at.values())


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
