"""Session fixtures: a tiny Phi-3 model + LoRA adapter built on the spot, and one real server.

The server is started once per session as a subprocess (``python -m kaito.inference``) on a free
loopback port, exactly as a pod runs it, with real vLLM on the CPU. Nothing is mocked. It runs
with an API key (``KAITO_API_KEY``, as the controller sets it from a Secret), so every test
below also checks that authenticated clients get through; ``Server.headers`` carries the key.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kaito.contract.tinymodel import cpu_env

ADAPTER = "tiny-lora"
API_KEY = "kaito-test-api-key"
#: The session server's shared budget for request bodies held in memory (test_abuse's RSS bound).
BODY_BUDGET_MIB = 64
LOAD_TIMEOUT_S = float(os.environ.get("KAITO_TEST_LOAD_TIMEOUT", "900"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Assets:
    model: Path
    adapters_dir: Path


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    health_codes: list[int] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from kaito.contract.tinymodel import build_tiny_adapter, build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    model = build_tiny_model(root / "model")
    adapters = root / "adapters"
    build_tiny_adapter(model, adapters / ADAPTER)
    (adapters / "not-an-adapter").mkdir()
    return Assets(model, adapters)


def start_server(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "kaito.inference", "--host", "127.0.0.1", "--port", str(port), *args]
    out = log.open("wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or cpu_env())
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, codes: list[int]) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}"
            )
        try:
            code = httpx.get(url + "/health", timeout=5).status_code
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        codes.append(code)
        if code == 200:
            return
        time.sleep(1)
    raise RuntimeError(
        f"server not ready after {LOAD_TIMEOUT_S}s:\n{log.read_text(errors='replace')[-4000:]}"
    )


@pytest.fixture(scope="session")
def server(assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    args = [
        "--model",
        str(assets.model),
        "--served-model-name",
        "tiny-phi3",
        "--adapters-dir",
        str(assets.adapters_dir),
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "2",
        "--max-queue",
        "2",
        "--retry-after",
        "3",
        "--body-timeout",
        "5",
        "--dtype",
        "float32",
        "--max-num-batched-tokens",
        "512",
        "--body-budget-mib",
        str(BODY_BUDGET_MIB),
    ]
    proc, url = start_server(args, log, cpu_env(KAITO_API_KEY=API_KEY))
    srv = Server(url, proc, log, headers={"authorization": f"Bearer {API_KEY}"})
    try:
        wait_ready(proc, url, log, srv.health_codes)
        yield srv
    finally:
        stop(proc)
