"""The kopf side of bench/runtime.py: the same trivial work as the kaito reconciler.

Run by the benchmark as ``python bench/_kopf_operator.py`` (not ``kopf run``): this program picks
the event loop itself (BENCH_LOOP, the same one the kaito side runs on; ``kopf run`` would switch
to uvloop whenever it is installed) and runs ``kopf.operator`` standalone on one namespace.

The handlers are ``async``: kopf runs sync handlers in a thread pool, a hop per event that the
kaito side does not pay. Event posting is off so kopf does not pay for requests the kaito side
does not make.

BENCH_MODE=patch: one ``on.create`` handler per BenchObject; kopf writes its result and its
progress annotation back in one PATCH — the same one write per object the kaito side makes.
BENCH_MODE=record: a raw ``on.event`` handler that only records that it saw the object (kopf
persists nothing for raw event handlers), like the kaito side's record-only reconciler.

The clock starts when the login handler has loaded the credentials (kopf runs startup handlers,
then logs in, then starts watching), so reading the kubeconfig is outside it, as on the kaito
side, where the configuration is loaded before the clock starts.

Environment: BENCH_N (objects to wait for), BENCH_OUT (file to write the JSON result to),
BENCH_NS (namespace), BENCH_MODE, BENCH_LOOP (asyncio | uvloop).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

import kopf

N = int(os.environ.get("BENCH_N", "0"))
OUT = os.environ.get("BENCH_OUT", "")
MODE = os.environ.get("BENCH_MODE", "patch")
NS = os.environ.get("BENCH_NS", "default")
LOOP = os.environ.get("BENCH_LOOP", "asyncio")
_state: dict[str, Any] = {"t0": None, "count": 0, "t_last": None}
_seen: set[str] = set()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False
    settings.watching.server_timeout = 300


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_kubeconfig(**kwargs)
    _state["t0"] = time.time()
    return info


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
    async def reconcile(name: str, **_: Any) -> dict[str, Any]:
        _record(name)
        return {"done": True}

else:

    @kopf.on.event("bench.kaito.sh", "v1", "benchobjects")
    async def observe(name: str, **_: Any) -> None:
        _record(name)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The same choice as bench/runtime.py makes for the kaito side."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


if __name__ == "__main__":
    kopf.configure(quiet=True)
    with asyncio.Runner(loop_factory=loop_factory(LOOP)) as runner:
        runner.run(kopf.operator(standalone=True, namespaces=[NS]))
