"""A command-line tool built from its Go module into kaito's asset cache, like the control plane.

Why: machines here reach a Go module proxy but no release download site, so the real programs
the tests and benchmarks drive (helm, oras, ...) are ``go install``-ed once into
``<cache>/<name>-<version>/<name>``; later calls find them there. An environment variable
(``KAITO_HELM``, ``KAITO_ORAS``) points at a ready binary instead, e.g. a packaged one. Builds are
static (``CGO_ENABLED=0``), so a binary is also a container image by itself. The build goes to a
temporary folder and is moved into place, so an interrupted build never leaves half a binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kaito.envtest.assets import AssetsError, cache_root

Progress = Callable[[str], None]


@dataclass(frozen=True)
class GoTool:
    """One tool: where its main package is and how its version is stamped in."""

    #: The binary's name (and its cache folder's prefix).
    name: str
    #: The Go module (``go install <module>/<cmd>@v<version>``).
    module: str
    #: The main package's path inside the module, e.g. ``cmd/helm``.
    cmd: str
    #: The version built by default (without the ``v``).
    version: str
    #: The variable naming a ready binary instead of the cache, e.g. ``KAITO_HELM``.
    env_var: str
    #: ``-X`` linker assignments that stamp the version (``{version}`` is filled in).
    version_flags: tuple[str, ...] = ()
    #: ``GOTOOLCHAIN`` for the build (``auto``: go fetches a newer toolchain through the proxy
    #: when the tool's go.mod asks for one); ``<env_var>_GOTOOLCHAIN`` overrides it.
    toolchain: str = "auto"

    def folder(self, version: str | None = None) -> Path:
        return cache_root() / f"{self.name}-{version or self.version}"

    def find(self, version: str | None = None) -> Path | None:
        """The binary when present; the environment variable (a file) overrides the cache."""
        env = os.environ.get(self.env_var)
        if env:
            path = Path(env).expanduser()
            if not os.access(path, os.X_OK):
                raise AssetsError(
                    f"{self.env_var}={env} is not an executable; point it at {self.name} or unset it"
                )
            return path
        path = self.folder(version) / self.name
        return path if os.access(path, os.X_OK) else None

    def ensure(
        self, version: str | None = None, *, build: bool = True, progress: Progress | None = None
    ) -> Path:
        """Find or build the tool (``go install``; the Go build cache makes a rebuild cheap)."""
        version = version or self.version
        found = self.find(version)
        if found is not None:
            return found
        target = self.folder(version)
        if not build:
            raise AssetsError(
                f"{self.name} is missing in {target}; build it (`python -m kaito.envtest.{self.name}` "
                f"where there is one) or set {self.env_var}"
            )
        go = shutil.which("go")
        if go is None:
            raise AssetsError(
                f"no Go toolchain on PATH to build {self.name}; install Go or set {self.env_var} to a "
                f"{self.name} binary"
            )
        say = progress or (lambda _m: None)
        started = time.monotonic()
        target.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{self.name}-build-", dir=target.parent))
        env = dict(
            os.environ,
            CGO_ENABLED="0",
            GOBIN=str(work),
            GOFLAGS="-mod=mod",
            GOTOOLCHAIN=os.environ.get(f"{self.env_var}_GOTOOLCHAIN", self.toolchain),
        )
        ldflags = " ".join(["-s", "-w", *(f"-X {f.format(version=version)}" for f in self.version_flags)])
        package = f"{self.module}/{self.cmd}@v{version}"
        try:
            say(f"[{time.monotonic() - started:5.0f}s] building {package} (go install)")
            cmd = [go, "install", "-trimpath", "-ldflags", ldflags, package]
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
                raise AssetsError(
                    f"`{' '.join(cmd)}` failed: "
                    + " | ".join(tail)
                    + f" -- fix Go or set {self.env_var} to a {self.name} binary"
                )
            os.replace(work / self.name, target / self.name)
            (target / self.name).chmod(0o755)
            say(f"[{time.monotonic() - started:5.0f}s] done {self.name} in {target}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target / self.name


__all__ = ["GoTool", "Progress"]
