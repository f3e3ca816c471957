"""What ``kaito local`` needs from the node agent: its command line, container logs, port-forward.

Kept here so the typer commands in kaito.cli.local stay thin and the log layout (the agent's
``<state-dir>/node/pods/<ns>_<pod>_<uid>/logs/<container>/<restart>.log``) has one owner.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kaito.localnode.portforward import ForwardError, forward
from kaito.runtime import Client, load_configuration

#: Below the ``kaito local`` state dir: the agent's pods, logs and its own log.
AGENT_SUBDIR = "node"


class LocalNodeError(Exception):
    """A one-line error for the CLI."""


def agent_command() -> dict[str, list[str]]:
    """The supervisor's extra program: the agent (empty when not root: it needs namespaces)."""
    if os.geteuid() != 0:
        return {}
    return {
        "node-agent": [
            sys.executable,
            "-m",
            "kaito.localnode",
            "--kubeconfig",
            "{kubeconfig}",
            "--state-dir",
            "{state_dir}/" + AGENT_SUBDIR,
        ]
    }


def _log_file(state_dir: Path, namespace: str, pod: str, container: str, previous: bool) -> Path:
    pods = sorted((state_dir / AGENT_SUBDIR / "pods").glob(f"{namespace}_{pod}_*"))
    if not pods:
        raise LocalNodeError(
            f'no pod "{pod}" in namespace "{namespace}" on a local node '
            f"(kwok's fake pods have no logs; `kaito local status` shows the running cluster)"
        )
    logs = pods[-1] / "logs"
    names = sorted(p.name for p in logs.iterdir()) if logs.is_dir() else []
    if not container:
        if len(names) != 1:
            raise LocalNodeError(
                f'pod "{pod}" has containers {", ".join(names) or "(none started)"}; pick one with -c'
            )
        container = names[0]
    if container not in names:
        raise LocalNodeError(
            f'container "{container}" of pod "{pod}" has no log (has: {", ".join(names) or "none"})'
        )
    runs = sorted((logs / container).glob("*.log"), key=lambda p: int(p.stem))
    if previous:
        if len(runs) < 2:
            raise LocalNodeError(f'container "{container}" has not restarted: no previous log')
        return runs[-2]
    return runs[-1]


def print_logs(
    state_dir: Path, namespace: str, pod: str, container: str, *, follow: bool = False, previous: bool = False
) -> None:
    path = _log_file(state_dir, namespace, pod, container, previous)
    out = sys.stdout.buffer
    with path.open("rb") as f:
        out.write(f.read())
        out.flush()
        while follow:
            chunk = f.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not path.exists():
                return
            newest = _log_file(state_dir, namespace, pod, container, False)
            if newest != path:  # the container restarted: follow the new run
                path = newest
                f.close()
                f = path.open("rb")
                continue
            time.sleep(0.3)


def port_forward(
    kubeconfig: str, namespace: str, target: str, ports: str, address: str, say: Callable[[str], None]
) -> None:
    local_s, sep, remote_s = ports.partition(":")
    if not sep:
        local_s = remote_s = ports
    try:
        local, remote = int(local_s), int(remote_s)
    except ValueError:
        raise LocalNodeError(f"ports {ports!r}: use LOCAL:REMOTE, e.g. 8080:80") from None

    async def run() -> None:
        config = await load_configuration(kubeconfig)
        async with Client(config, user_agent="kaito-port-forward") as client:
            ready = asyncio.Event()
            task = asyncio.create_task(
                forward(client, namespace, target, local, remote, address=address, ready=ready)
            )
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                waiter.cancel()
                task.result()
            say(f"Forwarding from {address}:{local} -> {target}:{remote}")
            await task

    try:
        asyncio.run(run())
    except ForwardError as exc:
        raise LocalNodeError(str(exc)) from None
    except OSError as exc:
        raise LocalNodeError(f"cannot listen on {address}:{local}: {exc.strerror}") from None
    except KeyboardInterrupt:
        pass
