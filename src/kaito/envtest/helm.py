"""A real ``helm`` binary for rendering and linting kaito's chart, built like the control plane.

Why build it: the chart is only proven by the program users run (``helm template``, ``helm
lint``); a Python re-implementation of Go templates would prove nothing. It is ``go install``-ed
from ``helm.sh/helm/v3`` into kaito's asset cache once (:class:`kaito.envtest.gotool.GoTool`);
``KAITO_HELM`` points at a ready binary instead.
"""

from __future__ import annotations

from pathlib import Path

from kaito.envtest.gotool import GoTool, Progress

HELM_VERSION = "3.22.0"
HELM = GoTool(
    name="helm",
    module="helm.sh/helm/v3",
    cmd="cmd/helm",
    version=HELM_VERSION,
    env_var="KAITO_HELM",
    version_flags=("helm.sh/helm/v3/internal/version.version=v{version}",),
)


def helm_dir(version: str = HELM_VERSION) -> Path:
    return HELM.folder(version)


def find_helm(version: str = HELM_VERSION) -> Path | None:
    """Path of the helm binary when present; ``KAITO_HELM`` (a file) overrides the cache."""
    return HELM.find(version)


def ensure_helm(version: str = HELM_VERSION, *, build: bool = True, progress: Progress | None = None) -> Path:
    """Find or build helm."""
    return HELM.ensure(version, build=build, progress=progress)


if __name__ == "__main__":  # pragma: no cover - a build entry point for scripts
    print(ensure_helm(progress=print))
