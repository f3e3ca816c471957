"""A stand-in for the Hugging Face Hub's file API, for tests that must never reach the internet.

Speaks the two paths kaito reads (``kaito.api.hub``) as the Hub does:

* ``GET /{org}/{model}/resolve/{revision}/config.json``
* ``GET /api/models/{org}/{model}/tree/{revision}?recursive=true`` (a JSON list of
  ``{"type", "path", "size"}``)

A gated repo answers 401 without a token and 403 for a wrong one, with ``X-Error-Code:
GatedRepo``; an unknown repo 404 with ``X-Error-Code: RepoNotFound``; an unknown revision 404
with ``RevisionNotFound``. Every request is recorded (path and Authorization header).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

#: microsoft/Phi-3-mini-4k-instruct's config.json (the fields that matter) and weight files.
PHI3_MINI_CONFIG: dict[str, Any] = {
    "architectures": ["Phi3ForCausalLM"],
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "max_position_embeddings": 4096,
    "model_type": "phi3",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "rope_theta": 10000.0,
    "sliding_window": 2047,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 32064,
}
PHI3_MINI_FILES = [
    ("config.json", 931),
    ("model-00001-of-00002.safetensors", 4972489328),
    ("model-00002-of-00002.safetensors", 2669692552),
    ("model.safetensors.index.json", 16331),
    ("tokenizer.json", 1844409),
]


@dataclass
class Repo:
    config: dict[str, Any]
    files: list[tuple[str, int]]
    token: str | None = None  # gated: the one token that may read it
    revisions: tuple[str, ...] = ("main",)


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""
    #: repo -> (Hub base URL, repo) it redirects to (307), as for a renamed repo
    moved: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: entries per listing page (the Hub pages long listings with a Link: <...>; rel="next" header)
    page_size: int = 1000

    def add(
        self, repo: str, config: dict[str, Any], files: list[tuple[str, int]] | None = None, **kw: Any
    ) -> None:
        self.repos[repo] = Repo(
            config, files if files is not None else [("model.safetensors", 2_000_000_000)], **kw
        )


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any = None, code: str = "", link: str = "") -> None:
            data = json.dumps(body if body is not None else {"error": code}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code:
                self.send_header("X-Error-Code", code)
            if link:
                self.send_header("Link", f'<{link}>; rel="next"')
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization")
            hub.requests.append((self.path, auth))
            path = urlsplit(self.path).path
            if path.startswith("/api/models/"):
                parts = path[len("/api/models/") :].split("/")
                repo, kind, rev = "/".join(parts[:2]), parts[2] if len(parts) > 2 else "", "/".join(parts[3:])
                if kind != "tree":
                    return self._send(404, code="EntryNotFound")
            else:
                parts = path.lstrip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve" or parts[-1] != "config.json":
                    return self._send(404, code="EntryNotFound")
                repo, kind, rev = "/".join(parts[:2]), "config", "/".join(parts[3:-1])
            if repo in hub.moved:
                base, target = hub.moved[repo]
                location = (
                    f"{base}/{target}/resolve/{rev}/config.json"
                    if kind == "config"
                    else f"{base}/api/models/{target}/tree/{rev}?recursive=true"
                )
                self.send_response(307)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            rev = unquote(rev)
            found = hub.repos.get(repo)
            if found is None:
                return self._send(404, code="RepoNotFound")
            if found.token is not None and auth != f"Bearer {found.token}":
                return self._send(401 if auth is None else 403, code="GatedRepo")
            if rev not in found.revisions:
                return self._send(404, code="RevisionNotFound")
            if kind == "config":
                return self._send(200, found.config)
            start = int(parse_qs(urlsplit(self.path).query).get("cursor", ["0"])[0])
            page = found.files[start : start + hub.page_size]
            more = start + hub.page_size < len(found.files)
            link = f"{hub.url}{path}?recursive=true&cursor={start + hub.page_size}" if more else ""
            return self._send(200, [{"type": "file", "path": p, "size": s} for p, s in page], link=link)

    return Handler


@contextmanager
def fake_hub() -> Iterator[FakeHub]:
    """A running fake Hub on 127.0.0.1; ``hub.url`` is its HF_ENDPOINT."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
