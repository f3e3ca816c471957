"""Tune -> push -> pull as the adapter init container does -> real vLLM serves the adapter.

The adapter trained from a parquet URL is pushed to the real registry, unpacked from the image's
adapter folder into ``<adapters-dir>/<name>/`` (what the inference pod's init container does), and
the inference runtime started on the same tiny base model must answer a greedy prompt differently
with the adapter (strength 1.0) than without it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.inference.conftest import start_server, stop, wait_ready
from tests.tuning.conftest import Registry, TrainedAdapter, last_line, run_tuning

pytestmark = pytest.mark.vllm
ADAPTER = "tuned-phi3"


# Training, a push, a pull and a vLLM start on two shared cores: more than pytest's default 600 s
# when the machine is busy (the server's own load deadline is 900 s).
@pytest.mark.timeout(2400)
def test_tuned_adapter_image_changes_the_served_answer(
    tmp_path: Path, registry: Registry, trained: TrainedAdapter, tiny_model: Path
) -> None:
    image = f"{registry.host}/adapters/{ADAPTER}:0.0.1"
    secret = registry.docker_config(tmp_path / ".dockerconfigjson")
    pushed = run_tuning(
        "push",
        "--image",
        image,
        "--results",
        str(trained.dir),
        "--docker-config",
        str(secret),
        "--ca-file",
        registry.ca,
    )
    assert pushed.returncode == 0, last_line(pushed)
    adapters = tmp_path / "adapter"
    pulled = run_tuning(
        "pull",
        "--image",
        image,
        "--dest",
        str(adapters / ADAPTER),
        "--docker-config",
        str(secret),
        "--ca-file",
        registry.ca,
    )
    assert pulled.returncode == 0, last_line(pulled)

    log = tmp_path / "server.log"
    args = [
        "--model",
        str(tiny_model),
        "--served-model-name",
        "tiny-phi3",
        "--adapters-dir",
        str(adapters),
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "2",
        "--dtype",
        "float32",
        "--max-num-batched-tokens",
        "512",
    ]
    proc, url = start_server(args, log)
    try:
        wait_ready(proc, url, log, [])
        ids = [m["id"] for m in httpx.get(url + "/v1/models", timeout=60).json()["data"]]
        assert ADAPTER in ids, ids

        def answer(model: str) -> str:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "what is kaito"}],
                "max_tokens": 12,
                "temperature": 0,
            }
            r = httpx.post(url + "/v1/chat/completions", json=body, timeout=300)
            assert r.status_code == 200, r.text
            return str(r.json()["choices"][0]["message"]["content"])

        base, tuned = answer("tiny-phi3"), answer(ADAPTER)
        assert tuned != base, (base, tuned)
        assert answer(ADAPTER) == tuned  # greedy: the difference is the adapter, not sampling noise
    finally:
        stop(proc)
