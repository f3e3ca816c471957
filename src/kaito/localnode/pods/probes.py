"""A container's startup, liveness and readiness probes: httpGet, tcpSocket and exec, each an
independent timer as in the kubelet; a failed startup or liveness probe restarts the container."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from kaito.localnode.images import ImagePullError, ImageResolver
from kaito.localnode.pods.identity import run_as
from kaito.localnode.pods.sources import ConfigError
from kaito.localnode.pods.status import ContainerState
from kaito.localnode.pods.supervision import signal_container
from kaito.localnode.sandbox import container_pid, run_in, unprivileged_argv
from kaito.runtime import get_logger

Obj = dict[str, Any]
log = get_logger("kaito.localnode")


class Prober:
    """Probes the containers of one pod at its IP; ``changed`` writes the pod's status after a
    probe flips a container's started or ready flag."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        resolver: ImageResolver,
        spec: Obj,
        *,
        name: str,
        namespace: str,
        uid: str,
        ip: str,
        changed: Callable[[], Awaitable[None]],
    ) -> None:
        self.http = http
        self.resolver = resolver
        self.name = name
        self.namespace = namespace
        self.uid = uid
        self.spec = spec
        self.ip = ip
        self.write_status = changed

    def start(
        self, c: Obj, st: ContainerState, proc: asyncio.subprocess.Process, killed: list[str]
    ) -> list[asyncio.Task[None]]:
        started = asyncio.Event()
        if not c.get("startupProbe"):
            started.set()

        async def kill(why: str) -> None:
            killed.append(why)
            log.info("container restart", pod=f"{self.namespace}/{self.name}", container=st.name, why=why)
            await signal_container(proc, signal.SIGTERM)
            grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

        async def startup(p: Obj) -> None:
            if await self._loop(c, p, proc, until_success=True):
                st.started = True
                if not c.get("readinessProbe"):
                    st.ready = True
                started.set()
                await self.write_status()
            else:
                await kill(f"Startup probe failed {p.get('failureThreshold', 3)} times")

        async def liveness(p: Obj) -> None:
            await started.wait()
            if not await self._loop(c, p, proc, until_success=False):
                await kill(f"Liveness probe failed {p.get('failureThreshold', 3)} times")

        async def readiness(p: Obj) -> None:
            await started.wait()
            await self._loop(c, p, proc, until_success=False, readiness=st)

        tasks = []
        for key, fn in (
            ("startupProbe", startup),
            ("livenessProbe", liveness),
            ("readinessProbe", readiness),
        ):
            if c.get(key):
                tasks.append(asyncio.create_task(fn(c[key])))
        return tasks

    async def _loop(
        self,
        c: Obj,
        p: Obj,
        proc: asyncio.subprocess.Process,
        *,
        until_success: bool,
        readiness: ContainerState | None = None,
    ) -> bool:
        """Probe every periodSeconds. ``until_success``: True at the first success, False after
        failureThreshold failures in a row (startup). Otherwise run until failureThreshold
        failures (liveness: returns False) or forever, flipping ``readiness.ready``."""
        await asyncio.sleep(float(p.get("initialDelaySeconds", 0)))
        period = float(p.get("periodSeconds", 10))
        fail_limit = int(p.get("failureThreshold", 3))
        ok_limit = int(p.get("successThreshold", 1))
        fails = oks = 0
        while proc.returncode is None:
            ok = await self._once(c, p, proc)
            fails, oks = (0, oks + 1) if ok else (fails + 1, 0)
            if until_success and ok:
                return True
            if readiness is not None:
                want = True if oks >= ok_limit else (False if fails >= fail_limit else readiness.ready)
                if want != readiness.ready:
                    readiness.ready = want
                    await self.write_status()
            elif fails >= fail_limit:
                return False
            await asyncio.sleep(period)
        return False

    async def _once(self, c: Obj, p: Obj, proc: asyncio.subprocess.Process) -> bool:
        timeout = float(p.get("timeoutSeconds", 1))
        try:
            if "httpGet" in p:
                h = p["httpGet"]
                port = _port(c, h.get("port"))
                scheme = str(h.get("scheme", "HTTP")).lower()
                url = f"{scheme}://{h.get('host') or self.ip}:{port}{h.get('path', '/')}"
                headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
                async with self.http.get(
                    url,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                    ssl=False,
                    allow_redirects=False,
                ) as resp:
                    return 200 <= resp.status < 400
            if "tcpSocket" in p:
                port = _port(c, p["tcpSocket"].get("port"))
                _, writer = await asyncio.wait_for(asyncio.open_connection(self.ip, port), timeout)
                writer.close()
                return True
            if "exec" in p:
                pid = container_pid(proc.pid)
                if pid is None:
                    return False
                env = dict(self.image_env(c))
                ident = run_as(self.spec, c, f"{self.name}_{self.namespace}({self.uid})")
                argv = unprivileged_argv(ident.user, ident.group, ident.groups, list(p["exec"]["command"]))
                return await run_in(pid, argv, env, timeout) == 0
        except (OSError, TimeoutError, aiohttp.ClientError, ConfigError):
            return False
        return False

    def image_env(self, c: Obj) -> dict[str, str]:
        """The image's env for an exec probe (PATH to find its command)."""
        with contextlib.suppress(ImagePullError):
            return self.resolver.resolve(c.get("image", ""), []).env
        return {"PATH": "/usr/bin:/bin"}


def _port(c: Obj, port: Any) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in c.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise OSError(f"probe port {port!r} is not a port of container {c['name']}")
