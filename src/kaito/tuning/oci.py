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

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin

from kaito.contract import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, IMAGE_ADAPTER_DIR
from kaito.contract import registry as registry_ref
from kaito.contract.tuning import (
    CONFIG_MEDIA_TYPE,
    DONE_MARKER,
    FAILED_MARKER,
    LAYER_MEDIA_TYPE,
    MODEL_ANNOTATION,
)
from kaito.contract.urls import IPAddress
from kaito.tuning.errors import TuningError
from kaito.tuning.fetch import REDIRECT_CODES, FetchOptions, open_url

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
#: Default download cap of one input-image layer (``pull --max-layer-bytes``).
DEFAULT_MAX_LAYER_BYTES = 10 * 1024**3
#: Default cap of an input image's unpacked data, all layers together (``pull --max-data-bytes``).
DEFAULT_MAX_DATA_BYTES = 20 * 1024**3
DATA_PREFIX = IMAGE_ADAPTER_DIR.strip("/")
ADAPTER_FILES = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE)


def split_image(image: str) -> tuple[str, str, str]:
    """``host[:port]/repo[:tag|@digest]`` -> (host, repository, reference)."""
    try:
        return registry_ref.split_image(image)
    except registry_ref.RegistryRefError as exc:
        raise TuningError(str(exc)) from None


def credentials(docker_config: Path | None, host: str) -> tuple[str, str] | None:
    """User and password for ``host`` from a dockerconfigjson file (None: anonymous)."""
    try:
        return registry_ref.credentials(docker_config, host)
    except registry_ref.RegistryRefError as exc:
        raise TuningError(str(exc)) from None


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


@dataclass(frozen=True)
class PullLimits:
    """Caps of ``pull`` (issue 21): an input image is the Workspace author's, so its size is not
    trusted. Without them a 255 KB gzip'd layer unpacked to 256 MiB, and any layer size could fill
    the node's disk before the data emptyDir's ``sizeLimit`` evicted the pod."""

    #: Bytes one layer may have as downloaded (compressed): the manifest's size is checked before
    #: the download, and the bytes while it runs (``pull --max-layer-bytes``).
    max_layer_bytes: int = DEFAULT_MAX_LAYER_BYTES
    #: Bytes the unpacked data folder may hold in all: a gzip bomb stops here, before the bytes
    #: are written (``pull --max-data-bytes``).
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES
    #: Addresses a blob redirect may go to despite the private-address rules. Only tests set this
    #: (``pull --insecure-allow-address``); the Job builder never does.
    allow_addresses: frozenset[IPAddress] = frozenset()
    #: Seconds a blob redirect's connection may stay silent.
    timeout_s: float = 60.0


def pull_data(registry: Registry, image: str, dest: Path, limits: PullLimits | None = None) -> list[Path]:
    """Unpack the image's ``data/`` folder (image layers) or its titled files (artifacts) into dest,
    within ``limits``; on any error the files it wrote are removed again."""
    limits = limits or PullLimits()
    _, repo, ref = split_image(image)
    container = registry.client.get_container(f"{registry.host}/{repo}:{ref}")
    try:
        manifest = registry.client.get_manifest(container)
    except ValueError as exc:
        raise TuningError(f"image {image}: cannot read its manifest ({_first(exc)})") from None
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    budget = _DataBudget(limits.max_data_bytes, image)
    try:
        # The layer files live in dest's volume (the data emptyDir, whose sizeLimit counts them),
        # not in the container's own filesystem on the node's disk.
        with tempfile.TemporaryDirectory(dir=dest, prefix=".kaito-pull-") as tmp:
            for i, layer in enumerate(manifest.get("layers") or []):
                blob = Path(tmp) / f"layer-{i}"
                _download_layer(registry, repo, image, layer, blob, limits)
                media = str(layer.get("mediaType", ""))
                if "tar" in media:
                    written += _untar(blob, dest, image, budget)
                else:
                    title = (layer.get("annotations") or {}).get("org.opencontainers.image.title")
                    if not title or "/" in title or title.startswith("."):
                        continue
                    budget.take(blob.stat().st_size, title)
                    shutil.copyfile(blob, dest / title)
                    written.append(dest / title)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    if not written:
        raise TuningError(f"image {image} has no files under /{DATA_PREFIX}")
    return written


class _DataBudget:
    """The bytes the unpacked data may still take."""

    def __init__(self, limit: int, image: str) -> None:
        self.limit, self.used, self.image = limit, 0, image

    def take(self, size: int, name: str) -> None:
        self.used += size
        if self.used > self.limit:
            raise TuningError(
                f"image {self.image}: unpacking {name} takes the data past the {self.limit}-byte cap "
                f"(pull --max-data-bytes); stopped. Ship less data, or raise the cap"
            )


def _download_layer(
    registry: Registry, repo: str, image: str, layer: dict[str, Any], out: Path, limits: PullLimits
) -> None:
    """One layer blob into ``out``: at most its declared size and the download cap, redirects
    checked like a dataset URL, and the bytes checked against the digest."""
    digest = str(layer.get("digest", ""))
    declared = layer.get("size")
    cap = limits.max_layer_bytes
    if isinstance(declared, int) and not isinstance(declared, bool):
        if declared > cap:
            raise TuningError(
                f"image {image}: layer {digest} is {declared} bytes, over the {cap}-byte download cap "
                "(pull --max-layer-bytes); ship less data, or raise the cap"
            )
        cap = max(declared, 0)
    url = f"{registry.base}/v2/{repo}/blobs/{digest}"
    resp = _registry_get(registry, url)
    h = hashlib.sha256()
    total = 0
    with out.open("wb") as f:

        def write(chunk: bytes) -> None:
            nonlocal total
            total += len(chunk)
            if total > cap:
                raise TuningError(
                    f"image {image}: layer {digest} sent more than {cap} bytes (its declared size or "
                    "the pull --max-layer-bytes cap); stopped"
                )
            h.update(chunk)
            f.write(chunk)

        with resp:
            if resp.status_code in REDIRECT_CODES:
                location = resp.headers.get("Location")
                if not location:
                    raise TuningError(f"image {image}: redirect {resp.status_code} without a Location")
                _follow_blob_redirect(urljoin(url, location), image, digest, limits, write)
            else:
                registry.ok(resp, f"download of {digest}")
                for chunk in resp.iter_content(1 << 20):
                    write(chunk)
    if "sha256:" + h.hexdigest() != digest:
        raise TuningError(f"image {image}: layer {digest} does not match its digest")


def _registry_get(registry: Registry, url: str) -> Any:
    """GET a blob from the registry without following redirects (they are checked by hand); as
    oras does it, credentials are sent when the registry asks for them."""
    import requests

    def get(headers: dict[str, str]) -> Any:
        try:
            return registry.client.session.get(
                url, headers=headers, stream=True, verify=registry.verify, allow_redirects=False, timeout=60
            )
        except requests.exceptions.RequestException as exc:
            raise TuningError(f"registry {registry.host}: download failed ({_first(exc)})") from None

    resp = get({})
    if resp.status_code in (401, 403):
        resp.close()
        resp = get(registry.client.auth.get_auth_header())
    return resp


def _follow_blob_redirect(
    target: str, image: str, digest: str, limits: PullLimits, write: Callable[[bytes], None]
) -> None:
    """Registries redirect blob downloads to their storage. The target is the registry's to choose,
    so it goes through the dataset downloader's rules (kaito.tuning.fetch): no private, loopback,
    link-local or metadata address, on any hop or any resolved address. The registry's credentials
    are not sent along."""
    opts = FetchOptions(
        max_bytes=limits.max_layer_bytes, timeout_s=limits.timeout_s, allow_addresses=limits.allow_addresses
    )
    try:
        conn, resp = open_url(target, opts)
    except TuningError as exc:
        raise TuningError(
            f"image {image}: the registry redirected layer {digest} to a refused place: {exc}"
        ) from None
    try:
        while chunk := resp.read(1 << 20):
            write(chunk)
    except OSError as exc:
        raise TuningError(f"image {image}: layer {digest} download failed ({_first(exc)})") from None
    finally:
        conn.close()


def _untar(blob: Path, dest: Path, image: str, budget: _DataBudget) -> list[Path]:
    out: list[Path] = []
    try:
        # Streamed member by member: a member over the cap is refused from its header, before
        # any of its bytes are decompressed or written.
        with tarfile.open(blob, mode="r:*") as tar:
            for member in tar:
                rel = _safe_member(member.name)
                if rel is None or not (member.isfile() or member.isdir()):
                    continue
                target = dest / rel
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                budget.take(member.size, str(rel))
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                out.append(target)
                with src, target.open("wb") as f:
                    shutil.copyfileobj(src, f)
    except tarfile.TarError as exc:
        for path in out:
            path.unlink(missing_ok=True)
        raise TuningError(f"image {image}: a layer is not a readable tar ({exc})") from None
    except BaseException:
        for path in out:
            path.unlink(missing_ok=True)
        raise
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
