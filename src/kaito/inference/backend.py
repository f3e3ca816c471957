"""What the HTTP front needs from a runtime (vLLM or transformers), and the /chat body.

The front owns /health, /metrics, /chat, admission and measurement; a backend owns loading the
model and answering the OpenAI-compatible routes. Keeping the contract this small is what lets
the transformers fallback expose exactly the same HTTP surface as vLLM.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class GenerateKwargs(BaseModel):
    """The seed's ``generate_kwargs`` (transformers-style names), mapped onto sampling params."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int | None = Field(default=None, ge=1)
    max_length: int | None = Field(default=None, ge=1, description="alias of max_new_tokens")
    min_new_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)
    do_sample: bool | None = None
    repetition_penalty: float | None = Field(default=None, gt=0)
    seed: int | None = None
    stop: list[str] | None = None
    ignore_eos: bool | None = None

    def max_tokens(self, default: int) -> int:
        return self.max_new_tokens or self.max_length or default

    def effective_temperature(self) -> float | None:
        return 0.0 if self.do_sample is False else self.temperature


class ChatBody(BaseModel):
    """``POST /chat`` as in Kaito's README: ``{"prompt": "..."}``, answered ``{"Result": "..."}``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    generate_kwargs: GenerateKwargs = Field(default_factory=GenerateKwargs)


class BackendError(Exception):
    """A request the backend refused; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Backend(Protocol):
    runtime: str
    model_name: str
    #: API keys the runtime's own settings carry (vLLM's ``--api-key``); the front enforces them
    #: on every route, together with ``KAITO_API_KEY``.
    api_keys: tuple[str, ...]

    @property
    def max_running(self) -> int:
        """How many requests the engine runs at once (its batch size)."""
        ...

    async def load(self) -> None:
        """Load the model; after this returns the OpenAI app answers requests."""
        ...

    def openai_app(self) -> ASGIApp:
        """The ASGI app serving /v1/* (valid after load)."""
        ...

    async def chat(self, body: ChatBody, raw_request: Any) -> str:
        """Answer one /chat prompt; raises BackendError for a request it refuses."""
        ...

    async def aclose(self) -> None: ...
