"""The vLLM runtime over real HTTP: OpenAI client, the seed's /chat, adapters, limits, metrics."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tests.inference.conftest import ADAPTER, API_KEY, Server

pytestmark = pytest.mark.vllm
BASE = "tiny-phi3"


def client(server: Server):  # type: ignore[no-untyped-def]
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


def test_health_was_503_while_loading_then_200(server: Server) -> None:
    assert server.health_codes[0] == 503, server.health_codes
    assert server.health_codes[-1] == 200
    assert httpx.get(server.url + "/health").status_code == 200


def test_model_list_has_base_and_adapter(server: Server) -> None:
    ids = [m.id for m in client(server).models.list().data]
    assert BASE in ids and ADAPTER in ids
    assert "not-an-adapter" not in ids


def test_chat_completion(server: Server) -> None:
    r = client(server).chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "hello kaito"}], max_tokens=8, temperature=0
    )
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage is not None and r.usage.completion_tokens >= 1


def test_completion(server: Server) -> None:
    r = client(server).completions.create(model=BASE, prompt="the kubernetes", max_tokens=8, temperature=0)
    assert r.choices[0].text
    assert (r.usage is not None and r.usage.completion_tokens == 8) or r.choices[0].finish_reason == "stop"


def test_streaming_chat(server: Server) -> None:
    stream = client(server).chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "stream please"}],
        max_tokens=12,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2
    assert "".join(pieces)


def test_streaming_completion(server: Server) -> None:
    stream = client(server).completions.create(
        model=BASE, prompt="hello", max_tokens=6, temperature=0, stream=True, extra_body={"ignore_eos": True}
    )
    assert len([c for c in stream if c.choices and c.choices[0].text]) >= 2


def test_seed_chat_body(server: Server) -> None:
    r = httpx.post(
        server.url + "/chat", json={"prompt": "YOUR QUESTION HERE"}, headers=server.headers, timeout=300
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["Result"], str)


def test_chat_generate_kwargs(server: Server) -> None:
    body = {
        "prompt": "what is kaito",
        "generate_kwargs": {"max_new_tokens": 5, "do_sample": False, "ignore_eos": True},
    }
    a = httpx.post(server.url + "/chat", json=body, headers=server.headers, timeout=300)
    b = httpx.post(server.url + "/chat", json=body, headers=server.headers, timeout=300)
    assert a.status_code == 200, a.text
    assert a.json()["Result"] and a.json() == b.json()  # greedy is deterministic


def test_adapter_changes_output(server: Server) -> None:
    c = client(server)
    kw = {
        "prompt": "the model answer",
        "max_tokens": 16,
        "temperature": 0,
        "extra_body": {"ignore_eos": True},
    }
    base = c.completions.create(model=BASE, **kw).choices[0].text  # type: ignore[call-overload]
    lora = c.completions.create(model=ADAPTER, **kw).choices[0].text  # type: ignore[call-overload]
    again = c.completions.create(model=ADAPTER, **kw).choices[0].text  # type: ignore[call-overload]
    assert base and lora
    assert lora == again
    assert lora != base


BAD_BODIES = [
    ("/v1/chat/completions", b"{not json"),
    ("/v1/chat/completions", b'{"model": "tiny-phi3"}'),
    ("/v1/chat/completions", b'{"model": "tiny-phi3", "messages": "nope"}'),
    ("/v1/completions", b'{"model": "tiny-phi3", "prompt": "x", "max_tokens": 100000}'),
    ("/v1/completions", b'{"model": "tiny-phi3", "prompt": "x", "temperature": -3}'),
    ("/chat", b"{}"),
    ("/chat", b"[1, 2]"),
    ("/chat", b'{"prompt": ""}'),
    ("/chat", b'{"prompt": "x", "generate_kwargs": {"no_such_arg": 1}}'),
    ("/chat", b'{"prompt": "x", "generate_kwargs": {"max_new_tokens": 100000}}'),
]


@pytest.mark.parametrize(("path", "body"), BAD_BODIES)
def test_bad_bodies_are_400(server: Server, path: str, body: bytes) -> None:
    headers = {"content-type": "application/json", **server.headers}
    r = httpx.post(server.url + path, content=body, headers=headers, timeout=60)
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.text
    assert server.alive()


def test_prompt_longer_than_context_is_400(server: Server) -> None:
    long_prompt = "kaito workspace " * 600  # > 512-token context
    for path, body in (
        ("/v1/completions", {"model": BASE, "prompt": long_prompt, "max_tokens": 4}),
        ("/v1/chat/completions", {"model": BASE, "messages": [{"role": "user", "content": long_prompt}]}),
        ("/chat", {"prompt": long_prompt}),
    ):
        r = httpx.post(server.url + path, json=body, headers=server.headers, timeout=60)
        assert r.status_code == 400, (path, r.status_code, r.text)
    assert httpx.get(server.url + "/health").status_code == 200


def test_unknown_model_is_404(server: Server) -> None:
    body = {"model": "nope", "prompt": "x"}
    r = httpx.post(server.url + "/v1/completions", json=body, headers=server.headers, timeout=60)
    assert r.status_code == 404


async def test_overload_gives_429_with_retry_after(server: Server) -> None:
    body = {"model": BASE, "prompt": "overload", "max_tokens": 64, "ignore_eos": True}
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=600) as c:
        rs = await asyncio.gather(*(c.post("/v1/completions", json=body) for _ in range(10)))
        codes = [r.status_code for r in rs]
        assert codes.count(429) >= 1, codes
        assert codes.count(200) >= 4, codes  # max_num_seqs 2 + max_queue 2 admitted
        assert set(codes) <= {200, 429}
        rejected = next(r for r in rs if r.status_code == 429)
        assert rejected.headers["retry-after"] == "3"
        assert "overloaded" in rejected.json()["error"]["message"]
        after = await c.post("/v1/completions", json={**body, "max_tokens": 2})
        assert after.status_code == 200


def test_metrics(server: Server) -> None:
    httpx.post(server.url + "/chat", json={"prompt": "metrics"}, headers=server.headers, timeout=300)
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "kaito_inference_requests_total",
        "kaito_inference_request_duration_seconds_bucket",
        "kaito_inference_time_to_first_byte_seconds_bucket",
        'kaito_inference_tokens_total{kind="generation"}',
        "kaito_inference_queue_depth",
        "kaito_inference_rejected_total",
        "vllm:num_requests_waiting",
        "vllm:generation_tokens_total",
    ):
        assert name in text, name
    gen = [ln for ln in text.splitlines() if ln.startswith('kaito_inference_tokens_total{kind="generation"}')]
    assert float(gen[0].split()[-1]) > 0


#: Routes vLLM mounts for a generating model, and kaito's /chat; all need the key.
KEYED_ROUTES = (
    ("POST", "/chat"),
    ("POST", "/invocations"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("GET", "/v1/models"),
    ("GET", "/version"),
)


def test_api_key_guards_every_route_but_health_and_metrics(server: Server) -> None:
    """Issue 21 (4): the key is required on kaito's and vLLM's routes alike (vLLM's own
    --api-key covered only /v1, leaving /chat and /invocations open); probes and Prometheus
    need none."""
    for path in ("/health", "/metrics"):
        assert httpx.get(server.url + path, timeout=60).status_code == 200, path
    body = {"model": BASE, "prompt": "x", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    for method, path in KEYED_ROUTES:
        for headers, challenge in (
            ({}, 'Bearer realm="kaito"'),
            ({"authorization": "Bearer wrong"}, 'Bearer realm="kaito", error="invalid_token"'),
            ({"authorization": API_KEY}, 'Bearer realm="kaito"'),  # no scheme: no token presented
        ):
            r = httpx.request(method, server.url + path, json=body, headers=headers, timeout=60)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text[:200])
            assert r.headers["www-authenticate"] == challenge, (path, r.headers)
        ok = httpx.request(method, server.url + path, json=body, headers=server.headers, timeout=300)
        assert ok.status_code != 401, (method, path, ok.text[:200])
    lower = {"authorization": f"bearer {API_KEY}"}  # the scheme is case-insensitive
    r = httpx.post(server.url + "/chat", json={"prompt": "hi"}, headers=lower, timeout=300)
    assert r.status_code == 200, r.text
