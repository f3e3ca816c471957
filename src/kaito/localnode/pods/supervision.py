"""One container's life under the pod's restart policy: start, wait, back off, start again.

The kubelet's crash-loop back-off and its container states (running, terminated with the log's
tail as message, waiting in CrashLoopBackOff), driven for the worker that owns the pod
(:class:`PodHost`); a straight line of awaits per container, one asyncio task each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any, Protocol

from kaito.localnode.images import ImagePlan
from kaito.localnode.pods.sources import ConfigError
from kaito.localnode.pods.status import ContainerState, now
from kaito.localnode.pods.volumes import mkdir
from kaito.localnode.sandbox import (
    ContainerSpec,
    PodNetwork,
    container_pid,
    die_with_parent,
    launch_argv,
    write_spec,
)
from kaito.runtime import get_logger

Obj = dict[str, Any]
log = get_logger("kaito.localnode")

#: The kubelet's crash-loop back-off: 10 s doubling to 5 min, reset after 10 min of running.
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0


class PodHost(Protocol):
    """What supervising a container needs of the pod it belongs to (the PodWorker)."""

    name: str
    namespace: str
    uid: str
    dir: Path
    restart_policy: str
    stopping: asyncio.Event
    net: PodNetwork | None

    async def write_status(self) -> None: ...

    async def container_spec(self, c: Obj, plan: ImagePlan, volumes: dict[str, str]) -> ContainerSpec: ...

    def record_pids(self) -> None: ...

    def probes(
        self, c: Obj, st: ContainerState, proc: asyncio.subprocess.Process, killed: list[str]
    ) -> list[asyncio.Task[None]]: ...

    def log_path(self, container: str, restart: int) -> Path: ...

    async def sleep(self, seconds: float) -> None: ...


async def supervise(
    host: PodHost, c: Obj, st: ContainerState, plan: ImagePlan, volumes: dict[str, str], *, init: bool = False
) -> bool:
    """Run one container under the restart policy; True when it ended with exit code 0."""
    backoff = BACKOFF_INITIAL
    while not host.stopping.is_set():
        try:
            spec = await host.container_spec(c, plan, volumes)
        except ConfigError as exc:
            st.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            await host.write_status()
            await host.sleep(backoff)
            continue
        started = time.monotonic()
        rc, reason = await run_once(host, c, st, spec, init)
        ran = time.monotonic() - started
        if host.stopping.is_set():
            return rc == 0
        restart = host.restart_policy == "Always" or (host.restart_policy == "OnFailure" and rc != 0)
        if init and rc == 0:
            return True
        if not restart:
            return rc == 0
        if ran >= BACKOFF_RESET:
            backoff = BACKOFF_INITIAL
        st.last_state = st.state
        st.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {int(backoff)}s restarting failed container={st.name} "
                f"pod={host.name}_{host.namespace}({host.uid})",
            }
        }
        log.info(
            "container back-off",
            pod=f"{host.namespace}/{host.name}",
            container=st.name,
            exit_code=rc,
            reason=reason,
            backoff=backoff,
        )
        await host.write_status()
        await host.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX)
        st.restart_count += 1
    return False


async def run_once(
    host: PodHost, c: Obj, st: ContainerState, spec: ContainerSpec, init: bool
) -> tuple[int, str]:
    """One start of the container, until it exits: (exit code, Completed or Error)."""
    assert host.net is not None
    logf = host.log_path(st.name, st.restart_count)
    logf.parent.mkdir(parents=True, exist_ok=True)
    spec_file = host.dir / f"{st.name}.spec.json"
    write_spec(spec, spec_file)
    mkdir(Path(spec.scratch))
    with logf.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *launch_argv(host.net.netns, host.net.ipcns, spec_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            preexec_fn=die_with_parent,
        )
    st.proc = proc
    host.record_pids()
    st.run_id = f"{host.uid}-{st.name}-{st.restart_count}"
    started_at = now()
    st.state = {"running": {"startedAt": started_at}}
    has_startup = bool(c.get("startupProbe")) and not init
    st.started = not has_startup
    st.ready = not init and not c.get("readinessProbe") and not has_startup
    await host.write_status()
    killed: list[str] = []
    probes = [] if init else host.probes(c, st, proc, killed)
    rc = await proc.wait()
    for t in probes:
        t.cancel()
    st.ready = False
    st.started = False
    if rc < 0:
        rc = 128 - rc
    reason = "Completed" if rc == 0 else "Error"
    term: Obj = {
        "exitCode": rc,
        "reason": reason,
        "startedAt": started_at,
        "finishedAt": now(),
        "containerID": f"kaito-local://{st.run_id}",
    }
    if rc != 0:
        tail = _tail(logf)
        if killed:
            term["message"] = killed[0]
        elif tail:
            term["message"] = tail
    st.state = {"terminated": term}
    st.proc = None
    await host.write_status()
    return rc, reason


async def signal_container(proc: asyncio.subprocess.Process, sig: int) -> None:
    """Signal the container's PID 1 (inside its PID namespace), not the ``unshare`` wrapper."""
    pid = container_pid(proc.pid)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_bytes()[-4096:].decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
