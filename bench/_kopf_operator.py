"""The kopf side of bench/runtime.py: the same trivial work as the kaito reconciler.

Run by the benchmark as ``kopf run --standalone --namespace <ns> bench/_kopf_operator.py``.

BENCH_MODE=patch: one ``on.create`` handler per BenchObject; kopf writes its result and its
progress annotation back in one PATCH — the same one write per object the kaito side makes.
BENCH_MODE=record: a raw ``on.event`` handler that only records that it saw the object (kopf
persists nothing for raw event handlers), like the kaito side's record-only reconciler.
Event posting is off so kopf does not pay for requests the kaito side does not make.

Environment: BENCH_N (objects to wait for), BENCH_OUT (file to write the JSON result to).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import kopf

N = int(os.environ.get("BENCH_N", "0"))
OUT = os.environ.get("BENCH_OUT", "")
MODE = os.environ.get("BENCH_MODE", "patch")
_state: dict[str, Any] = {"t0": None, "count": 0, "t_last": None}
_seen: set[str] = set()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    _state["t0"] = time.time()


def _record(name: str) -> None:
    if name in _seen:
        return
    _seen.add(name)
    _state["count"] = len(_seen)
    _state["t_last"] = time.time()
    if _state["count"] == N and OUT:
        tmp = OUT + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_state, f)
        os.replace(tmp, OUT)


if MODE == "patch":

    @kopf.on.create("bench.kaito.sh", "v1", "benchobjects")
    def reconcile(name: str, **_: Any) -> dict[str, Any]:
        _record(name)
        return {"done": True}

else:

    @kopf.on.event("bench.kaito.sh", "v1", "benchobjects")
    def observe(name: str, **_: Any) -> None:
        _record(name)
