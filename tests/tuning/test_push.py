"""The adapter as an OCI image in a real registry: credentials checked, layout, byte-for-byte pull."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import requests
from tests.tuning.conftest import (
    Registry,
    TrainedAdapter,
    last_line,
    run_tuning,
    write_parquet,
)

from kaito.contract import IMAGE_ADAPTER_DIR
from kaito.contract.tuning import CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MODEL_ANNOTATION

FILES = ("adapter_config.json", "adapter_model.safetensors")


def push(registry: Registry, results: Path, image: str, docker_config: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_tuning(
        "push",
        "--image",
        image,
        "--results",
        str(results),
        "--docker-config",
        str(docker_config),
        "--ca-file",
        registry.ca,
        *extra,
    )


def test_push_with_the_secrets_credentials_and_pull_back_byte_for_byte(
    tmp_path: Path, registry: Registry, trained: TrainedAdapter
) -> None:
    image = f"{registry.host}/adapters/phi-3-mini:0.0.1"
    secret = registry.docker_config(tmp_path / ".dockerconfigjson")
    proc = push(registry, trained.dir, image, secret, "--model-name", "phi-3-mini-4k-instruct")
    assert proc.returncode == 0, proc.stderr
    assert f"pushed {image}@sha256:" in proc.stdout
    assert registry.tags("adapters/phi-3-mini") == ["0.0.1"]

    pulled = tmp_path / "pulled"
    proc = run_tuning(
        "pull",
        "--image",
        image,
        "--dest",
        str(pulled),
        "--docker-config",
        str(secret),
        "--ca-file",
        registry.ca,
    )
    assert proc.returncode == 0, proc.stderr
    for name in FILES:
        assert (pulled / name).read_bytes() == (trained.dir / name).read_bytes(), name


def test_image_layout_is_a_container_image_with_the_adapter_under_data(
    tmp_path: Path, registry: Registry, trained: TrainedAdapter
) -> None:
    image = f"{registry.host}/adapters/layout:v1"
    proc = push(
        registry, trained.dir, image, registry.docker_config(tmp_path / "s.json"), "--model-name", "m"
    )
    assert proc.returncode == 0, proc.stderr
    base, auth = f"https://{registry.host}/v2/adapters/layout", (registry.user, registry.password)
    manifest = requests.get(
        f"{base}/manifests/v1",
        auth=auth,
        verify=registry.ca,
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=30,
    ).json()
    assert manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER_MEDIA_TYPE]
    assert manifest["annotations"] == {MODEL_ANNOTATION: "m"}
    blob = requests.get(
        f"{base}/blobs/{manifest['layers'][0]['digest']}", auth=auth, verify=registry.ca, timeout=30
    )
    raw = gzip.decompress(blob.content)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
    folder = IMAGE_ADAPTER_DIR.strip("/")
    assert names == [f"{folder}/{n}" for n in FILES]
    config = requests.get(
        f"{base}/blobs/{manifest['config']['digest']}", auth=auth, verify=registry.ca, timeout=30
    )
    import hashlib

    assert json.loads(config.content)["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(raw).hexdigest()]


def test_wrong_password_fails_clearly_and_pushes_nothing(
    tmp_path: Path, registry: Registry, trained: TrainedAdapter
) -> None:
    secret = registry.docker_config(tmp_path / ".dockerconfigjson", password="not-the-password")
    proc = push(registry, trained.dir, f"{registry.host}/adapters/denied:0.0.1", secret)
    assert proc.returncode == 1
    assert last_line(proc) == (
        f"kaito-tuning: registry {registry.host} refused the credentials (HTTP 401); "
        "check the registry secret"
    )
    assert registry.tags("adapters/denied") is None


def test_untrusted_certificate_and_missing_secret_fail_clearly(
    tmp_path: Path, registry: Registry, trained: TrainedAdapter
) -> None:
    image = f"{registry.host}/adapters/tls:0.0.1"
    proc = run_tuning(
        "push",
        "--image",
        image,
        "--results",
        str(trained.dir),
        "--docker-config",
        str(registry.docker_config(tmp_path / "s.json")),
    )
    assert proc.returncode == 1 and "TLS certificate not trusted" in last_line(proc)
    proc = push(registry, trained.dir, image, tmp_path / "absent.json")
    assert proc.returncode == 1 and "is not mounted; check imagePushSecret" in last_line(proc)
    assert registry.tags("adapters/tls") is None


def test_failed_training_pushes_nothing(tmp_path: Path, registry: Registry, tiny_model: Path) -> None:
    """Job order: train fails on a columnless dataset -> the waiting pusher exits 1, no image."""
    write_parquet(tmp_path / "data" / "x.parquet", [{"foo": "bar"}])
    results = tmp_path / "results"
    train = run_tuning(
        "train", "--model", str(tiny_model), "--data", str(tmp_path / "data"), "--output", str(results)
    )
    assert train.returncode == 1 and "no usable columns" in last_line(train)
    proc = push(
        registry,
        results,
        f"{registry.host}/adapters/never:0.0.1",
        registry.docker_config(tmp_path / "s.json"),
        "--wait",
        "--wait-timeout",
        "300",
    )
    assert proc.returncode == 1
    assert last_line(proc).startswith("kaito-tuning: training failed, nothing pushed: ")
    assert registry.tags("adapters/never") is None
