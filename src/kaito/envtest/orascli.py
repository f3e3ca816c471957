"""The ``oras`` CLI, built from its Go module into kaito's asset cache like the control plane.

Why: the Workspace's weights init container runs ``oras pull`` (upstream runs the same program),
so the real-node tests need the real binary for the image they give the node, and the weights
benchmark compares kaito's puller against it in the same run. Machines here reach a Go module
proxy but no release download site, so ``oras.land/oras/cmd/oras`` is ``go install``-ed into
``<cache>/oras-<version>/oras`` once; later calls find it. ``KAITO_ORAS`` points at a ready binary
instead (a packaged oras works as well). The binary is static (``CGO_ENABLED=0``), so it is a
container image by itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kaito.envtest.assets import AssetsError, cache_root

ORAS_VERSION = "1.3.6"
ORAS_MODULE = "oras.land/oras"
ORAS_GOTOOLCHAIN = "auto"

Progress = Callable[[str], None]


def oras_dir(version: str = ORAS_VERSION) -> Path:
    return cache_root() / f"oras-{version}"


def find_oras(version: str = ORAS_VERSION) -> Path | None:
    """Path of the oras binary when present; ``KAITO_ORAS`` (a file) overrides the cache."""
    env = os.environ.get("KAITO_ORAS")
    if env:
        path = Path(env).expanduser()
        if not os.access(path, os.X_OK):
            raise AssetsError(f"KAITO_ORAS={env} is not an executable; point it at oras or unset it")
        return path
    path = oras_dir(version) / "oras"
    return path if os.access(path, os.X_OK) else None


def ensure_oras(version: str = ORAS_VERSION, *, build: bool = True, progress: Progress | None = None) -> Path:
    """Find or build oras (``go install``; about a minute cold on two cores)."""
    found = find_oras(version)
    if found is not None:
        return found
    target = oras_dir(version)
    if not build:
        raise AssetsError(
            f"oras is missing in {target}; run `python -m kaito.envtest.orascli` or set KAITO_ORAS"
        )
    go = shutil.which("go")
    if go is None:
        raise AssetsError(
            "no Go toolchain on PATH to build oras; install Go or set KAITO_ORAS to an oras binary"
        )
    say = progress or (lambda _m: None)
    started = time.monotonic()
    target.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="oras-build-", dir=target.parent))
    env = dict(
        os.environ,
        CGO_ENABLED="0",
        GOBIN=str(work),
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN=os.environ.get("KAITO_ORAS_GOTOOLCHAIN", ORAS_GOTOOLCHAIN),
    )
    pkg = "oras.land/oras/internal/version"
    ldflags = f"-s -w -X {pkg}.Version={version} -X {pkg}.BuildMetadata="
    try:
        say(f"[{time.monotonic() - started:5.0f}s] building {ORAS_MODULE}/cmd/oras@v{version} (go install)")
        cmd = [go, "install", "-trimpath", "-ldflags", ldflags, f"{ORAS_MODULE}/cmd/oras@v{version}"]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
            raise AssetsError(
                f"`{' '.join(cmd)}` failed: "
                + " | ".join(tail)
                + " -- fix Go or set KAITO_ORAS to an oras binary"
            )
        os.replace(work / "oras", target / "oras")
        (target / "oras").chmod(0o755)
        say(f"[{time.monotonic() - started:5.0f}s] done oras in {target}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / "oras"


if __name__ == "__main__":  # pragma: no cover - a build entry point for scripts
    print(ensure_oras(progress=print))
