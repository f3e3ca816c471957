"""The inference front without vLLM: API key, guarded routes, shared body budget (issue 21, 4-5).

The front (``kaito.inference.app.InferenceApp``) is served by a real uvicorn on a loopback port
in front of a stand-in OpenAI app that mounts the routes vLLM mounts (generation, tokenization,
pooling, scoring, ``/invocations``, a parametrised route and a sub-app under a Mount). Clients
are real sockets; slow and oversized bodies are really sent. The real-vLLM counterparts are in
tests/inference/test_abuse.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Mount

from kaito.envtest import eventually
from kaito.inference.app import MAX_BODY_BYTES, InferenceApp, body_routes
from kaito.inference.backend import ASGIApp, ChatBody
from kaito.inference.overload import BodyBudget, OverloadGuard

KEY = "s3cret-key-1"
MIB = 1024 * 1024
BUDGET = 8 * MIB
#: Body-taking routes the stand-in mounts, as vLLM does for generating and pooling models.
BODY_ROUTES = (
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/responses",
    "/invocations",
    "/tokenize",
    "/detokenize",
    "/v1/embeddings",
    "/pooling",
    "/score",
    "/rerank",
    "/v1/score",
    "/v2/rerank",
    "/classify",
)
EVERY_GUARDED = (*BODY_ROUTES, "/chat", "/v1/responses/abc/cancel", "/sub/generate")


def stand_in_openai_app(hold: asyncio.Event) -> FastAPI:
    app = FastAPI()

    async def answer(request: Request) -> JSONResponse:
        body = await request.body()
        if request.headers.get("x-hold"):
            await hold.wait()
        return JSONResponse({"bytes": len(body)})

    for path in BODY_ROUTES:
        app.add_api_route(path, answer, methods=["POST"])
    app.add_api_route("/v1/responses/{response_id}/cancel", answer, methods=["POST"])
    app.add_api_route("/v1/models", answer, methods=["GET"])
    app.add_api_route("/ping", answer, methods=["POST"])  # SageMaker's health check
    sub = FastAPI()
    sub.add_api_route("/generate", answer, methods=["POST"])
    app.router.routes.append(Mount("/sub", app=sub))
    return app


class StandInBackend:
    runtime = "stand-in"
    model_name = "stand-in"
    api_keys: tuple[str, ...] = ()
    max_running = 1

    def __init__(self) -> None:
        self.hold = asyncio.Event()
        self.app = stand_in_openai_app(self.hold)

    async def load(self) -> None:
        return None

    def openai_app(self) -> ASGIApp:
        return self.app

    async def chat(self, body: ChatBody, raw_request: Any) -> str:
        return "hi"

    async def aclose(self) -> None:
        return None


class Front:
    def __init__(self, app: InferenceApp, backend: StandInBackend, url: str) -> None:
        self.app, self.backend, self.url = app, backend, url
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(app: InferenceApp) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, "uvicorn listening", timeout=30, interval=0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def make_app(api_keys: tuple[str, ...] = ()) -> tuple[InferenceApp, StandInBackend]:
    backend = StandInBackend()
    app = InferenceApp(
        backend,
        OverloadGuard(max_running=1, max_queue=0, retry_after=7),
        body_timeout_s=1.5,
        api_keys=api_keys,
        body_budget=BodyBudget(BUDGET, retry_after=7),
    )
    app.mark_ready()
    return app, backend


@pytest.fixture(scope="module")
async def front() -> AsyncIterator[Front]:
    app, backend = make_app()
    async for url in serve(app):
        yield Front(app, backend, url)


@pytest.fixture(scope="module")
async def keyed() -> AsyncIterator[Front]:
    app, backend = make_app(api_keys=(KEY, "second-key"))
    async for url in serve(app):
        yield Front(app, backend, url)


async def raw_exchange(front: Front, head: bytes, body: bytes = b"", wait: float = 10.0) -> bytes:
    """Send ``head`` + ``body`` on a fresh connection; what the server answers until it closes
    the connection or ``wait`` passes."""
    reader, writer = await asyncio.open_connection(front.host, front.port)
    try:
        writer.write(head + body)
        await writer.drain()
        data = b""
        try:
            async with asyncio.timeout(wait):
                while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    data += chunk
        except TimeoutError:
            pass
        return data
    finally:
        writer.close()


def post_head(path: str, length: int) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {length}\r\n\r\n").encode()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


# --------------------------------------------------------------------------- which routes


def test_guarded_routes_are_derived_from_the_mounted_apps() -> None:
    app, _ = make_app()
    routes = app.routes
    for path in EVERY_GUARDED:
        assert routes.endpoint(path) is not None, path
    assert routes.endpoint("/v1/models") is None  # GET only: nothing to read or admit
    assert routes.endpoint("/health") is None and routes.endpoint("/metrics") is None
    assert routes.endpoint("/v1/chat/completions") == "chat_completions"
    assert routes.endpoint("/v1/completions") == "completions"
    assert routes.endpoint("/chat") == "chat"
    assert routes.endpoint("/invocations") == "invocations"
    assert routes.endpoint("/v1/responses/abc/cancel") == "responses_response_id_cancel"
    # a route the model does not mount is not guessed at
    assert body_routes([FastAPI()]).endpoint("/v1/completions") is None


async def test_every_body_route_gets_admission(front: Front) -> None:
    """The one admission slot is held by a generation; every other body route answers 429 with
    Retry-After (before: only four exact paths were admitted, the rest went straight through)."""
    async with httpx.AsyncClient(base_url=front.url, timeout=30) as c:
        holder = asyncio.create_task(c.post("/v1/completions", json={}, headers={"x-hold": "1"}))
        await eventually(lambda: front.app.guard.in_flight >= 1, "the slot held", timeout=30, interval=0.01)
        try:
            for path in EVERY_GUARDED:
                r = await c.post(path, json={"prompt": "x"})
                assert r.status_code == 429, (path, r.status_code, r.text)
                assert r.headers["retry-after"] == "7", path
            # a health check is not work for the engine: capped, but answered while full
            assert (await c.post("/ping", json={})).status_code == 200
        finally:
            front.backend.hold.set()
        assert (await holder).status_code == 200
        front.backend.hold.clear()
        for path in EVERY_GUARDED:
            r = await c.post(path, json={"prompt": "x"})
            assert r.status_code == 200 if path != "/chat" else r.status_code in (200, 400), (path, r.text)
        metrics = (await c.get("/metrics")).text
    for label in ("tokenize", "invocations", "embeddings", "rerank", "sub_generate"):
        assert f'kaito_inference_requests_total{{code="429",endpoint="{label}"}}' in metrics, label


@pytest.mark.parametrize("path", EVERY_GUARDED)
async def test_every_body_route_has_the_body_cap(front: Front, path: str) -> None:
    """An announced body over the cap is refused before a byte of it is read."""
    response = await raw_exchange(front, post_head(path, MAX_BODY_BYTES + 1), wait=5)
    assert status_of(response) == 413, (path, response[:200])


@pytest.mark.parametrize("path", ["/invocations", "/tokenize", "/v1/embeddings", "/score", "/sub/generate"])
async def test_every_body_route_has_the_body_timeout(front: Front, path: str) -> None:
    """A body that never finishes gets 408 at the body timeout (1.5 s here), on every route."""
    started = asyncio.get_running_loop().time()
    response = await raw_exchange(front, post_head(path, 1000), b'{"prompt": "', wait=6)
    took = asyncio.get_running_loop().time() - started
    assert status_of(response) == 408, (path, response[:200])
    assert took < 5, took


async def test_bodies_in_memory_share_one_budget(front: Front) -> None:
    """Twelve connections each send 3 MiB of a body and stop one byte short: together 36 MiB
    against an 8 MiB budget. The budget is never exceeded, the connections beyond it get 503 with
    Retry-After, the rest 408 at the body timeout; afterwards the budget is empty again."""
    size = 3 * MIB
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, front.app.budget.used)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    try:
        paths = [BODY_ROUTES[i % len(BODY_ROUTES)] for i in range(12)]
        answers = await asyncio.gather(
            *(raw_exchange(front, post_head(p, size), b"x" * (size - 1), wait=8) for p in paths)
        )
    finally:
        watcher.cancel()
    codes = [status_of(a) for a in answers]
    assert set(codes) <= {408, 503}, codes
    assert codes.count(503) >= 12 - BUDGET // size, codes
    assert all(b"retry-after: 7" in a.lower() for a in answers if status_of(a) == 503)
    assert 0 < peak <= BUDGET, peak
    assert front.app.budget.used == 0
    async with httpx.AsyncClient(base_url=front.url, timeout=30) as c:
        r = await c.post("/tokenize", content=b"y" * (2 * MIB))
        assert r.status_code == 200 and r.json() == {"bytes": 2 * MIB}
        assert 'kaito_inference_body_budget_rejected_total' in (await c.get("/metrics")).text
    assert front.app.budget.used == 0


# --------------------------------------------------------------------------- API key

OPEN = ("/health", "/metrics")


async def test_without_a_key_every_route_stays_open(front: Front) -> None:
    async with httpx.AsyncClient(base_url=front.url, timeout=30) as c:
        assert (await c.post("/invocations", json={})).status_code == 200
        assert (await c.get("/v1/models")).status_code == 200


async def test_api_key_guards_every_route_but_health_and_metrics(keyed: Front) -> None:
    async with httpx.AsyncClient(base_url=keyed.url, timeout=30) as c:
        for path in OPEN:
            assert (await c.get(path)).status_code == 200, path
        for path in (*EVERY_GUARDED, "/v1/models", "/no/such/route"):
            method = "GET" if path in ("/v1/models", "/no/such/route") else "POST"
            r = await c.request(method, path, json={"prompt": "x"})
            assert r.status_code == 401, (path, r.status_code, r.text)
            assert r.headers["www-authenticate"] == 'Bearer realm="kaito"', path
            assert r.json()["error"]["type"] == "authentication_error"
            wrong = await c.request(method, path, json={}, headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert wrong.headers["www-authenticate"] == 'Bearer realm="kaito", error="invalid_token"'
            for bad in (KEY, f"Basic {KEY}", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", "Bearer"):
                r = await c.request(method, path, json={}, headers={"authorization": bad})
                assert r.status_code == 401, (path, bad)
        for auth in (f"Bearer {KEY}", f"bearer {KEY}", "Bearer second-key"):
            r = await c.post("/invocations", json={}, headers={"authorization": auth})
            assert r.status_code == 200, (auth, r.text)
        r = await c.post("/chat", json={"prompt": "x"}, headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.json() == {"Result": "hi"}
        assert "kaito_inference_unauthorized_total" in (await c.get("/metrics")).text


async def test_api_key_is_checked_before_the_body_is_read(keyed: Front) -> None:
    """An unauthenticated client cannot make the server buffer anything: 401 at once, the
    budget untouched, even for a body announced at the full cap."""
    response = await raw_exchange(keyed, post_head("/invocations", MAX_BODY_BYTES), b"x" * MIB, wait=5)
    assert status_of(response) == 401, response[:200]
    assert keyed.app.budget.used == 0


async def test_api_key_required_while_loading() -> None:
    backend = StandInBackend()
    app = InferenceApp(backend, OverloadGuard(max_running=1, max_queue=0), api_keys=(KEY,))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/health")).status_code == 503  # loading, and open to the kubelet
        assert (await c.post("/v1/completions", json={})).status_code == 401
        ok = await c.post("/v1/completions", json={}, headers={"authorization": f"Bearer {KEY}"})
        assert ok.status_code == 503


# --------------------------------------------------------------------------- settings


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from kaito.contract import ENV_API_KEY
    from kaito.inference.config import ConfigError, parse_settings

    monkeypatch.delenv(ENV_API_KEY, raising=False)
    assert parse_settings(["--model", "m"]).api_keys == []
    monkeypatch.setenv(ENV_API_KEY, "  from-a-secret-file\n")
    settings = parse_settings(["--model", "m", "--body-budget-mib", "64"])
    assert settings.api_keys == ["from-a-secret-file"]
    assert settings.body_budget_mib == 64
    assert "from-a-secret-file" not in repr(settings)
    monkeypatch.setenv(ENV_API_KEY, " \n")
    with pytest.raises(ConfigError, match="set but empty"):
        parse_settings(["--model", "m"])
    monkeypatch.delenv(ENV_API_KEY)
    with pytest.raises(ConfigError, match="body_budget_mib"):
        parse_settings(["--model", "m", "--body-budget-mib", "0"])


def test_vllm_api_key_moves_to_the_front(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's --api-key guarded only its /v1 routes; the front takes it over for every route."""
    import argparse

    from kaito.inference.vllm_backend import _take_vllm_api_keys

    monkeypatch.setenv("VLLM_API_KEY", "env-key")
    args = argparse.Namespace(api_key=["flag-key"])
    assert _take_vllm_api_keys(args) == ("flag-key", "env-key")
    assert args.api_key is None  # vLLM's own middleware is not installed
    assert "VLLM_API_KEY" not in __import__("os").environ
    assert _take_vllm_api_keys(argparse.Namespace(api_key="one")) == ("one",)
    assert _take_vllm_api_keys(argparse.Namespace(api_key=None)) == ()
