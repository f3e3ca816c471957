"""One log format for the whole inference process: kaito's lines, vLLM's, uvicorn's, torch's.

Why: a pod's log is read by a pipeline that expects one object per line. Left alone, vLLM
installs its own handler and format on its ``vllm`` logger, uvicorn its own on ``uvicorn.*``,
and structlog prints a console line: three formats in one stream. Here every library's records
propagate to one root handler, and structlog's events go through the same processors, so each
line is a JSON object with the operator's keys (``ts`` epoch seconds, ``level``, ``logger``,
``msg``, then the event's fields) -- or, for people at a terminal, one readable console format.

``KAITO_LOG_FORMAT``: ``json``, ``console`` or ``auto`` (the default: JSON inside a pod, where
``KUBERNETES_SERVICE_HOST`` is set, console elsewhere). ``KAITO_LOG_LEVEL`` (default ``info``).
This module stays inside the in-pod layer (the operator's own logging lives in ``kaito.runtime``,
which the pod's programs do not import).
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.config
import os
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Final

import structlog

#: vLLM applies the dictConfig this names at import, in the server and in every engine process
#: it starts; kaito points it at one that routes all of them through :func:`record_formatter`.
VLLM_CONFIGURE_LOGGING: Final = "VLLM_CONFIGURE_LOGGING"
VLLM_LOGGING_CONFIG_PATH: Final = "VLLM_LOGGING_CONFIG_PATH"
_HEAD: Final = ("ts", "level", "logger", "msg")


def log_format(environ: MutableMapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    fmt = env.get("KAITO_LOG_FORMAT", "auto").lower()
    if fmt == "auto":
        return "json" if env.get("KUBERNETES_SERVICE_HOST") else "console"
    if fmt not in ("json", "console"):
        raise ValueError(f"KAITO_LOG_FORMAT={fmt!r}: use json, console or auto")
    return fmt


def _level() -> str:
    name = os.environ.get("KAITO_LOG_LEVEL", "info").upper()
    return name if name in logging.getLevelNamesMapping() else "INFO"


def _operator_keys(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``event`` -> ``msg``, ``timestamp`` -> ``ts``, ``exception`` -> ``stacktrace``; head first."""
    for old, new in (("event", "msg"), ("timestamp", "ts"), ("exception", "stacktrace")):
        if old in event:
            event[new] = event.pop(old)
    return {**{k: event.pop(k) for k in _HEAD if k in event}, **event}


def _shared(fmt: str) -> list[Any]:
    return [
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt=None if fmt == "json" else "iso", utc=True),
    ]


def record_formatter() -> logging.Formatter:
    """The formatter of every handler in the process (and of vLLM's engine processes, whose
    dictConfig names this factory): the format ``KAITO_LOG_FORMAT`` asks for."""
    fmt = log_format()
    # Built once per process by logging.config, so also the place where an engine process vLLM
    # starts (which runs no kaito code before vLLM's import applies this config) routes Python
    # warnings into records.
    logging.captureWarnings(True)
    tail: list[Any] = (
        [_operator_keys, structlog.processors.JSONRenderer()]
        if fmt == "json"
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared(fmt), structlog.processors.format_exc_info],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )


def dict_config() -> dict[str, Any]:
    """The logging dictConfig vLLM applies in each of its processes: everything through one
    stderr handler with :func:`record_formatter`; vLLM's loggers propagate to it."""
    level = _level()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"kaito": {"()": f"{__name__}.record_formatter"}},
        "handlers": {
            "kaito": {"class": "logging.StreamHandler", "formatter": "kaito", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["kaito"], "level": level},
        "loggers": {"vllm": {"handlers": [], "level": level, "propagate": True}},
    }


def configure(fmt: str | None = None) -> None:
    """Set the process's one format; call before vLLM is imported (it reads its switches then)."""
    if fmt is not None:
        os.environ["KAITO_LOG_FORMAT"] = fmt
    fmt = log_format()
    structlog.configure(
        processors=[
            *_shared(fmt),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    logging.config.dictConfig(dict_config())
    logging.captureWarnings(True)  # Python warnings (torch, transformers) as records too
    # vLLM re-applies the same config at import, here and in each engine process it starts.
    text = json.dumps(dict_config(), sort_keys=True)
    path = (
        Path(tempfile.gettempdir())
        / f"kaito-vllm-logging-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    )
    if not path.exists():  # one file per distinct config, shared by every server start
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(path)
    os.environ[VLLM_CONFIGURE_LOGGING] = "1"
    os.environ[VLLM_LOGGING_CONFIG_PATH] = str(path)
    # uvicorn installs handlers of its own unless told otherwise (the server passes
    # log_config=None); any it has already propagate only.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True


__all__ = [
    "VLLM_CONFIGURE_LOGGING",
    "VLLM_LOGGING_CONFIG_PATH",
    "configure",
    "dict_config",
    "log_format",
    "record_formatter",
]
