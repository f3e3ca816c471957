"""Input images are the Workspace author's (issue 21, hole 6): ``pull`` caps what a layer may
download and what the data may unpack to, and checks registry blob redirects with the dataset
downloader's address rules.

The images are pushed to a real registry (hack/registry.sh: distribution with TLS and htpasswd).
The redirect tests run a second one with distribution's redirect storage middleware, as registries
on object storage answer blob GETs, pointing at a loopback HTTP server that serves the registry's
storage folder (or bounces once more to the cloud metadata address).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.tuning.conftest import ROOT, Registry, last_line, run_tuning

from kaito.contract.tuning import CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE
from kaito.tuning import oci

MiB = 1024 * 1024
ALLOW = ("--insecure-allow-address", "127.0.0.1")


def tar_gz(files: dict[str, int | bytes]) -> bytes:
    """A gzip'd tar with ``data/<name>``: bytes as given, or that many zero bytes (streamed, so a
    256 MiB member never sits in memory)."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, body in files.items():
            info = tarfile.TarInfo(f"data/{name}")
            if isinstance(body, bytes):
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
            else:
                info.size = body
                tar.addfile(info, _Zeros(body))
    return raw.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def push_image(registry: Registry, repo: str, layers: list[bytes], tmp: Path) -> str:
    """Push an image with ``layers`` (gzip'd tars) through oras; returns its reference."""
    image = f"{registry.host}/{repo}:1"
    reg = oci.Registry.for_image(image, registry.docker_config(tmp / "push.json"), ca_file=registry.ca)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    container = reg.client.get_container(image)
    descs = []
    for media, blob in [(CONFIG_MEDIA_TYPE, config), *((LAYER_MEDIA_TYPE, layer) for layer in layers)]:
        desc = {"mediaType": media, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob)}
        path = tmp / desc["digest"].split(":")[1]
        path.write_bytes(blob)
        reg.ok(reg.client.upload_blob(str(path), container, desc), "upload")
        descs.append(desc)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST_MEDIA_TYPE,
        "config": descs[0],
        "layers": descs[1:],
    }
    reg.ok(reg.client.upload_manifest(manifest, container), "manifest")
    return image


def pull(registry: Registry, image: str, dest: Path, tmp: Path, *extra: str) -> Any:
    return run_tuning(
        "pull",
        "--image",
        image,
        "--dest",
        str(dest),
        "--docker-config",
        str(registry.docker_config(tmp / "pull.json")),
        "--ca-file",
        registry.ca,
        *extra,
        timeout=300,
    )


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_gzip_bomb_layer_is_refused_at_the_data_cap(registry: Registry, tmp_path: Path) -> None:
    # Issue 21's numbers: about 255 KB on the wire, 256 MiB once unpacked.
    bomb = tar_gz({"train.jsonl": b'{"messages": []}\n', "bomb.bin": 256 * MiB})
    assert len(bomb) < 1 * MiB
    image = push_image(registry, "bombs/zeros", [bomb], tmp_path)
    dest = tmp_path / "data"
    proc = pull(registry, image, dest, tmp_path, "--max-data-bytes", str(64 * MiB))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = last_line(proc)
    assert line.startswith(f"kaito-tuning: image {image}: unpacking bomb.bin takes the data past the ")
    assert f"{64 * MiB}-byte cap (pull --max-data-bytes)" in line
    # Refused from the tar header: nothing of it was written, and what came before is gone too.
    assert files_under(dest) == []


def test_layer_over_the_download_cap_is_refused(registry: Registry, tmp_path: Path) -> None:
    big = tar_gz({"train.bin": os.urandom(2 * MiB)})
    image = push_image(registry, "bombs/big", [big], tmp_path)
    dest = tmp_path / "data"
    proc = pull(registry, image, dest, tmp_path, "--max-layer-bytes", str(1 * MiB))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"is {len(big)} bytes, over the {MiB}-byte download cap (pull --max-layer-bytes)" in last_line(
        proc
    )
    assert files_under(dest) == []
    # Within the caps the same image unpacks byte for byte.
    ok = pull(registry, image, dest, tmp_path, "--max-layer-bytes", str(4 * MiB))
    assert ok.returncode == 0, ok.stderr
    assert files_under(dest) == ["train.bin"]


# --------------------------------------------------------------------------- blob redirects


@dataclass
class BlobStore:
    """The loopback server a redirecting registry sends blob downloads to."""

    url: str
    root: Path
    gets: list[str] = field(default_factory=list)
    #: when set, every request is answered with a redirect to this base URL instead
    bounce_to: str | None = None


@dataclass
class RedirectingRegistry:
    registry: Registry
    store: BlobStore
    image: str
    body: bytes


def _store_handler(store: BlobStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _answer(self, with_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if with_body:
                store.gets.append(path)
            if store.bounce_to:
                self.send_response(302)
                self.send_header("Location", store.bounce_to + path)
                self.end_headers()
                return
            target = store.root / path.lstrip("/")
            if ".." in path or not target.is_file():
                self.send_error(404)
                return
            body = target.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

    return Handler


@pytest.fixture(scope="module")
def redirecting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedirectingRegistry]:
    state = tmp_path_factory.mktemp("redirecting-registry")
    store = BlobStore("", state / "storage")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _store_handler(store))
    store.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    script = ROOT / "hack" / "registry.sh"
    env = {**os.environ, "REGISTRY_REDIRECT_BASEURL": store.url}
    out = subprocess.run(
        ["bash", str(script), "start", str(state)], capture_output=True, text=True, timeout=900, env=env
    )
    assert out.returncode == 0, out.stderr
    values = dict(line.split("=", 1) for line in (state / "registry.env").read_text().split())
    registry = Registry(
        values["REGISTRY_HOST"],
        values["REGISTRY_USER"],
        values["REGISTRY_PASSWORD"],
        values["REGISTRY_CA"],
        state,
    )
    body = b'{"messages": [{"role": "user", "content": "hi"}]}\n' * 50
    try:
        with tempfile.TemporaryDirectory() as tmp:
            image = push_image(registry, "data/redirected", [tar_gz({"train.jsonl": body})], Path(tmp))
        yield RedirectingRegistry(registry, store, image, body)
    finally:
        subprocess.run(["bash", str(script), "stop", str(state)], timeout=60)
        httpd.shutdown()
        httpd.server_close()


def test_blob_redirect_to_a_loopback_address_is_refused(
    redirecting: RedirectingRegistry, tmp_path: Path
) -> None:
    r = redirecting
    r.store.bounce_to = None
    before = len(r.store.gets)
    dest = tmp_path / "data"
    proc = pull(r.registry, r.image, dest, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = last_line(proc)
    assert "the registry redirected layer sha256:" in line and "to a refused place" in line
    assert f"{r.store.url}/docker/registry/v2/blobs/sha256/" in line and "loopback address" in line
    # Refused before connecting: the redirect target never saw the request.
    assert len(r.store.gets) == before
    assert files_under(dest) == []


def test_blob_redirect_bouncing_to_the_metadata_address_is_refused(
    redirecting: RedirectingRegistry, tmp_path: Path
) -> None:
    r = redirecting
    r.store.bounce_to = "http://169.254.169.254"
    try:
        proc = pull(r.registry, r.image, tmp_path / "data", tmp_path, *ALLOW)
    finally:
        r.store.bounce_to = None
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = last_line(proc)
    assert "to a refused place" in line and "169.254.169.254" in line and "metadata address" in line


def test_allowed_blob_redirect_is_followed_without_credentials_byte_for_byte(
    redirecting: RedirectingRegistry, tmp_path: Path
) -> None:
    r = redirecting
    r.store.bounce_to = None
    before = len(r.store.gets)
    dest = tmp_path / "data"
    proc = pull(r.registry, r.image, dest, tmp_path, *ALLOW)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "train.jsonl").read_bytes() == r.body
    assert files_under(dest) == ["train.jsonl"]
    assert [g for g in r.store.gets[before:] if "/blobs/sha256/" in g], "the download was not redirected"
