"""hack/images.sh builds the node-test images (pause, curl) without Docker and pushes them to a
real registry (hack/registry.sh: distribution with TLS); the manifests and configs pulled back over
HTTPS carry the entrypoints, the pause binary from the pushed layer runs, and OUT= writes OCI
archives. Without docker/podman the script builds with buildah on its mmdebstrap base, installing
both with apt-get as root: cold about 1.5 minutes here, warm a few seconds."""

from __future__ import annotations

import io
import json
import os
import shutil
import ssl
import subprocess
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.images

REPO = Path(__file__).resolve().parents[3]
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@dataclass
class Registry:
    host: str
    ca: str
    env: dict[str, str]


def start_registry(state: Path, **env: str) -> Registry:
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "registry.sh"), "start", str(state)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    values = dict(line.split("=", 1) for line in (state / "registry.env").read_text().split())
    return Registry(values["REGISTRY_HOST"], values["REGISTRY_CA"], values)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    state = tmp_path_factory.mktemp("registry")
    try:
        yield start_registry(state, REGISTRY_AUTH="none")
    finally:
        subprocess.run(["bash", str(REPO / "hack" / "registry.sh"), "stop", str(state)], timeout=60)


def untag(*refs: str) -> None:
    """The test's registry names are one-off (a random port): drop them from buildah's store
    (the images stay under localhost/kaito/NAME:TAG for the next run)."""
    if shutil.which("buildah"):
        subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", *refs], capture_output=True, timeout=120)


def images_sh(*targets: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", str(REPO / "hack" / "images.sh"), *targets],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, **env},
    )
    # Exit 3 (no engine it could use or install) is a failure here: make test runs as root and
    # the script installs buildah itself, so a missing engine is a broken set-up, not a skip.
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def get(registry: Registry, path: str, accept: str = "*/*") -> bytes:
    context = ssl.create_default_context(cafile=registry.ca)
    request = urllib.request.Request(f"https://{registry.host}/v2/{path}", headers={"Accept": accept})
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        body: bytes = response.read()
        return body


def pulled_config(registry: Registry, repo: str, tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    manifest = json.loads(get(registry, f"{repo}/manifests/{tag}", MANIFEST_TYPES))
    config = json.loads(get(registry, f"{repo}/blobs/{manifest['config']['digest']}"))
    return manifest, config


@pytest.fixture(scope="module")
def built(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    out = tmp_path_factory.mktemp("archives")
    proc = images_sh(
        "pause",
        "curl",
        REGISTRY=f"{registry.host}/kaito-it",
        TAG="it",
        PUSH="1",
        REGISTRY_CA=registry.ca,
        OUT=str(out),
    )
    refs = [f"{registry.host}/kaito-it/pause:it", f"{registry.host}/kaito-it/curl:it"]
    assert proc.stdout.split() == refs
    yield out, proc.stderr
    untag(*refs, f"{registry.host}/kaito-again/pause:it", f"{registry.host}/kaito-again/curl:it")


def test_pause_is_pushed_and_its_binary_runs(
    registry: Registry, built: tuple[Path, str], tmp_path: Path
) -> None:
    manifest, config = pulled_config(registry, "kaito-it/pause", "it")
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["config"]["User"] == "65535:65535"
    assert len(manifest["layers"]) == 1
    layer = get(registry, f"kaito-it/pause/blobs/{manifest['layers'][0]['digest']}")
    assert len(layer) < 2_000_000, "pause is one static binary"
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        assert [m.name.lstrip("./") for m in tar.getmembers() if m.isfile()] == ["pause"]
        tar.extractall(tmp_path, filter="data")
    binary = tmp_path / "pause"
    binary.chmod(0o755)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    assert version.stdout == "kaito-pause 1\n"
    proc = subprocess.Popen([str(binary)], stderr=subprocess.DEVNULL)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.3)  # blocks in pause()
        proc.terminate()
        assert proc.wait(5) == 0, "SIGTERM ends it with status 0"
    finally:
        proc.kill()


def test_curl_is_pushed_on_the_local_base(registry: Registry, built: tuple[Path, str]) -> None:
    _, config = pulled_config(registry, "kaito-it/curl", "it")
    assert config["config"]["Entrypoint"] == ["curl"]
    assert config["config"]["User"] == "65532:65532"


def test_oci_archives_for_ctr_import(built: tuple[Path, str], registry: Registry) -> None:
    out, _ = built
    for name in ("pause", "curl"):
        with tarfile.open(out / f"{name}.tar") as tar:
            member = tar.extractfile("index.json")
            assert member is not None
            index = json.load(member)
        ref = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        assert ref == f"{registry.host}/kaito-it/{name}:it"


def test_unchanged_inputs_build_in_seconds(registry: Registry, built: tuple[Path, str]) -> None:
    # Another name for the same inputs: tagged, not rebuilt; pushing unchanged blobs is quick.
    proc = images_sh(
        "pause", "curl", REGISTRY=f"{registry.host}/kaito-again", TAG="it", PUSH="1", REGISTRY_CA=registry.ca
    )
    assert proc.stderr.count("is up to date") == 2, proc.stderr
    _, config = pulled_config(registry, "kaito-again/curl", "it")
    assert config["config"]["Entrypoint"] == ["curl"]


def test_push_with_credentials_to_a_registry_with_auth(built: tuple[Path, str], tmp_path: Path) -> None:
    secured = start_registry(tmp_path / "auth")
    try:
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            get(secured, "_catalog")
        assert anonymous.value.code == 401
        images_sh(
            "pause",
            REGISTRY=f"{secured.host}/kaito-it",
            TAG="it",
            PUSH="1",
            REGISTRY_CA=secured.ca,
            REGISTRY_USER=secured.env["REGISTRY_USER"],
            REGISTRY_PASSWORD=secured.env["REGISTRY_PASSWORD"],
        )
        bad = subprocess.run(
            ["bash", str(REPO / "hack" / "images.sh"), "pause"],
            capture_output=True,
            text=True,
            timeout=300,
            env={
                **os.environ,
                "REGISTRY": f"{secured.host}/kaito-it",
                "TAG": "it",
                "PUSH": "1",
                "REGISTRY_CA": secured.ca,
                "REGISTRY_USER": secured.env["REGISTRY_USER"],
                "REGISTRY_PASSWORD": "wrong",
            },
        )
        assert bad.returncode != 0 and "pushed" not in bad.stderr
    finally:
        stop = ["bash", str(REPO / "hack" / "registry.sh"), "stop", str(tmp_path / "auth")]
        subprocess.run(stop, timeout=60)
        untag(f"{secured.host}/kaito-it/pause:it")


def _buildah(*args: str) -> str:
    return subprocess.run(
        ["buildah", "--storage-driver", "vfs", *args], capture_output=True, text=True, timeout=120, check=True
    ).stdout


def test_a_superseded_build_is_removed_and_its_cached_steps_stay(tmp_path: Path) -> None:
    """Builds of curl whose Dockerfiles differ by a comment (so their inputs differ): once the
    name points at the second, the first build's own image is gone from buildah's store, and the
    step they share (apt-get install curl, reused from the cache) stays for a third build."""
    if not shutil.which("buildah"):
        images_sh("pause", REGISTRY="localhost/kaito-prune", TAG="prune")  # installs buildah as root
    tree = tmp_path / "tree"
    (tree / "docker").mkdir(parents=True)
    shutil.copytree(REPO / "hack", tree / "hack")
    dockerfile = (REPO / "docker" / "curl.Dockerfile").read_text()
    ref = "localhost/kaito-prune/curl:prune"

    def build(variant: str) -> tuple[str, str]:
        (tree / "docker" / "curl.Dockerfile").write_text(f"{dockerfile}\n# {variant}\n")
        proc = subprocess.run(
            ["bash", str(tree / "hack" / "images.sh"), "curl"],
            capture_output=True,
            text=True,
            timeout=1200,
            env={**os.environ, "REGISTRY": "localhost/kaito-prune", "TAG": "prune"},
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        image_id = _buildah("images", "--noheading", "--no-trunc", "--format", "{{.ID}}", ref).split()[0]
        return image_id, proc.stderr

    try:
        first, _ = build("first")
        second, log = build("second")
        assert "Using cache" in log, log[-2000:]  # the apt-get step came from the first build
        assert "superseded builds" in log, log[-2000:]
        ids = set(_buildah("images", "--all", "--noheading", "--no-trunc", "--format", "{{.ID}}").split())
        assert first not in ids, f"the first build's image is still in the store:\n{log[-2000:]}"
        assert second in ids
        _, third_log = build("third")
        assert "Using cache" in third_log, third_log[-2000:]  # the shared step outlived the prune
    finally:
        subprocess.run(
            ["buildah", "--storage-driver", "vfs", "rmi", ref, "localhost/kaito/curl:prune"],
            capture_output=True,
            timeout=120,
        )
