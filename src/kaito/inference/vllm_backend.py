"""The vLLM runtime: vLLM's own OpenAI app, built on vLLM's async engine, behind Kaito's front.

Why mount vLLM's app instead of re-implementing the OpenAI routes on the engine: the routes carry
most of what users notice - chat templates, tool and reasoning parsers, LoRA model selection,
logprobs, streaming details, context-length and max_tokens checks - and vLLM keeps them in step
with the engine release by release. Kaito adds only what vLLM lacks (``/chat``, a 503-while-loading
``/health``, a bounded queue with 429, edge metrics) in a thin ASGI layer, so the hot path is
vLLM's own code and the benchmark compares like with like.

vLLM is imported inside functions: the controller's environment has no vLLM, and mypy sees Any.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import structlog

from kaito.inference.adapters import Adapter, prepare_for_vllm
from kaito.inference.backend import ASGIApp, BackendError, ChatBody
from kaito.inference.config import (
    ConfigError,
    InferenceSettings,
    drop_retired_engine_args,
    unknown_engine_keys,
)

log = structlog.get_logger("kaito.inference.vllm")
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def _parser() -> Any:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    class Parser(FlexibleArgumentParser):  # type: ignore[misc]
        def error(self, message: str) -> Any:
            raise ConfigError(f"invalid vLLM argument: {message}")

    return make_arg_parser(Parser(prog="kaito serve"))


def _render(engine_args: dict[str, Any], parser: Any) -> list[str]:
    """``{dest: value}`` to vLLM flags, honouring how each flag takes booleans."""
    actions = parser._option_string_actions
    out: list[str] = []
    for dest, value in engine_args.items():
        if value is None:
            continue
        flag = "--" + dest.replace("_", "-")
        action = actions[flag]
        if isinstance(value, bool):
            if isinstance(action, argparse.BooleanOptionalAction):
                out.append(flag if value else "--no-" + dest.replace("_", "-"))
            elif action.nargs == 0:
                if value:
                    out.append(flag)
            else:
                out.extend([flag, str(value).lower()])
        elif isinstance(value, list | tuple):
            out.append(flag)
            out.extend(str(v) for v in value)
        elif isinstance(value, dict):
            import json

            out.extend([flag, json.dumps(value)])
        else:
            out.extend([flag, str(value)])
    return out


def vllm_argv(settings: InferenceSettings, adapters: list[Adapter], parser: Any) -> list[str]:
    """The full vLLM command line this server runs with (also what the benchmark compares to)."""
    known = set(parser._option_string_actions)
    engine = dict(settings.engine_args)
    for warning in drop_retired_engine_args(engine, known):
        if warning not in settings.warnings:
            settings.warnings.append(warning)
    bad = unknown_engine_keys(engine, known)
    if bad:
        raise ConfigError(f"unknown vLLM engine argument(s): {', '.join(bad)}")
    engine.setdefault("served_model_name", [settings.model_name])
    if adapters:
        engine["enable_lora"] = True
        engine["lora_modules"] = [f"{a.name}={a.path}" for a in adapters]
        engine.setdefault("max_loras", max(1, len(adapters)))
        rank = max(a.rank for a in adapters)
        if rank > 16:
            engine.setdefault("max_lora_rank", next((r for r in _LORA_RANKS if r >= rank), rank))
    return ["--model", settings.model, *_render(engine, parser), *settings.passthrough]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(line.strip() for line in text[:3]) if text else type(exc).__name__


def _take_vllm_api_keys(args: Any) -> tuple[str, ...]:
    """vLLM's own ``--api-key`` (flag, config file or ``VLLM_API_KEY``), moved to Kaito's front.

    vLLM checks it only on its ``/v1`` routes, so ``/chat``, ``/invocations``, ``/tokenize``...
    stayed open to anyone. The front checks the same keys on every route but /health and
    /metrics; vLLM's check is switched off so a request is not judged twice (and a
    ``KAITO_API_KEY`` that differs from vLLM's key is not refused by vLLM's middleware).
    """
    raw = getattr(args, "api_key", None)
    keys = [raw] if isinstance(raw, str) else list(raw or ())
    env = os.environ.pop("VLLM_API_KEY", None)
    if env:
        keys.append(env)
    if hasattr(args, "api_key"):
        args.api_key = None
    return tuple(k.strip() for k in keys if k and k.strip())


class VllmBackend:
    runtime = "vllm"

    def __init__(self, settings: InferenceSettings, adapters: list[Adapter]) -> None:
        """Parse and validate everything before the server listens; raises ConfigError."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
        from vllm.usage.usage_lib import UsageContext

        self.settings = settings
        self.model_name = settings.model_name
        self._tmp = tempfile.TemporaryDirectory(prefix="kaito-adapters-")
        adapters = prepare_for_vllm(adapters, Path(self._tmp.name))
        parser = _parser()
        self.argv = vllm_argv(settings, adapters, parser)
        self.args = parser.parse_args(self.argv)
        self.api_keys = _take_vllm_api_keys(self.args)
        #: A multi-node rank > 0: no API server, only vLLM's workers (see run_headless).
        self.headless = bool(getattr(self.args, "headless", False))
        self.engine: Any = None
        self.app: Any = None
        self._stats_task: asyncio.Task[None] | None = None
        if self.headless:
            return
        try:
            validate_parsed_serve_args(self.args)
            self.engine_args = AsyncEngineArgs.from_cli_args(self.args)
            self.vllm_config = self.engine_args.create_engine_config(
                usage_context=UsageContext.OPENAI_API_SERVER
            )
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"invalid vLLM configuration: {_one_line(exc)}") from None

    def run_headless(self) -> None:
        """Run this node's share of a multi-node engine until the leader goes away (blocks)."""
        from vllm.entrypoints.cli.serve import run_headless

        if self.args.api_server_count is None:
            self.args.api_server_count = 0  # what `vllm serve --headless` sets before this call
        run_headless(self.args)

    @property
    def max_running(self) -> int:
        return int(self.vllm_config.scheduler_config.max_num_seqs)

    async def load(self) -> None:
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.app import build_app
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        from kaito.inference.metrics import engine_stat_logger_factory

        # The constructor blocks while the engine process loads weights and warms up; a thread
        # keeps the event loop free to answer /health with 503 meanwhile.
        self.engine = await asyncio.to_thread(
            AsyncLLM.from_vllm_config,
            vllm_config=self.vllm_config,
            usage_context=UsageContext.OPENAI_API_SERVER,
            stat_loggers=[engine_stat_logger_factory()],
            enable_log_requests=self.engine_args.enable_log_requests,
            disable_log_stats=self.engine_args.disable_log_stats,
        )
        tasks = await self.engine.get_supported_tasks()
        self.app = build_app(self.args, tasks, self.engine.model_config)
        await init_app_state(self.engine, self.app.state, self.args, tasks)
        if not self.engine_args.disable_log_stats:
            self._stats_task = asyncio.create_task(self._log_stats())

    async def _log_stats(self) -> None:
        import vllm.envs as envs

        while True:
            await asyncio.sleep(envs.VLLM_LOG_STATS_INTERVAL)
            with contextlib.suppress(Exception):
                await self.engine.do_log_stats()

    def openai_app(self) -> ASGIApp:
        app: ASGIApp = self.app
        return app

    async def chat(self, body: ChatBody, raw_request: Any) -> str:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        kw = body.generate_kwargs
        params: dict[str, Any] = {
            "model": self.model_name,
            "messages": [{"role": "user", "content": body.prompt}],
            "max_tokens": kw.max_tokens(default=256),
        }
        temperature = kw.effective_temperature()
        if temperature is not None:
            params["temperature"] = temperature
        for name in ("top_p", "top_k", "repetition_penalty", "seed", "stop", "ignore_eos"):
            value = getattr(kw, name)
            if value is not None:
                params[name] = value
        if kw.min_new_tokens is not None:
            params["min_tokens"] = kw.min_new_tokens
        try:
            request = ChatCompletionRequest(**params)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise BackendError(400, f"invalid generate_kwargs: {_one_line(exc)}") from None
        from vllm.exceptions import VLLMClientError

        handler = self.app.state.openai_serving_chat
        try:
            result = await handler.create_chat_completion(request, raw_request)
        except (VLLMClientError, ValueError, TypeError, OverflowError) as exc:
            # the same mapping vLLM's app applies to these on its own routes
            raise BackendError(400, _one_line(exc)) from None
        if isinstance(result, ErrorResponse):
            raise BackendError(int(result.error.code), str(result.error.message))
        content = result.choices[0].message.content
        return str(content or "")

    async def aclose(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
        self._tmp.cleanup()
