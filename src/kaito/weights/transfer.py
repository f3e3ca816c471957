"""``kaito models push`` and ``pull``: a model folder to a weights artifact and back.

The layout is :mod:`kaito.contract.weights`. Both directions move one file per stream, several
streams at once (``concurrency``), and skip what the other side already holds: a push does not
upload a blob the registry has (a file unchanged since the last version), a pull does not download
a file the folder holds with the same digest, nor anything when the folder's cache marker already
names the manifest being pulled and every file is there at its size. Files of the folder that the
artifact does not list are left alone: a pull writes, it never deletes a user's files.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kaito.contract.weights import (
    CACHE_MARKER,
    EMPTY_CONFIG,
    LayoutError,
    WeightsFile,
    build_manifest,
    empty_config_descriptor,
    file_digest,
    parse_manifest,
    scan_folder,
)
from kaito.weights.registry import RegistryClient, WeightsError

DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class TransferResult:
    """What a push or pull did: the manifest digest, files moved and skipped, bytes moved, time."""

    image: str
    digest: str
    files: int
    moved: int
    skipped: int
    bytes_moved: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes_moved / 1e6 / self.seconds if self.seconds > 0 else 0.0


def _parallel(jobs: list[Callable[[], None]], concurrency: int) -> None:
    if concurrency < 1:
        raise WeightsError(f"--concurrency {concurrency}: give 1 or more")
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for fut in [pool.submit(job) for job in jobs]:
            fut.result()


def push_folder(
    client: RegistryClient,
    folder: Path,
    *,
    model: str | None = None,
    revision: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> TransferResult:
    """Push every file of ``folder`` as one layer and the manifest under the image's tag."""
    started = time.monotonic()
    if client.ref.startswith("sha256:"):
        raise WeightsError(f"image {client.image}: push to a tag (host/repo:tag), not a digest")
    try:
        files = scan_folder(folder)
    except LayoutError as exc:
        raise WeightsError(str(exc)) from None
    moved: list[WeightsFile] = []
    lock = threading.Lock()

    def push_one(f: WeightsFile) -> None:
        if client.has_blob(f.digest):
            return
        client.upload_blob(f.digest, f.size, folder / f.title)
        with lock:
            moved.append(f)

    config = empty_config_descriptor()
    if not client.has_blob(str(config["digest"])):
        client.upload_blob(str(config["digest"]), len(EMPTY_CONFIG), EMPTY_CONFIG)
    unique = {f.digest: f for f in files}  # two identical files are one blob
    _parallel([functools.partial(push_one, f) for f in unique.values()], concurrency)
    digest = client.put_manifest(build_manifest(files, model, revision), client.ref)
    return TransferResult(
        client.image,
        digest,
        len(files),
        len(moved),
        len(files) - len(moved),
        sum(f.size for f in moved),
        time.monotonic() - started,
    )


def resolve(client: RegistryClient) -> str:
    """The manifest digest the image's reference names now."""
    return client.get_manifest()[1]


def pull_folder(
    client: RegistryClient, dest: Path, *, concurrency: int = DEFAULT_CONCURRENCY
) -> TransferResult:
    """Reproduce the artifact's folder in ``dest`` and write the cache marker last."""
    import json

    started = time.monotonic()
    body, digest = client.get_manifest()
    try:
        manifest = json.loads(body)
    except ValueError:
        raise WeightsError(f"image {client.image}: its manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise WeightsError(f"image {client.image}: its manifest is not a JSON object")
    try:
        files = parse_manifest(manifest, client.image)
    except LayoutError as exc:
        raise WeightsError(str(exc)) from None
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / CACHE_MARKER
    intact = all((dest / f.title).is_file() and (dest / f.title).stat().st_size == f.size for f in files)
    if intact and marker.is_file() and marker.read_text().strip() == digest:
        return TransferResult(client.image, digest, len(files), 0, len(files), 0, time.monotonic() - started)
    marker.unlink(missing_ok=True)  # the folder is being changed: not a complete pull until the end
    moved: list[WeightsFile] = []
    lock = threading.Lock()
    done = [0]

    def progress(n: int) -> None:
        with lock:
            done[0] += n

    def pull_one(f: WeightsFile) -> None:
        target = dest / f.title
        if target.is_file() and target.stat().st_size == f.size and file_digest(target) == f.digest:
            return
        client.download_blob(f.digest, f.size, target, progress)
        with lock:
            moved.append(f)

    _parallel([functools.partial(pull_one, f) for f in files], concurrency)
    marker.write_text(digest + "\n")
    return TransferResult(
        client.image,
        digest,
        len(files),
        len(moved),
        len(files) - len(moved),
        sum(f.size for f in moved),
        time.monotonic() - started,
    )
