"""``kaito models push|pull`` against a real registry, and ``oras pull`` of what kaito pushed.

The registry is Debian's docker-registry with TLS and htpasswd (hack/registry.sh); the model is
the tiny random-weight Phi-3 built at test time; oras is the real CLI built from its Go module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kaito.contract.weights import ARTIFACT_TYPE, CACHE_MARKER, FILE_MEDIA_TYPE, TITLE_ANNOTATION, scan_folder
from kaito.weights import RegistryClient, WeightsError, pull_folder, push_folder

from .conftest import Registry


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _client(registry: Registry, image: str, tmp: Path, password: str | None = None) -> RegistryClient:
    return RegistryClient.for_image(
        f"{registry.host}/{image}",
        registry_config=registry.docker_config(tmp / "auth.json", password),
        ca_file=Path(registry.ca),
    )


def _kaito(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kaito.cli.main", *args], capture_output=True, text=True, timeout=300
    )


def test_layout_one_layer_per_file(registry: Registry, tiny_model: Path, tmp_path: Path) -> None:
    client = _client(registry, "weights/tiny:v1", tmp_path)
    result = push_folder(client, tiny_model, model="tiny-phi3", revision="r1")
    body, digest = client.get_manifest()
    manifest = json.loads(body)
    assert digest == result.digest
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["annotations"]["kaito.sh/model"] == "tiny-phi3"
    files = scan_folder(tiny_model)
    assert [
        (lay["annotations"][TITLE_ANNOTATION], lay["digest"], lay["size"]) for lay in manifest["layers"]
    ] == [(f.title, f.digest, f.size) for f in files]
    assert {lay["mediaType"] for lay in manifest["layers"]} == {FILE_MEDIA_TYPE}
    assert any(f.title == "model.safetensors" for f in files)
    # The same folder again: same manifest digest, nothing uploaded.
    again = push_folder(client, tiny_model, model="tiny-phi3", revision="r1")
    assert (again.digest, again.moved, again.skipped) == (result.digest, 0, result.files)


def test_cli_push_pull_round_trip_and_shared_blobs(
    registry: Registry, tiny_model: Path, tmp_path: Path
) -> None:
    auth = str(registry.docker_config(tmp_path / "auth.json"))
    image = f"{registry.host}/weights/cli:v1"
    pushed = _kaito(
        "models", "push", str(tiny_model), image, "--registry-config", auth, "--ca-file", registry.ca
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed" in pushed.stdout
    out = tmp_path / "pulled"
    pulled = _kaito("models", "pull", image, str(out), "--registry-config", auth, "--ca-file", registry.ca)
    assert pulled.returncode == 0, pulled.stderr
    assert _files(out) == _files(tiny_model)
    assert (out / CACHE_MARKER).read_text().strip() in pulled.stdout

    # v2 changes one file: the push uploads that one only, a pull into v1's folder fetches that one only.
    v2 = tmp_path / "v2"
    shutil.copytree(tiny_model, v2)
    (v2 / "generation_config.json").write_text(json.dumps({"max_new_tokens": 7}))
    client2 = _client(registry, "weights/cli:v2", tmp_path)
    pushed2 = push_folder(client2, v2)
    assert pushed2.moved == 1
    pulled2 = pull_folder(client2, out)
    assert (pulled2.moved, pulled2.skipped) == (1, pulled2.files - 1)
    assert _files(out) == _files(v2)
    # The marker names v2 now: a second pull moves nothing and reads no blob.
    assert pull_folder(client2, out).moved == 0
    # A file gone behind the marker's back is fetched again (the marker alone is not trusted).
    (out / "config.json").unlink()
    assert pull_folder(client2, out).moved == 1
    assert _files(out) == _files(v2)


def test_oras_pulls_what_kaito_pushed(registry: Registry, tiny_model: Path, tmp_path: Path) -> None:
    from kaito.envtest.orascli import ensure_oras

    oras = ensure_oras()
    client = _client(registry, "weights/oras:v1", tmp_path)
    push_folder(client, tiny_model)
    out = tmp_path / "oras-out"
    proc = subprocess.run(
        [
            str(oras),
            "pull",
            client.image,
            "-o",
            str(out),
            "--ca-file",
            registry.ca,
            "--registry-config",
            str(tmp_path / "auth.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert _files(out) == _files(tiny_model)


def test_refusals_name_the_fix(registry: Registry, tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"denied.*--registry-config"):
        push_folder(_client(registry, "weights/bad:v1", tmp_path, password="wrong"), tiny_model)
    with pytest.raises(WeightsError, match="does not exist"):
        pull_folder(_client(registry, "weights/none:v1", tmp_path), tmp_path / "x")
    with pytest.raises(WeightsError, match=r"no config\.json"):
        push_folder(_client(registry, "weights/bad:v1", tmp_path), tmp_path)
    untrusted = RegistryClient.for_image(f"{registry.host}/weights/tiny:v1")
    with pytest.raises(WeightsError, match="TLS certificate not trusted"):
        pull_folder(untrusted, tmp_path / "y")
    bad = _kaito("models", "push", "no-such-preset-or-folder", f"{registry.host}/weights/x:v1")
    assert bad.returncode == 1 and "neither a folder nor a kaito preset" in bad.stderr
