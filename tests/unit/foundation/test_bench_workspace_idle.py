"""bench/workspace.py's idle-window figures."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("workspace")


def node(ready_heartbeat: str | None, other_heartbeat: str = "2026-12-07T19:00:30Z") -> dict[str, Any]:
    conditions = [{"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": other_heartbeat}]
    if ready_heartbeat is not None:
        conditions.append({"type": "Ready", "status": "True", "lastHeartbeatTime": ready_heartbeat})
    return {"metadata": {"name": "n"}, "status": {"conditions": conditions}}


def test_status_reports_count_nodes_whose_ready_heartbeat_fell_in_the_window(workspace: ModuleType) -> None:
    since = workspace._ts("2026-12-07T19:00:00Z")
    until = since + 59.6  # heartbeats are whole seconds, rounded down
    nodes = [
        node("2026-12-07T18:59:59Z"),  # before
        node("2026-12-07T19:00:00Z"),  # at the start
        node("2026-12-07T19:00:59Z"),  # in the last second
        node("2026-12-07T19:01:00Z"),  # after
        node(None),  # no Ready condition: only another condition's heartbeat, not counted
        {"metadata": {"name": "new"}},  # no status yet
    ]
    assert workspace._status_reports(nodes, since, until) == 2
