"""The status a kubelet writes for a pod: container states, conditions, phase and IPs.

Recomputed whole from the worker's in-memory state after every change, with the same fields and
reasons a real node writes, so EndpointSlices and the workspace controller read it unchanged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kaito.localnode.sandbox import GATEWAY

Obj = dict[str, Any]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerState:
    name: str
    image: str
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    proc: asyncio.subprocess.Process | None = None
    run_id: str = ""

    def status(self) -> Obj:
        return {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "containerID": f"kaito-local://{self.run_id}" if self.run_id else None,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


def pod_status(
    previous: Obj,
    *,
    phase: str,
    initialized: bool,
    ip: str,
    start_time: str,
    inits: list[ContainerState],
    containers: list[ContainerState],
) -> Obj:
    """The pod's status; ``previous`` is the status as last read, whose conditions keep their
    transition times while unchanged."""
    mains = containers
    all_ready = bool(mains) and all(c.ready for c in mains)
    t = now()

    def cond(kind: str, ok: bool, reason: str | None = None) -> Obj:
        c: Obj = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": t}
        if not ok and reason:
            c["reason"] = reason
        return c

    before = {c["type"]: c for c in (previous.get("conditions") or [])}
    conditions = [
        cond("PodReadyToStartContainers", bool(ip)),
        cond("Initialized", initialized, "ContainersNotInitialized"),
        cond("Ready", all_ready, "ContainersNotReady"),
        cond("ContainersReady", all_ready, "ContainersNotReady"),
        cond("PodScheduled", True),
    ]
    for c in conditions:  # keep transition times of unchanged conditions
        old = before.get(c["type"])
        if old is not None and old.get("status") == c["status"] and old.get("lastTransitionTime"):
            c["lastTransitionTime"] = old["lastTransitionTime"]
    status: Obj = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": GATEWAY,
        "hostIPs": [{"ip": GATEWAY}],
        "startTime": start_time,
        "containerStatuses": [c.status() for c in mains],
    }
    if inits:
        status["initContainerStatuses"] = [c.status() for c in inits]
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return status
