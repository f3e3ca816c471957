"""The adapter as an OCI image (push) and an input image's data folder (pull), with oras.

Image layout, as upstream Kaito's pusher makes it: one gzip'd tar layer holding
``data/adapter_config.json`` and ``data/adapter_model.safetensors``, and an image config whose
``rootfs.diff_ids`` names that layer, so the image is an ordinary container image whose
``/data`` (``kaito.contract.IMAGE_ADAPTER_DIR``) holds the adapter. That is the folder the
inference side's adapter init container copies from, and the one ``pull`` unpacks.

Credentials come from the ``imagePushSecret`` (a ``kubernetes.io/dockerconfigjson`` Secret) mounted
into the pusher. They are checked against the registry's ``/v2/`` before anything is uploaded, so
a wrong password fails in one request with one line, not after oras' retries.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kaito.contract import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, IMAGE_ADAPTER_DIR
from kaito.contract.tuning import (
    CONFIG_MEDIA_TYPE,
    DONE_MARKER,
    FAILED_MARKER,
    LAYER_MEDIA_TYPE,
    MODEL_ANNOTATION,
)
from kaito.tuning.errors import TuningError

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
DATA_PREFIX = IMAGE_ADAPTER_DIR.strip("/")
ADAPTER_FILES = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE)


def split_image(image: str) -> tuple[str, str, str]:
    """``host[:port]/repo[:tag|@digest]`` -> (host, repository, reference)."""
    if "/" not in image:
        raise TuningError(f"image {image!r} names no registry; use host/repository:tag")
    host, rest = image.split("/", 1)
    if "." not in host and ":" not in host and host != "localhost":
        raise TuningError(f"image {image!r} names no registry host; use host/repository:tag")
    if "@" in rest:
        repo, ref = rest.split("@", 1)
    elif ":" in rest.rsplit("/", 1)[-1]:
        repo, ref = rest.rsplit(":", 1)
    else:
        repo, ref = rest, "latest"
    if not repo or repo != repo.lower():
        raise TuningError(f"image {image!r}: the repository must be lowercase")
    return host, repo, ref


def credentials(docker_config: Path | None, host: str) -> tuple[str, str] | None:
    """User and password for ``host`` from a dockerconfigjson file (None: anonymous)."""
    if docker_config is None:
        return None
    try:
        data = json.loads(docker_config.read_text())
    except OSError as exc:
        raise TuningError(f"registry secret {docker_config}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError:
        raise TuningError(f"registry secret {docker_config}: not a dockerconfigjson document") from None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        raise TuningError(
            f"registry secret {docker_config}: no auths; create it with kubectl create secret docker-registry"
        )
    for key, entry in auths.items():
        name = key.split("://", 1)[-1].split("/", 1)[0]
        if name != host or not isinstance(entry, dict):
            continue
        if entry.get("username") is not None and entry.get("password") is not None:
            return str(entry["username"]), str(entry["password"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise TuningError(
                    f"registry secret {docker_config}: auth for {host} is not base64 user:password"
                ) from None
            return user, password
    raise TuningError(
        f"registry secret {docker_config} has no credentials for {host}; add an auths entry for it"
    )


@dataclass
class Registry:
    """An oras client for one registry with the Secret's credentials and our CA."""

    host: str
    client: Any
    plain_http: bool = False
    verify: bool | str = True

    @classmethod
    def for_image(
        cls, image: str, docker_config: Path | None, *, ca_file: str | None = None, plain_http: bool = False
    ) -> Registry:
        import oras.provider

        host, _, _ = split_image(image)
        creds = credentials(docker_config if docker_config and docker_config.exists() else None, host)
        if docker_config is not None and not docker_config.exists():
            raise TuningError(f"registry secret {docker_config} is not mounted; check imagePushSecret")
        verify: bool | str = ca_file or os.environ.get("SSL_CERT_FILE") or True
        client = oras.provider.Registry(
            hostname=host, insecure=plain_http, tls_verify=verify, auth_backend="basic"
        )
        if creds is not None:
            client.auth.set_basic_auth(*creds)
        reg = cls(host, client, plain_http, verify)
        reg.check_access(anonymous=creds is None)
        return reg

    @property
    def base(self) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.host}"

    def check_access(self, anonymous: bool) -> None:
        import requests

        headers = {} if anonymous else self.client.auth.get_auth_header()
        try:
            resp = self.client.session.get(
                f"{self.base}/v2/", headers=headers, verify=self.verify, timeout=30
            )
        except requests.exceptions.SSLError as exc:
            raise TuningError(f"registry {self.host}: TLS certificate not trusted ({_first(exc)})") from None
        except requests.exceptions.RequestException as exc:
            raise TuningError(f"registry {self.host}: unreachable ({_first(exc)})") from None
        if resp.status_code == 401 and not anonymous:
            raise TuningError(
                f"registry {self.host} refused the credentials (HTTP 401); check the registry secret"
            )
        if resp.status_code >= 500:
            raise TuningError(f"registry {self.host}: HTTP {resp.status_code} on /v2/")

    def ok(self, resp: Any, what: str) -> Any:
        if resp.status_code in (401, 403):
            raise TuningError(
                f"registry {self.host} denied {what} (HTTP {resp.status_code}); check the secret's rights"
            )
        if resp.status_code not in (200, 201, 202):
            raise TuningError(f"registry {self.host}: {what} failed (HTTP {resp.status_code} {_body(resp)})")
        return resp


def _first(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _body(resp: Any) -> str:
    try:
        errors = resp.json().get("errors") or []
        return "; ".join(str(e.get("message", e)) for e in errors)[:200]
    except Exception:
        return str(resp.reason)


def adapter_layer(results: Path) -> tuple[bytes, str]:
    """The gzip'd tar of ``data/<adapter files>`` (deterministic) and its uncompressed digest."""
    for name in ADAPTER_FILES:
        if not (results / name).is_file():
            raise TuningError(f"no adapter to push: {results / name} is missing")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo(DATA_PREFIX)
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(folder)
        for name in ADAPTER_FILES:
            path = results / name
            info = tarfile.TarInfo(f"{DATA_PREFIX}/{name}")
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            with path.open("rb") as f:
                tar.addfile(info, f)
    tar_bytes = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    return gzip.compress(tar_bytes, compresslevel=6, mtime=0), diff_id


def _descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


def push_adapter(registry: Registry, results: Path, image: str, model_name: str | None = None) -> str:
    """Push the adapter in ``results`` to ``image``; returns the manifest digest."""
    _, repo, ref = split_image(image)
    layer, diff_id = adapter_layer(results)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()
    layer_desc = _descriptor(LAYER_MEDIA_TYPE, layer)
    config_desc = _descriptor(CONFIG_MEDIA_TYPE, config)
    container = registry.client.get_container(f"{registry.host}/{repo}:{ref}")
    with tempfile.TemporaryDirectory() as tmp:
        for desc, blob in ((layer_desc, layer), (config_desc, config)):
            path = Path(tmp) / desc["digest"].split(":")[1]
            path.write_bytes(blob)
            registry.ok(
                registry.client.upload_blob(str(path), container, desc), f"upload of {desc['digest']}"
            )
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config_desc,
        "layers": [layer_desc],
    }
    if model_name:
        manifest["annotations"] = {MODEL_ANNOTATION: model_name}
    resp = registry.ok(registry.client.upload_manifest(manifest, container), f"push of {image}")
    digest = resp.headers.get("Docker-Content-Digest")
    return str(digest or "sha256:" + hashlib.sha256(json.dumps(manifest).encode()).hexdigest())


def _safe_member(name: str) -> PurePosixPath | None:
    """The path below ``data/`` a layer member lands at, or None when it is outside or unsafe."""
    path = PurePosixPath(name.lstrip("./") if name.startswith("./") else name)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] != DATA_PREFIX:
        return None
    rel = PurePosixPath(*path.parts[1:])
    return rel if rel.parts else None


def pull_data(registry: Registry, image: str, dest: Path) -> list[Path]:
    """Unpack the image's ``data/`` folder (image layers) or its titled files (artifacts) into dest."""
    _, repo, ref = split_image(image)
    container = registry.client.get_container(f"{registry.host}/{repo}:{ref}")
    try:
        manifest = registry.client.get_manifest(container)
    except ValueError as exc:
        raise TuningError(f"image {image}: cannot read its manifest ({_first(exc)})") from None
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, layer in enumerate(manifest.get("layers") or []):
            blob = Path(tmp) / f"layer-{i}"
            with registry.client.get_blob(container, layer["digest"], stream=True) as resp:
                registry.ok(resp, f"download of {layer['digest']}")
                h = hashlib.sha256()
                with blob.open("wb") as out:
                    for chunk in resp.iter_content(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
            if "sha256:" + h.hexdigest() != layer["digest"]:
                raise TuningError(f"image {image}: layer {layer['digest']} does not match its digest")
            media = str(layer.get("mediaType", ""))
            if "tar" in media:
                written += _untar(blob, dest, image)
            else:
                title = (layer.get("annotations") or {}).get("org.opencontainers.image.title")
                if not title or "/" in title or title.startswith("."):
                    continue
                shutil.copyfile(blob, dest / title)
                written.append(dest / title)
    if not written:
        raise TuningError(f"image {image} has no files under /{DATA_PREFIX}")
    return written


def _untar(blob: Path, dest: Path, image: str) -> list[Path]:
    out: list[Path] = []
    try:
        with tarfile.open(blob, mode="r:*") as tar:
            for member in tar.getmembers():
                rel = _safe_member(member.name)
                if rel is None or not (member.isfile() or member.isdir()):
                    continue
                target = dest / rel
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with src, target.open("wb") as f:
                    shutil.copyfileobj(src, f)
                out.append(target)
    except tarfile.TarError as exc:
        raise TuningError(f"image {image}: a layer is not a readable tar ({exc})") from None
    return out


def wait_for_adapter(results: Path, timeout_s: float | None) -> None:
    """Block until training wrote DONE_MARKER; FAILED_MARKER or the timeout end it with an error."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        if (results / FAILED_MARKER).exists():
            why = (results / FAILED_MARKER).read_text().strip().splitlines() or ["no reason given"]
            raise TuningError(f"training failed, nothing pushed: {why[0]}")
        if (results / DONE_MARKER).exists():
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TuningError(f"no adapter after {timeout_s:.0f}s: {results / DONE_MARKER} never appeared")
        time.sleep(1)
