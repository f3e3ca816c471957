"""The kopf side of bench/runtime.py: the same trivial work as the kaito reconciler.

Run by the benchmark as ``kopf run --standalone --namespace <ns> bench/_kopf_operator.py``. Each
BenchObject gets one handler call whose result kopf writes back in one PATCH (status + its
progress annotation) — the same one write per object the kaito side makes. Event posting is
off so kopf does not pay for an extra request per object that the kaito side does not make.

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
_state: dict[str, Any] = {"t0": None, "count": 0, "t_last": None}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    _state["t0"] = time.time()


@kopf.on.create("bench.kaito.sh", "v1", "benchobjects")
def reconcile(**_: Any) -> dict[str, Any]:
    _state["count"] += 1
    now = time.time()
    _state["t_last"] = now
    if _state["count"] == N and OUT:
        tmp = OUT + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_state, f)
        os.replace(tmp, OUT)
    return {"done": True}
