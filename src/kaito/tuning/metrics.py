"""Training progress as Prometheus metrics and as one log line per logging step.

A tuning Job can run for hours; its pod log and a scrape of ``/metrics`` are the two ways to see
whether it is moving. Both are fed from the same trainer callback, so they never disagree.

The per-step path only sets plain attributes; the metrics are built from them when ``/metrics`` is
scraped. So a step costs no metric-library calls, and a run without a metrics port (tests, the
benchmark, a local ``python -m kaito.tuning train``) never imports prometheus_client or its HTTP
server at all.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO


class Progress:
    """Step, loss, epoch and token counts of one training run, plus the log line writer."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self.token_count = 0
        self.step = 0
        self.max_steps = 0
        self.epoch = 0.0
        self.loss: float | None = None
        self.tokens_per_s = 0.0
        self._registry: Any = None

    def registry(self) -> Any:
        """A prometheus_client registry whose collector reads this run's values at each scrape."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry
            from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

            progress = self

            class _Collector:
                def collect(self) -> Iterator[Metric]:
                    yield GaugeMetricFamily("kaito_tuning_step", "Optimizer steps done", progress.step)
                    yield GaugeMetricFamily(
                        "kaito_tuning_max_steps", "Optimizer steps planned", progress.max_steps
                    )
                    if progress.loss is not None:  # nothing rather than a made-up 0 before the first log
                        yield GaugeMetricFamily(
                            "kaito_tuning_loss", "Training loss at the last logging step", progress.loss
                        )
                    yield GaugeMetricFamily(
                        "kaito_tuning_tokens_per_second",
                        "Training tokens per second since the start",
                        progress.tokens_per_s,
                    )
                    yield CounterMetricFamily(
                        "kaito_tuning_tokens", "Training tokens processed", progress.token_count
                    )
                    yield GaugeMetricFamily("kaito_tuning_epoch", "Fractional epoch", progress.epoch)

            self._registry = CollectorRegistry()
            self._registry.register(_Collector())
        return self._registry

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=addr, registry=self.registry())

    def add_tokens(self, n: int) -> None:
        self.token_count += n

    def log(self, event: str, **fields: Any) -> None:
        line = {"event": event, **fields}
        self.out.write(json.dumps(line, default=str) + "\n")
        self.out.flush()

    def update(self, step: int, max_steps: int, epoch: float, loss: float | None) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.tokens_per_s = self.token_count / elapsed
        self.step, self.max_steps, self.epoch = step, max_steps, epoch
        fields: dict[str, Any] = {
            "step": step,
            "max_steps": max_steps,
            "epoch": round(epoch, 4),
            "tokens_per_s": round(self.tokens_per_s, 1),
        }
        if loss is not None:
            self.loss = loss
            fields["loss"] = round(loss, 5)
        self.log("progress", **fields)
        return fields
