"""Helpers shared by the API-fault, fuzz and security suites (issue 14): the CRDs, the real
operator running in this event loop with its log captured, metric reads, and polling with a
deadline (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from kaito.envtest import Cluster
from kaito.operator import Operator, OperatorOptions, build_operator
from kaito.runtime import NAMESPACE
from kaito.runtime.logging import configure_logging

REPO = Path(__file__).resolve().parents[2]
# The fault proxy of the informer tests is reused, not repeated.
sys.path.insert(0, str(REPO / "tests" / "integration" / "runtime"))
# ... and so is the api tests' Workspace webhook registration
sys.path.insert(0, str(REPO / "tests" / "integration" / "api"))


@contextlib.asynccontextmanager
async def fresh_namespace(cluster: Cluster, prefix: str) -> AsyncIterator[str]:
    """A namespace of this test's own on a shared cluster; deleted afterwards (not awaited)."""
    from kaito.runtime import Client

    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    async with Client(cluster.client_configuration()) as api:
        await api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        try:
            yield name
        finally:
            with contextlib.suppress(Exception):
                await api.delete(NAMESPACE, name)


def install_crds(cluster: Cluster) -> None:
    for crd in sorted((REPO / "config" / "crd").glob("*.yaml")):
        if "kind: CustomResourceDefinition" in crd.read_text():
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    cluster.kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=60s")


async def until(
    check: Callable[[], Any | Awaitable[Any]],
    what: str,
    timeout: float = 240.0,  # noqa: ASYNC109
    interval: float = 0.25,
) -> Any:
    """Poll ``check`` until truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def metric(op: Operator, family: str, **labels: str) -> float:
    """Sum of a manager metric's ``_total`` samples matching ``labels``."""
    total = 0.0
    for m in getattr(op.manager.metrics, family).collect():
        for s in m.samples:
            if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class LogCapture:
    """The process's structlog output as JSON lines in memory, restored afterwards."""

    def __init__(self, level: str = "DEBUG") -> None:
        self.buffer = io.StringIO()
        self.level = level
        self._saved: dict[str, Any] | None = None

    def __enter__(self) -> LogCapture:
        self._saved = structlog.get_config()
        configure_logging("json", self.level, stream=self.buffer)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            structlog.configure(**self._saved)

    def text(self) -> str:
        return self.buffer.getvalue()

    def tracebacks(self) -> list[str]:
        return [ln for ln in self.text().splitlines() if "Traceback" in ln or '"stacktrace"' in ln]


@contextlib.asynccontextmanager
async def running_operator(config: Any, options: OperatorOptions) -> AsyncIterator[Operator]:
    """The real operator (Manager, informers, workspace controller, provisioner backend) in this
    event loop, started and ready; stopped on exit."""
    op = build_operator(config, options, handle_signals=False)
    task = asyncio.create_task(op.start())
    try:
        ctrl = op.workspace.controller
        assert ctrl is not None
        await until(lambda: ctrl.started.is_set() or task.done(), "the operator to start", 180)
        if task.done():
            task.result()
        yield op
    finally:
        op.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
