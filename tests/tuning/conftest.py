"""Fixtures for the tuning runtime: a tiny model, a loopback data server and a real OCI registry.

The model is built at test time (kaito.contract.tinymodel). The data server is a real HTTP server
on 127.0.0.1 (the downloader is told to allow that one address, as only tests may). The registry
is Debian's docker-registry started by hack/registry.sh with TLS from its own CA and htpasswd
auth, so credentials and certificates are really checked.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kaito.contract.tinymodel import cpu_env

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["what is kaito", "how does tuning work", "hello there", "which gpu node", "tell me a model"]
ANSWER = "kaito tuning adapter answer"


@dataclass
class Registry:
    host: str
    user: str
    password: str
    ca: str
    dir: Path

    def docker_config(self, path: Path, password: str | None = None) -> Path:
        """A dockerconfigjson document as a kubernetes.io/dockerconfigjson Secret holds it."""
        auth = base64.b64encode(f"{self.user}:{password or self.password}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return path

    def tags(self, repo: str) -> list[str] | None:
        """Tags of ``repo`` read over the registry API (None: the repository does not exist)."""
        import requests

        r = requests.get(
            f"https://{self.host}/v2/{repo}/tags/list",
            auth=(self.user, self.password),
            verify=self.ca,
            timeout=30,
        )
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return list(r.json().get("tags") or [])


@dataclass
class DataServer:
    url: str
    root: Path


def conversations(n: int, seed: int = 0) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {
            "messages": [
                {"role": "system", "content": "answer briefly"},
                {"role": "user", "content": rng.choice(QUESTIONS)},
                {"role": "assistant", "content": ANSWER},
            ]
        }
        for _ in range(n)
    ]


def write_parquet(path: Path, rows: list[dict[str, object]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def run_tuning(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python -m kaito.tuning ...`` as a pod runs it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "kaito.tuning", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cpu_env(OMP_NUM_THREADS="2"),
        cwd=ROOT,
    )


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def events(proc: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    out = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


TRAIN_CONFIG = """\
training_config:
  ModelConfig:
    torch_dtype: float32
  TokenizerParams:
    max_length: 96
  LoraConfig:
    r: 8
    lora_alpha: 16
  TrainingArguments:
    max_steps: {steps}
    learning_rate: 0.005
    per_device_train_batch_size: 4
    save_strategy: "no"
    seed: 7
"""


def train_config(path: Path, steps: int = 10) -> Path:
    path.write_text(TRAIN_CONFIG.format(steps=steps))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from kaito.contract.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tuning-model") / "model")


class _Handler(BaseHTTPRequestHandler):
    root: Path

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "http://" + path[len("/redirect/") :])
            self.end_headers()
            return
        if path == "/login.html":
            body = b"<html>please log in</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if path.startswith("/nolength/"):  # streamed without Content-Length: the cap must still hold
            target = self.root / path[len("/nolength/") :]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(target.read_bytes())
            self.close_connection = True
            return
        target = self.root / path.lstrip("/")
        if not target.is_file():
            self.send_error(404)
            return
        body = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="session")
def data_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataServer]:
    root = tmp_path_factory.mktemp("served")
    handler = type("Handler", (_Handler,), {"root": root})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield DataServer(f"http://127.0.0.1:{httpd.server_address[1]}", root)
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    state = tmp_path_factory.mktemp("registry")
    script = ROOT / "hack" / "registry.sh"
    out = subprocess.run(
        ["bash", str(script), "start", str(state)], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in (state / "registry.env").read_text().split())
    try:
        yield Registry(
            env["REGISTRY_HOST"], env["REGISTRY_USER"], env["REGISTRY_PASSWORD"], env["REGISTRY_CA"], state
        )
    finally:
        subprocess.run(["bash", str(script), "stop", str(state)], timeout=60)


@dataclass
class TrainedAdapter:
    dir: Path
    proc: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def trained(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, data_server: DataServer
) -> TrainedAdapter:
    """The seed's flow on a small scale: parquet URL -> /mnt/data -> LoRA -> /mnt/results."""
    work = tmp_path_factory.mktemp("lora")
    write_parquet(data_server.root / "dolly-oai-style.parquet", conversations(48))
    fetched = run_tuning(
        "fetch",
        "--url",
        f"{data_server.url}/dolly-oai-style.parquet?download=true",
        "--dest",
        str(work / "data"),
        "--insecure-allow-address",
        "127.0.0.1",
    )
    assert fetched.returncode == 0, fetched.stderr
    proc = run_tuning(
        "train",
        "--model",
        str(tiny_model),
        "--method",
        "lora",
        "--config",
        str(train_config(work / "training_config.yaml", steps=12)),
        "--data",
        str(work / "data"),
        "--output",
        str(work / "results"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return TrainedAdapter(work / "results", proc)
