"""The kwok stages envtest clusters run with (src/kaito/envtest/kwok-stages.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import kaito.envtest

STAGES = Path(kaito.envtest.__file__).with_name("kwok-stages.yaml")


def _stages() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc["spec"] for doc in yaml.safe_load_all(STAGES.read_text()) if doc}


def _delay_range_s(spec: dict[str, Any]) -> tuple[float, float]:
    """The delay kwok 0.8 picks (lifecycle.Stage.Delay): uniform in [duration, jitter) when the
    jitter is above the duration, else the jitter alone (the duration is then ignored)."""
    delay = spec["delay"]
    duration = delay["durationMilliseconds"] / 1000
    jitter = delay.get("jitterDurationMilliseconds")
    if jitter is None:
        return duration, duration
    jitter /= 1000
    return (jitter, jitter) if jitter <= duration else (duration, jitter)


def test_every_jitter_is_an_upper_bound_above_its_duration() -> None:
    """A jitter at or below the duration silently replaces it (the heartbeat's 300 s with a
    60 s jitter meant every 60 s, not 5 min ± 1)."""
    for name, spec in _stages().items():
        delay = spec.get("delay") or {}
        if "jitterDurationMilliseconds" in delay and "durationMilliseconds" in delay:
            assert delay["jitterDurationMilliseconds"] > delay["durationMilliseconds"], name


def test_node_status_is_reported_every_four_to_six_minutes() -> None:
    """As a kubelet with node leases (nodeStatusReportFrequency 5 min): at 1,000 nodes about 3.3
    node updates per second reach every node watcher, not the 16.7 of a 60 s heartbeat."""
    low, high = _delay_range_s(_stages()["kaito-node-heartbeat"])
    assert (low, high) == (240.0, 360.0)
