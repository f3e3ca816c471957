"""Model weights as an OCI artifact: the layout ``kaito models push`` writes and every puller reads.

One layer per file of the model folder, stored as the file's own bytes (no tar, no gzip), titled
with its path relative to the folder (``org.opencontainers.image.title``, the annotation ``oras
pull`` names files by). Why this shape:

* a pull fetches the layers in parallel, one stream per file, and writes each straight to its
  place: nothing to unpack, no second copy on the node's disk;
* a layer's digest is the file's sha256, so a file unchanged between two versions of a model is
  the same blob: the registry stores it once, a push skips it, and a puller that already holds it
  in its cache skips it too;
* ``oras pull IMAGE -o DIR`` reproduces the folder, so the init container needs nothing of kaito.

The manifest is an OCI 1.1 artifact: ``artifactType`` :data:`ARTIFACT_TYPE`, the empty config,
and the model's name and revision in its annotations. It carries no timestamp, so the same folder
always gives the same manifest digest.

The Workspace side (pod spec) and the pullers agree on :data:`WEIGHTS_DIR` (upstream's
``/workspace/weights``) and :data:`CACHE_MARKER`, the file the init container writes into the
cache volume once a pull is complete, holding the manifest digest it pulled: a restarted pod whose
volume survived finds it, resolves the reference, and pulls nothing when the digest is the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

#: The manifest's ``artifactType``.
ARTIFACT_TYPE: Final = "application/vnd.kaito.model.weights.v1"
#: Every layer's media type: a file's bytes as they are.
FILE_MEDIA_TYPE: Final = "application/vnd.kaito.model.file.v1"
MANIFEST_MEDIA_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"
EMPTY_MEDIA_TYPE: Final = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG: Final = b"{}"
TITLE_ANNOTATION: Final = "org.opencontainers.image.title"
#: Manifest annotations: what the artifact holds.
MODEL_ANNOTATION: Final = "kaito.sh/model"
REVISION_ANNOTATION: Final = "kaito.sh/model-revision"
LAYOUT_ANNOTATION: Final = "kaito.sh/weights-layout"
LAYOUT_VERSION: Final = "v1"

#: Where the weights cache volume is mounted in the inference pod (upstream's path), and the
#: folder vLLM is given as ``--model``.
WEIGHTS_DIR: Final = "/workspace/weights"
#: Written by the init container after a complete pull: the manifest digest it pulled.
CACHE_MARKER: Final = ".kaito-weights-digest"

_CHUNK = 1 << 20


class LayoutError(ValueError):
    """A folder or a manifest that does not follow the layout; the message says what to change."""


@dataclass(frozen=True)
class WeightsFile:
    """One file of the model: its path in the folder (the layer's title), size and sha256."""

    title: str
    size: int
    digest: str

    def descriptor(self) -> dict[str, object]:
        return {
            "mediaType": FILE_MEDIA_TYPE,
            "digest": self.digest,
            "size": self.size,
            "annotations": {TITLE_ANNOTATION: self.title},
        }


def check_title(title: str) -> PurePosixPath:
    """The relative path a layer's title names, refused when it could leave the model folder."""
    path = PurePosixPath(title)
    if (
        not title
        or "\\" in title
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in title.split("/"))
    ):
        raise LayoutError(
            f"layer title {title!r} is not a plain relative path inside the model folder; "
            "the artifact was not made by kaito models push"
        )
    return path


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _walk(folder: Path) -> Iterator[Path]:
    """The model's files: hidden files and folders (``.git``, ``.cache``, the cache marker) are
    not part of a model, and links are refused rather than followed out of the folder."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            if path.is_symlink() and not path.resolve().is_relative_to(folder.resolve()):
                raise LayoutError(f"{path} links outside {folder}; copy the file in instead")
            yield path


def scan_folder(folder: Path) -> list[WeightsFile]:
    """The files of a model folder, sorted by title, each hashed once."""
    if not folder.is_dir():
        raise LayoutError(f"{folder} is not a folder; give a Hugging Face model folder")
    out = [
        WeightsFile(path.relative_to(folder).as_posix(), path.stat().st_size, file_digest(path))
        for path in _walk(folder)
    ]
    if not out:
        raise LayoutError(f"{folder} holds no files to push")
    if not any(f.title == "config.json" for f in out):
        raise LayoutError(
            f"{folder} has no config.json at its top; give the folder of a Hugging Face model snapshot"
        )
    return out


def empty_config_descriptor() -> dict[str, object]:
    return {
        "mediaType": EMPTY_MEDIA_TYPE,
        "digest": "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(),
        "size": len(EMPTY_CONFIG),
        "data": "e30=",
    }


def build_manifest(files: list[WeightsFile], model: str | None = None, revision: str | None = None) -> bytes:
    """The manifest's bytes (canonical JSON, so the same files give the same digest)."""
    annotations = {LAYOUT_ANNOTATION: LAYOUT_VERSION}
    if model:
        annotations[MODEL_ANNOTATION] = model
    if revision:
        annotations[REVISION_ANNOTATION] = revision
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": empty_config_descriptor(),
        "layers": [f.descriptor() for f in sorted(files, key=lambda f: f.title)],
        "annotations": annotations,
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def parse_manifest(raw: Mapping[str, object], image: str) -> list[WeightsFile]:
    """The files a weights manifest lists; refuses anything else (another artifact, an image)."""
    if raw.get("artifactType") != ARTIFACT_TYPE:
        raise LayoutError(
            f"image {image} is not a kaito weights artifact (artifactType {raw.get('artifactType')!r}, "
            f"want {ARTIFACT_TYPE}); push it with kaito models push"
        )
    layers = raw.get("layers")
    if not isinstance(layers, list) or not layers:
        raise LayoutError(f"image {image} lists no layers")
    out: list[WeightsFile] = []
    seen: set[str] = set()
    for layer in layers:
        if not isinstance(layer, dict):
            raise LayoutError(f"image {image}: a layer is not a descriptor")
        title = (layer.get("annotations") or {}).get(TITLE_ANNOTATION)
        digest, size = layer.get("digest"), layer.get("size")
        if not isinstance(title, str) or not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise LayoutError(f"image {image}: layer {digest!r} has no title or no sha256 digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise LayoutError(f"image {image}: layer {title} has no valid size")
        check_title(title)
        if title in seen:
            raise LayoutError(f"image {image}: two layers are titled {title}")
        seen.add(title)
        out.append(WeightsFile(title, size, digest))
    return out
