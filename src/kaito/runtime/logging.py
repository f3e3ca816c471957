"""structlog setup plus the per-reconcile context.

One format per process: structlog's lines and the standard library's records (every library
logs through it) go through the same processors to the same stream.

The controller binds ``controller``, ``key`` and ``reconcile_id`` through contextvars, so any
log line emitted inside a reconcile (including from library code several calls deep, or tasks
it spawns) carries them without threading a logger through every function.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.contextvars import bind_contextvars, merge_contextvars, reset_contextvars

LogFormat = Literal["json", "console"]


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of the call.

    Binding the stream at configure time breaks when a test runner (or a CLI harness) swaps
    stderr and later closes its replacement: every later log line would raise on a closed file.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


#: structlog's own key -> the key controller-runtime's JSON logs (zap) use, so one log pipeline
#: parses kaito's lines and Go operators' alike.
_RENAMES = {"event": "msg", "timestamp": "ts", "reconcile_id": "reconcileID", "exception": "stacktrace"}
_HEAD = ("ts", "level", "logger", "msg")
#: Libraries whose INFO is per request (the Azure SDK logs every HTTP call): warnings only, unless
#: the process logs at DEBUG.
_CHATTY = ("azure", "urllib3")


def _controller_runtime_keys(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Rename to controller-runtime's keys and split ``key`` into ``namespace`` and ``name``;
    ``ts``, ``level``, ``logger``, ``msg`` first, as zap writes them."""
    out: dict[str, Any] = {}
    for k, v in event.items():
        out[_RENAMES.get(k, k)] = v
    key = out.pop("key", None)
    if isinstance(key, str):
        namespace, _, name = key.rpartition("/")
        if namespace:
            out.setdefault("namespace", namespace)
        out.setdefault("name", name)
    head = {k: out.pop(k) for k in _HEAD if k in out}
    return {**head, **out}


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that remembers the name it was asked for, for the ``logger`` key."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "kaito")


class _StdlibBridge(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler: stdlib records (aiohttp, uvicorn, the Azure SDK, vLLM, ...) in
    the same format as structlog's lines. One per process: configure_logging replaces it."""


def configure_logging(fmt: LogFormat = "json", level: int | str = "INFO", *, stream: Any = None) -> None:
    """Configure logging process-wide, structlog and the standard library alike: JSON for
    clusters (one object per line, controller-runtime's keys: ``ts``, ``level``, ``logger``,
    ``msg``, ``controller``, ``namespace``, ``name``, ``reconcileID``), console for humans."""
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    out = stream or cast(TextIO, _CurrentStderr())
    renderer: Any
    if fmt == "json":
        shared: list[Any] = [
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt=None, utc=True),  # epoch seconds, as zap's ts
        ]
        renderer = structlog.processors.JSONRenderer()
        tail: list[Any] = [_controller_runtime_keys, renderer]
    else:
        shared = [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ]
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        tail = [renderer]
    structlog.configure(
        processors=[
            merge_contextvars,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    bridge = _StdlibBridge(out)
    bridge.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[merge_contextvars, *shared, structlog.processors.format_exc_info],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibBridge)]:
        root.removeHandler(old)
    root.addHandler(bridge)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def get_logger(name: str = "kaito.runtime", **initial: Any) -> Any:
    return structlog.get_logger(name, **initial)


def new_reconcile_id() -> str:
    return os.urandom(8).hex()


@contextmanager
def reconcile_context(controller: str, key: str, reconcile_id: str | None = None) -> Iterator[str]:
    """Bind controller/key/reconcile_id for the duration of one reconcile; yields the id.

    Token-based set/reset instead of ``bound_contextvars`` (which snapshots the whole context):
    this runs once per reconcile, so it is on the hot path.
    """
    rid = reconcile_id or new_reconcile_id()
    tokens = bind_contextvars(controller=controller, key=key, reconcile_id=rid)
    try:
        yield rid
    finally:
        reset_contextvars(**tokens)
