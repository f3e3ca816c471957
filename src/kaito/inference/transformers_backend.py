"""The transformers runtime (``--runtime transformers``): same HTTP surface, for models vLLM lacks.

One request generates at a time (``max_running`` is 1; the front's queue bound applies on top),
in a worker thread so the event loop keeps answering /health and /metrics. Streaming uses
transformers' TextIteratorStreamer, so tokens reach the client as they are produced. Adapters
are loaded with peft, one named adapter per folder; a strength other than 1.0 scales that
adapter's LoRA ``scaling`` - unlike vLLM, this runtime can apply it directly.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from kaito.inference.adapters import Adapter
from kaito.inference.backend import ASGIApp, BackendError, ChatBody
from kaito.inference.config import ConfigError, InferenceSettings

_ALLOWED_ENGINE_KEYS = {"dtype", "max_model_len", "trust_remote_code", "device_map", "chat_template"}


def _err(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": status}}, status
    )


class TransformersBackend:
    runtime = "transformers"
    api_keys: tuple[str, ...] = ()

    def __init__(self, settings: InferenceSettings, adapters: list[Adapter]) -> None:
        bad = sorted(set(settings.engine_args) - _ALLOWED_ENGINE_KEYS)
        if bad or settings.passthrough:
            extra = bad + settings.passthrough
            raise ConfigError(
                f"transformers runtime does not accept {extra}; allowed: {sorted(_ALLOWED_ENGINE_KEYS)}"
            )
        self.settings = settings
        self.model_name = settings.model_name
        self.adapters = adapters
        self.lock = asyncio.Lock()
        self.model: Any = None
        self.tokenizer: Any = None
        self.max_model_len = int(settings.engine_args.get("max_model_len") or 0)
        self._app = self._build_app()

    @property
    def max_running(self) -> int:
        return 1

    async def load(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        args = self.settings.engine_args
        dtype = args.get("dtype", "auto")
        torch_dtype = "auto" if dtype in (None, "auto") else getattr(torch, str(dtype))
        trust = bool(args.get("trust_remote_code", False))
        self.tokenizer = AutoTokenizer.from_pretrained(self.settings.model, trust_remote_code=trust)
        if args.get("chat_template"):
            self.tokenizer.chat_template = str(args["chat_template"])
        model = AutoModelForCausalLM.from_pretrained(
            self.settings.model, dtype=torch_dtype, trust_remote_code=trust
        )
        if self.adapters:
            from peft import PeftModel

            first, *rest = self.adapters
            model = PeftModel.from_pretrained(model, str(first.path), adapter_name=first.name)
            for a in rest:
                model.load_adapter(str(a.path), adapter_name=a.name)
            for a in self.adapters:
                if a.strength != 1.0:
                    for module in model.modules():
                        scaling = getattr(module, "scaling", None)
                        if isinstance(scaling, dict) and a.name in scaling:
                            scaling[a.name] *= a.strength
        model.eval()
        self.model = model
        if not self.max_model_len:
            self.max_model_len = int(getattr(model.config, "max_position_embeddings", 2048))

    async def aclose(self) -> None:
        self.model = None

    def openai_app(self) -> ASGIApp:
        app: ASGIApp = self._app
        return app

    # -- generation -------------------------------------------------------------------------
    def _encode(self, model: str, prompt: str | None, messages: Any, max_tokens: int) -> list[int]:
        if model != self.model_name and model not in {a.name for a in self.adapters}:
            raise BackendError(404, f"The model `{model}` does not exist.")
        if messages is not None:
            if not isinstance(messages, list) or not messages:
                raise BackendError(400, "messages must be a non-empty list")
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        elif isinstance(prompt, str):
            ids = list(self.tokenizer(prompt)["input_ids"])
        else:
            raise BackendError(400, "prompt must be a string")
        if max_tokens < 1 or max_tokens > self.max_model_len:
            raise BackendError(
                400, f"max_tokens={max_tokens} must be between 1 and max_model_len={self.max_model_len}"
            )
        if len(ids) + max_tokens > self.max_model_len:
            raise BackendError(
                400,
                f"prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) "
                f"exceeds max_model_len={self.max_model_len}",
            )
        return ids

    def _gen_kwargs(self, body: dict[str, Any], max_tokens: int) -> dict[str, Any]:
        temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
        if temperature < 0:
            raise BackendError(400, "temperature must be >= 0")
        kw: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": temperature > 0}
        if temperature > 0:
            kw["temperature"] = temperature
            if body.get("top_p") is not None:
                kw["top_p"] = float(body["top_p"])
            if body.get("top_k") is not None and int(body["top_k"]) > 0:
                kw["top_k"] = int(body["top_k"])
        if body.get("ignore_eos"):
            kw["min_new_tokens"] = max_tokens
        if body.get("repetition_penalty") is not None:
            kw["repetition_penalty"] = float(body["repetition_penalty"])
        return kw

    def _select(self, model: str) -> None:
        if not self.adapters:
            return
        if model == self.model_name:
            self.model.base_model.disable_adapter_layers()
        else:
            self.model.base_model.enable_adapter_layers()
            self.model.set_adapter(model)

    def _generate(self, model: str, ids: list[int], kw: dict[str, Any], streamer: Any = None) -> list[int]:
        import torch

        self._select(model)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                streamer=streamer,
                **kw,
            )
        return list(out[0][len(ids) :].tolist())

    async def _complete(self, model: str, ids: list[int], kw: dict[str, Any]) -> tuple[str, int]:
        async with self.lock:
            new = await asyncio.to_thread(self._generate, model, ids, kw)
        return self.tokenizer.decode(new, skip_special_tokens=True), len(new)

    async def _stream(self, model: str, ids: list[int], kw: dict[str, Any]) -> AsyncIterator[str]:
        from transformers import TextIteratorStreamer

        async with self.lock:
            streamer = TextIteratorStreamer(
                self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
            )
            thread = threading.Thread(target=self._generate, args=(model, ids, kw, streamer), daemon=True)
            thread.start()
            it = iter(streamer)
            while True:
                piece = await asyncio.to_thread(next, it, None)
                if piece is None:
                    break
                if piece:
                    yield piece
            await asyncio.to_thread(thread.join)

    async def chat(self, body: ChatBody, raw_request: Any) -> str:
        kw = body.generate_kwargs
        max_tokens = kw.max_tokens(default=256)
        messages = [{"role": "user", "content": body.prompt}] if self.tokenizer.chat_template else None
        ids = self._encode(self.model_name, body.prompt, messages, max_tokens)
        req: dict[str, Any] = {
            "temperature": kw.effective_temperature(),
            "top_p": kw.top_p,
            "top_k": kw.top_k,
            "repetition_penalty": kw.repetition_penalty,
            "ignore_eos": kw.ignore_eos,
        }
        text, _ = await self._complete(self.model_name, ids, self._gen_kwargs(req, max_tokens))
        return text

    def _build_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/v1/models")
        async def models() -> Response:
            names = [self.model_name, *(a.name for a in self.adapters)]
            data = [
                {
                    "id": n,
                    "object": "model",
                    "owned_by": "kaito",
                    "created": 0,
                    "max_model_len": self.max_model_len,
                }
                for n in names
            ]
            return JSONResponse({"object": "list", "data": data})

        async def handle(request: Request, chat: bool) -> Response:
            try:
                body = json.loads(await request.body())
                if not isinstance(body, dict):
                    raise BackendError(400, "request body must be a JSON object")
                model = str(body.get("model") or self.model_name)
                max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
                ids = self._encode(
                    model, body.get("prompt"), body.get("messages") if chat else None, max_tokens
                )
                kw = self._gen_kwargs(body, max_tokens)
            except json.JSONDecodeError:
                return _err(400, "request body is not valid JSON")
            except (TypeError, ValueError) as exc:
                return _err(400, f"invalid request: {exc}")
            except BackendError as exc:
                return _err(exc.status, exc.message)
            rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
            created = int(time.time())
            obj = "chat.completion" if chat else "text_completion"
            if body.get("stream"):

                async def events() -> AsyncIterator[str]:
                    async for piece in self._stream(model, ids, kw):
                        choice: dict[str, Any] = {"index": 0, "finish_reason": None}
                        if chat:
                            choice["delta"] = {"role": "assistant", "content": piece}
                        else:
                            choice["text"] = piece
                        yield (
                            "data: "
                            + json.dumps(
                                {
                                    "id": rid,
                                    "object": obj + ".chunk" if chat else obj,
                                    "created": created,
                                    "model": model,
                                    "choices": [choice],
                                }
                            )
                            + "\n\n"
                        )
                    yield "data: [DONE]\n\n"

                return StreamingResponse(events(), media_type="text/event-stream")
            text, n = await self._complete(model, ids, kw)
            finish = "length" if n >= max_tokens else "stop"
            choice = {"index": 0, "finish_reason": finish}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            usage = {"prompt_tokens": len(ids), "completion_tokens": n, "total_tokens": len(ids) + n}
            return JSONResponse(
                {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                }
            )

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            return await handle(request, chat=False)

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            return await handle(request, chat=True)

        return app
