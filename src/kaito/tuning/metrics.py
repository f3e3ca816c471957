"""Training progress as Prometheus metrics and as one log line per logging step.

A tuning Job can run for hours; its pod log and a scrape of ``/metrics`` are the two ways to see
whether it is moving. Both are fed from the same trainer callback, so they never disagree.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class Progress:
    """Gauges and counters of one training run, plus the log line writer."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.registry = CollectorRegistry()
        self.step = Gauge("kaito_tuning_step", "Optimizer steps done", registry=self.registry)
        self.max_steps = Gauge("kaito_tuning_max_steps", "Optimizer steps planned", registry=self.registry)
        self.loss = Gauge(
            "kaito_tuning_loss", "Training loss at the last logging step", registry=self.registry
        )
        self.tokens_per_s = Gauge(
            "kaito_tuning_tokens_per_second",
            "Training tokens per second since the start",
            registry=self.registry,
        )
        self.tokens = Counter("kaito_tuning_tokens", "Training tokens processed", registry=self.registry)
        self.epoch = Gauge("kaito_tuning_epoch", "Fractional epoch", registry=self.registry)
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self.token_count = 0

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def add_tokens(self, n: int) -> None:
        self.token_count += n
        self.tokens.inc(n)

    def log(self, event: str, **fields: Any) -> None:
        line = {"event": event, **fields}
        self.out.write(json.dumps(line, default=str) + "\n")
        self.out.flush()

    def update(self, step: int, max_steps: int, epoch: float, loss: float | None) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.token_count / elapsed
        self.step.set(step)
        self.max_steps.set(max_steps)
        self.epoch.set(epoch)
        self.tokens_per_s.set(rate)
        fields: dict[str, Any] = {
            "step": step,
            "max_steps": max_steps,
            "epoch": round(epoch, 4),
            "tokens_per_s": round(rate, 1),
        }
        if loss is not None:
            self.loss.set(loss)
            fields["loss"] = round(loss, 5)
        self.log("progress", **fields)
        return fields
