"""A real ``helm`` binary for rendering and linting kaito's chart, built like the control plane.

Why build it: the chart is only proven by the program users run (``helm template``, ``helm
lint``); a Python re-implementation of Go templates would prove nothing. Machines here reach a
Go module proxy but no release download site, so ``helm.sh/helm/v3/cmd/helm`` is ``go install``-ed
into kaito's asset cache (``<cache>/helm-<version>/helm``), once; later calls find it.
``KAITO_HELM`` points at a ready binary instead (a packaged helm works as well).
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

HELM_VERSION = "3.22.0"
HELM_MODULE = "helm.sh/helm/v3"
#: ``go`` fetches a newer toolchain through the proxy when helm's go.mod asks for one.
HELM_GOTOOLCHAIN = "auto"

Progress = Callable[[str], None]


def helm_dir(version: str = HELM_VERSION) -> Path:
    return cache_root() / f"helm-{version}"


def find_helm(version: str = HELM_VERSION) -> Path | None:
    """Path of the helm binary when present; ``KAITO_HELM`` (a file) overrides the cache."""
    env = os.environ.get("KAITO_HELM")
    if env:
        path = Path(env).expanduser()
        if not os.access(path, os.X_OK):
            raise AssetsError(f"KAITO_HELM={env} is not an executable; point it at helm or unset it")
        return path
    path = helm_dir(version) / "helm"
    return path if os.access(path, os.X_OK) else None


def ensure_helm(version: str = HELM_VERSION, *, build: bool = True, progress: Progress | None = None) -> Path:
    """Find or build helm (``go install``; the Go build cache makes a rebuild cheap)."""
    found = find_helm(version)
    if found is not None:
        return found
    target = helm_dir(version)
    if not build:
        raise AssetsError(
            f"helm is missing in {target}; run `python -m kaito.envtest.helm` or set KAITO_HELM"
        )
    go = shutil.which("go")
    if go is None:
        raise AssetsError(
            "no Go toolchain on PATH to build helm; install Go or set KAITO_HELM to a helm binary"
        )
    say = progress or (lambda _m: None)
    started = time.monotonic()
    target.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="helm-build-", dir=target.parent))
    env = dict(
        os.environ,
        CGO_ENABLED="0",
        GOBIN=str(work),
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN=os.environ.get("KAITO_HELM_GOTOOLCHAIN", HELM_GOTOOLCHAIN),
    )
    ldflags = f"-s -w -X helm.sh/helm/v3/internal/version.version=v{version}"
    try:
        say(f"[{time.monotonic() - started:5.0f}s] building {HELM_MODULE}/cmd/helm@v{version} (go install)")
        cmd = [go, "install", "-trimpath", "-ldflags", ldflags, f"{HELM_MODULE}/cmd/helm@v{version}"]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
            raise AssetsError(
                f"`{' '.join(cmd)}` failed: "
                + " | ".join(tail)
                + " -- fix Go or set KAITO_HELM to a helm binary"
            )
        os.replace(work / "helm", target / "helm")
        (target / "helm").chmod(0o755)
        say(f"[{time.monotonic() - started:5.0f}s] done helm in {target}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / "helm"


if __name__ == "__main__":  # pragma: no cover - a build entry point for scripts
    print(ensure_helm(progress=print))
