"""The ``oras`` CLI, built from its Go module into kaito's asset cache like the control plane.

Why: the Workspace's weights init container runs ``oras pull`` (upstream runs the same program),
so the real-node tests need the real binary for the image they give the node, and the weights
benchmark compares kaito's puller against it in the same run. It is ``go install``-ed from
``oras.land/oras`` once (:class:`kaito.envtest.gotool.GoTool`); ``KAITO_ORAS`` points at a ready
binary instead. The binary is static, so it is a container image by itself.
"""

from __future__ import annotations

from pathlib import Path

from kaito.envtest.gotool import GoTool, Progress

ORAS_VERSION = "1.3.6"
ORAS = GoTool(
    name="oras",
    module="oras.land/oras",
    cmd="cmd/oras",
    version=ORAS_VERSION,
    env_var="KAITO_ORAS",
    version_flags=(
        "oras.land/oras/internal/version.Version={version}",
        "oras.land/oras/internal/version.BuildMetadata=",
    ),
)


def oras_dir(version: str = ORAS_VERSION) -> Path:
    return ORAS.folder(version)


def find_oras(version: str = ORAS_VERSION) -> Path | None:
    """Path of the oras binary when present; ``KAITO_ORAS`` (a file) overrides the cache."""
    return ORAS.find(version)


def ensure_oras(version: str = ORAS_VERSION, *, build: bool = True, progress: Progress | None = None) -> Path:
    """Find or build oras (about a minute cold on two cores)."""
    return ORAS.ensure(version, build=build, progress=progress)


if __name__ == "__main__":  # pragma: no cover - a build entry point for scripts
    print(ensure_oras(progress=print))
