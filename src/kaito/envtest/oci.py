"""Single-layer OCI image archives written in Python, for a real node's own small images.

Why: a real node needs a sandbox (``pause``) image before it can run any pod, and its tests need
a workload, on a machine with no Docker engine and no registry it may pull from. A statically
linked program is a whole image by itself, so this module compiles one (``gcc -static``) and
writes the OCI image layout that ``ctr images import`` reads: one layer, its config, a manifest
and an index naming the image. Larger images (kaito's own, on a Debian base) are built by
``hack/images.sh`` with buildah instead.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

SOURCES = Path(__file__).with_name("nodeimages")


class ImageError(RuntimeError):
    """An image could not be built; the message says what to install or fix."""


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


def _layer(files: dict[str, tuple[bytes, int]]) -> tuple[bytes, str]:
    """A gzipped tar of ``files`` (path -> (content, mode)) and its uncompressed diff ID."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), "sha256:" + hashlib.sha256(plain).hexdigest()


def write_archive(
    target: Path, name: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str]
) -> Path:
    """Write an OCI image-layout tar at ``target`` holding one image called ``name``
    (``registry/repo:tag``) whose only layer is ``files`` and whose entrypoint is ``entrypoint``.
    Deterministic: the same files give the same digests."""
    layer_gz, diff_id = _layer(files)
    layer = Blob("application/vnd.oci.image.layer.v1.tar+gzip", layer_gz)
    config = Blob(
        "application/vnd.oci.image.config.v1+json",
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Entrypoint": entrypoint, "Env": ["PATH=/"]},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            },
            sort_keys=True,
        ).encode(),
    )
    manifest = Blob(
        "application/vnd.oci.image.manifest.v1+json",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
            },
            sort_keys=True,
        ).encode(),
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                **manifest.descriptor(),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w") as tar:

        def add(path: str, data: bytes) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for blob in (layer, config, manifest):
            add(f"blobs/sha256/{blob.digest.split(':', 1)[1]}", blob.data)
    return target


def static_program(source: str, out_dir: Path) -> Path:
    """Compile ``nodeimages/<source>.c`` into a static binary in ``out_dir`` (once per source
    content: the binary's name carries the source's hash)."""
    src = SOURCES / f"{source}.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    binary = out_dir / f"{source}-{digest}"
    if binary.exists():
        return binary
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise ImageError(
            f"no C compiler to build the node's {source} image; install gcc (apt-get install gcc libc6-dev)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(".partial")
    proc = subprocess.run([cc, "-static", "-O2", "-o", str(tmp), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(
            f"compiling {src} failed: {proc.stderr.strip()[-400:]} -- a static build needs libc6-dev (libc.a)"
        )
    tmp.replace(binary)
    return binary


def binary_image(binary: Path, name: str, work: Path) -> Path:
    """An OCI archive of image ``name`` holding the static program ``binary`` as
    ``/<binary name>``, its entrypoint: for a program built elsewhere (CoreDNS, from its Go
    module). Cached in ``work`` by the binary's content, so a rebuilt binary gets a new image."""
    data = binary.read_bytes()
    digest = hashlib.sha256(data + name.encode()).hexdigest()[:12]
    archive = work / f"{binary.name}-{digest}.oci.tar"
    if not archive.exists():
        partial = archive.with_suffix(".partial")
        write_archive(partial, name, {f"/{binary.name}": (data, 0o755)}, [f"/{binary.name}"])
        partial.replace(archive)
    return archive


def program_image(source: str, name: str, work: Path) -> Path:
    """An OCI archive of image ``name`` holding only the static program ``source`` as ``/<source>``,
    its entrypoint. Cached in ``work`` by source content."""
    binary = static_program(source, work)
    tag = hashlib.sha256(name.encode()).hexdigest()[:8]
    archive = work / f"{binary.name}-{tag}.oci.tar"
    if not archive.exists():
        write_archive(
            archive.with_suffix(".partial"),
            name,
            {f"/{source}": (binary.read_bytes(), 0o755)},
            [f"/{source}"],
        )
        archive.with_suffix(".partial").replace(archive)
    return archive
