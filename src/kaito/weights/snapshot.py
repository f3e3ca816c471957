"""A preset's model folder at its pinned revision, for ``kaito models push <preset>``.

The catalog pins each preset to a Hugging Face revision (``models.yaml``); an image pushed from a
preset must hold exactly those files, so the snapshot is downloaded at that revision, never
``main``. ``huggingface_hub`` does the download (it is in the inference install, not the core
one); a machine without it, or without the Hub, pushes a local folder instead.
"""

from __future__ import annotations

from pathlib import Path

from kaito.presets import ModelPreset, PresetError, resolve_preset
from kaito.weights.registry import WeightsError


def preset_of(name: str) -> ModelPreset:
    try:
        preset = resolve_preset(name)
    except PresetError as exc:
        raise WeightsError(
            f"{name!r} is neither a folder nor a kaito preset ({exc}); give a model folder or "
            "a name from kaito presets list"
        ) from None
    return preset


def download_snapshot(preset: ModelPreset, into: Path, token: str | None = None) -> Path:
    """The preset's files at its pinned revision, downloaded into ``into``."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WeightsError(
            "pushing a preset downloads its snapshot with huggingface_hub, which is not installed; "
            "pip install huggingface_hub, or download the model and push its folder"
        ) from None
    try:
        path = snapshot_download(
            repo_id=preset.hf_repo, revision=preset.revision, local_dir=str(into), token=token
        )
    except Exception as exc:  # the hub client raises many types: one line says which
        raise WeightsError(
            f"cannot download {preset.hf_repo}@{preset.revision} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); set HF_TOKEN for a gated model"
        ) from None
    return Path(path)
