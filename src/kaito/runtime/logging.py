"""structlog setup plus the per-reconcile context.

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


def configure_logging(fmt: LogFormat = "json", level: int | str = "INFO", *, stream: Any = None) -> None:
    """Configure structlog process-wide; JSON for clusters (one object per line), console for humans."""
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )


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
