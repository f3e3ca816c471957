"""The transformers runtime answers the same HTTP surface (real transformers + peft, real HTTP)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from tests.inference.conftest import ADAPTER, Assets, Server, cpu_env, start_server, stop, wait_ready

pytestmark = pytest.mark.vllm  # needs the inference virtualenv (torch, transformers, peft)


@pytest.fixture(scope="module")
def tserver(assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("tserver") / "server.log"
    args = [
        "--runtime",
        "transformers",
        "--model",
        str(assets.model),
        "--served-model-name",
        "tiny-phi3",
        "--adapters-dir",
        str(assets.adapters_dir),
        "--max-model-len",
        "512",
        "--dtype",
        "float32",
    ]
    proc, url = start_server(args, log, cpu_env(**{ADAPTER: "1.0"}))
    srv = Server(url, proc, log)
    try:
        wait_ready(proc, url, log, srv.health_codes)
        yield srv
    finally:
        stop(proc)


def test_same_surface(tserver: Server) -> None:
    from openai import OpenAI

    c = OpenAI(base_url=tserver.url + "/v1", api_key="x", max_retries=0, timeout=300)
    assert {m.id for m in c.models.list().data} == {"tiny-phi3", ADAPTER}
    chat = c.chat.completions.create(
        model="tiny-phi3", messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0
    )
    assert chat.choices[0].message.content is not None
    kw = {"prompt": "the model answer", "max_tokens": 8, "temperature": 0, "extra_body": {"ignore_eos": True}}
    base = c.completions.create(model="tiny-phi3", **kw).choices[0].text  # type: ignore[call-overload]
    lora = c.completions.create(model=ADAPTER, **kw).choices[0].text  # type: ignore[call-overload]
    assert base and lora and base != lora
    pieces = [
        x.choices[0].delta.content
        for x in c.chat.completions.create(
            model="tiny-phi3",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=6,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        if x.choices and x.choices[0].delta.content
    ]
    assert len(pieces) >= 2
    r = httpx.post(
        tserver.url + "/chat",
        json={"prompt": "YOUR QUESTION HERE", "generate_kwargs": {"max_new_tokens": 4}},
        timeout=300,
    )
    assert r.status_code == 200 and isinstance(r.json()["Result"], str)
    for path, body in (
        ("/chat", {}),
        ("/v1/completions", {"prompt": "x", "max_tokens": 100000}),
        ("/v1/completions", {"prompt": "kaito " * 600, "max_tokens": 4}),
    ):
        assert httpx.post(tserver.url + path, json=body, timeout=60).status_code == 400
    assert httpx.post(tserver.url + "/v1/completions", content=b"{x", timeout=60).status_code == 400
    assert httpx.get(tserver.url + "/health").status_code == 200
    assert "kaito_inference_requests_total" in httpx.get(tserver.url + "/metrics").text
