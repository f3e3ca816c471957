"""Start-up: settings -> adapters -> backend (validated) -> listen -> load the model -> ready.

Configuration is validated before the socket opens, so a bad flag or config file exits at once
with one line on stderr and status 2. The model loads after the socket opens, so ``/health``
says 503 while it loads; a load failure exits with status 1 so the kubelet restarts the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import importlib.util
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import structlog
import uvicorn

from kaito.inference import adapters as adapters_mod
from kaito.inference import logs
from kaito.inference.app import InferenceApp
from kaito.inference.backend import Backend
from kaito.inference.config import ConfigError, InferenceSettings, parse_settings
from kaito.inference.overload import BodyBudget, OverloadGuard

log = structlog.get_logger("kaito.inference")


def make_backend(settings: InferenceSettings) -> Backend:
    found = adapters_mod.discover(settings.adapters_dir)
    if settings.runtime == "transformers":
        from kaito.inference.transformers_backend import TransformersBackend

        return TransformersBackend(settings, found)
    from kaito.inference.vllm_backend import VllmBackend

    return VllmBackend(settings, found)


async def serve(settings: InferenceSettings, backend: Backend) -> int:
    # --kaito-disable-rate-limit: an unbounded queue, so the guard never answers 429
    max_queue = settings.max_queue if settings.rate_limit else sys.maxsize
    app = InferenceApp(
        backend,
        OverloadGuard(max_running=1, max_queue=max_queue, retry_after=settings.retry_after),
        body_timeout_s=float(settings.body_timeout),
        api_keys=[*settings.api_keys, *backend.api_keys],
        body_budget=BodyBudget(settings.body_budget_mib * 1024 * 1024, settings.retry_after),
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=os.environ.get("KAITO_LOG_LEVEL", "warning"),
        log_config=None,  # uvicorn's records go to the process's one handler (kaito.inference.logs)
        access_log=False,
        timeout_keep_alive=30,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    rc = 0

    async def load() -> None:
        nonlocal rc
        try:
            await backend.load()
        except Exception as exc:
            app.load_error = f"{type(exc).__name__}: {exc}"
            log.error(f"kaito serve: model load failed: {app.load_error}")
            rc = 1
            server.should_exit = True
            return
        app.mark_ready()
        gc.freeze()  # as vLLM does: keep the start-up heap out of later collections (shorter pauses)
        log.info("model loaded", runtime=backend.runtime, model=backend.model_name)

    loader = asyncio.create_task(load())
    try:
        await server.serve()
    finally:
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await loader
        await backend.aclose()
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        logs.configure()  # before vLLM is imported: it reads its logging switch at import
    except ValueError as exc:
        print(f"kaito serve: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        settings = parse_settings(argv)
        backend = make_backend(settings)
    except ConfigError as exc:
        print(f"kaito serve: {exc}", file=sys.stderr, flush=True)
        return 2
    except ModuleNotFoundError as exc:
        # The controller's environment deliberately has no torch/vLLM: say where to get them.
        print(
            f"kaito serve: the {settings.runtime} runtime needs the '{exc.name}' package, which is not "
            "installed here; install kaito[inference] (GPU images) or run hack/install-inference.sh "
            "(CPU) and use .venv-inference/bin/kaito",
            file=sys.stderr,
            flush=True,
        )
        return 2
    for warning in settings.warnings:
        log.warning(f"kaito serve: warning: {warning}")
    if getattr(backend, "headless", False):
        # A multi-node rank > 0 serves no HTTP (its pod uses exec probes): it runs vLLM's workers.
        rank = settings.engine_args.get("node_rank")
        print(f"kaito serve: node rank {rank}: running vLLM's headless workers", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            backend.run_headless()  # type: ignore[attr-defined]
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # uvloop as `vllm serve` uses: uvicorn.Server.serve() runs on whatever loop it is given,
        # and the engine's output handler is measurably slower on the default asyncio loop.
        runner: Any = asyncio.run
        if importlib.util.find_spec("uvloop") is not None:
            runner = importlib.import_module("uvloop").run
        return int(runner(serve(settings, backend)))
    except KeyboardInterrupt:
        return 0
