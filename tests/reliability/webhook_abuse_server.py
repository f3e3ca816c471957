"""kaito's admission webhook server alone in a process, for tests/reliability/test_webhook_abuse.py.

Why a process of its own: the suite measures what hostile clients cost the server (its resident
memory, peak included, and how long its event loop stalls), which the attackers' own sockets and
buffers must not blur. The loop-lag probe runs on the server's loop, as a reconciler would.

Started as ``python webhook_abuse_server.py DIR``: writes a CA and a serving pair for 127.0.0.1
into DIR, serves kaito's Workspace handlers over TLS on a free port and prints one JSON line
``{"port", "ca"}`` (its log goes to DIR/server.log). Then, per line read on stdin: ``reset``
clears the measured maxima (the lag and the kernel's peak RSS, via /proc/self/clear_refs) and
``stats`` prints one JSON line of them.
Options the server under test does not know are left out, so the same script runs the old code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from kaito.api.webhook import new_webhook_server
from kaito.operator.certs import new_ca, new_serving_cert
from kaito.runtime import WebhookServerOptions

#: Short deadlines so the suite runs in seconds; the defaults are 10 s (header, body), 120 s.
OPTIONS: dict[str, Any] = {"header_timeout": 2.0, "body_timeout": 2.0, "keepalive_timeout": 5.0}
PROBE_INTERVAL = 0.005


class Lag:
    """Longest gap between the probe's ticks: wall time, and CPU time the loop's thread spent
    in it. The CPU figure is the stall the server caused itself; the wall figure also holds
    time the OS gave other processes (the suite runs on a loaded machine)."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    async def probe(self) -> None:
        last_w, last_c = time.monotonic(), time.thread_time()
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            w, c = time.monotonic(), time.thread_time()
            self.wall = max(self.wall, w - last_w - PROBE_INTERVAL)
            self.cpu = max(self.cpu, c - last_c)
            last_w, last_c = w, c


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


async def main(folder: Path, out: IO[str]) -> None:
    ca_pem, ca_key = new_ca(86400)
    cert, key = new_serving_cert(ca_pem, ca_key, ["127.0.0.1"], 86400)
    (folder / "ca.crt").write_bytes(ca_pem)
    (folder / "tls.crt").write_bytes(cert)
    (folder / "tls.key").write_bytes(key)
    known = {f.name for f in dataclasses.fields(WebhookServerOptions)}
    opts = WebhookServerOptions(
        host="127.0.0.1", port=0, cert_dir=str(folder), **{k: v for k, v in OPTIONS.items() if k in known}
    )
    server = new_webhook_server(opts)
    stop = asyncio.Event()
    lag = Lag()
    probe = asyncio.create_task(lag.probe())
    serving = asyncio.create_task(server.start(stop))
    await server.wait_started()
    print(json.dumps({"port": server.bound_port, "ca": str(folder / "ca.crt")}), file=out, flush=True)
    loop = asyncio.get_running_loop()

    def commands() -> None:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "reset":
                lag.wall = lag.cpu = 0.0
                Path("/proc/self/clear_refs").write_text("5")
                print(json.dumps({"reset": True}), file=out, flush=True)
            elif cmd == "stats":
                site = getattr(server, "_site", None)
                guard = getattr(site, "guard", None)
                stats = {
                    "rss_mb": round(_status_kb("VmRSS") / 1024, 1),
                    "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
                    "stall_cpu_s": round(lag.cpu, 4),
                    "stall_wall_s": round(lag.wall, 4),
                    "connections": len(guard) if guard is not None else None,
                    "evicted": getattr(guard, "evicted", None),
                    "timed_out": getattr(guard, "timed_out", None),
                }
                print(json.dumps(stats), file=out, flush=True)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=commands, daemon=True).start()
    await serving
    probe.cancel()


if __name__ == "__main__":
    # The server's log (a warning per refused request, as in the operator) goes to a file, the
    # answers to the suite to the original stdout: a log filling the unread pipe would block it.
    answers = os.fdopen(os.dup(1), "w")
    log = os.open(Path(sys.argv[1]) / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    asyncio.run(main(Path(sys.argv[1]), answers))
