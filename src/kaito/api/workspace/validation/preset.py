"""``inference.preset`` / ``tuning.preset``: a catalog preset, a Hugging Face ``org/model`` (sized from
the Hub or from kaito.sh/model-parameters), and the token a gated model needs."""

from __future__ import annotations

import difflib
import json
from functools import cache

from kaito.api import names as c
from kaito.api.workspace.types import PresetSpec
from kaito.api.workspace.validation.checker import Checker
from kaito.api.workspace.validation.images import check_image
from kaito.presets import ModelPreset, PresetError, custom_preset, find_preset, list_presets, preset_names
from kaito.presets.hub import parse_model_ref


def catalog_entry(spec: PresetSpec | None) -> ModelPreset | None:
    """The catalog entry a preset names, by preset name or by its Hugging Face repo id
    (upstream's newer examples name presets by repo, e.g. meta-llama/Llama-3.1-8B-Instruct)."""
    if spec is None:
        return None
    return find_preset(spec.name) or _by_repo().get(spec.name.lower())


def check_preset(ck: Checker, path: str, spec: PresetSpec | None) -> ModelPreset | None:
    if spec is None:
        return None
    name = spec.name
    entry = find_preset(name)
    if entry is not None:
        if entry.deprecated:
            ck.error(f"{path}.name", f"preset {name!r} is deprecated: {entry.deprecated}")
            return None
        return entry
    if spec.preset_options is not None and spec.preset_options.image:
        check_image(ck, f"{path}.presetOptions.image", spec.preset_options.image)
    if parse_model_ref(name) is not None:
        raw = (ck.ws.metadata.annotations or {}).get(c.ANNOTATION_MODEL_PARAMETERS)
        if raw is None:
            known = _by_repo().get(name.lower())
            if known is not None:
                ck.warn(
                    f"{path}.name",
                    f"{name} is the Hugging Face repo of kaito's preset {known.name}; name the "
                    f"preset {known.name} to have its GPU memory checked and sized",
                )
                return None
            return hub_model(ck, f"{path}.name", name)
        try:
            params = json.loads(raw)
            if not isinstance(params, dict):
                raise PresetError("the annotation must be a JSON object")
            return custom_preset(name, params)
        except (ValueError, PresetError) as exc:
            ck.error(f"metadata.annotations[{c.ANNOTATION_MODEL_PARAMETERS}]", f"{exc}")
            return None
    close = difflib.get_close_matches(name, preset_names(), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    ck.error(
        f"{path}.name",
        f"unknown preset {name!r}; {hint}use a preset from `kaito presets list` or a Hugging Face "
        "org/model id",
    )
    return None


def hub_model(ck: Checker, path: str, name: str) -> ModelPreset | None:
    """An ``org/model`` preset as the caller resolved it on the Hub; refused when the Hub said
    no (gated, unknown, unsupported architecture) or could not be reached."""
    found = ck.hub_models.get(name) if ck.hub_models is not None else None
    if found is None:
        ck.result.warnings.append(
            f"{path}: {name} is not in kaito's catalog and was not looked up on the Hugging Face Hub; "
            f"GPU memory is not checked (set annotation {c.ANNOTATION_MODEL_PARAMETERS} to check it)"
        )
        return None
    if isinstance(found, str):
        ck.error(path, found)
        return None
    return found


def check_preset_access(ck: Checker, path: str, spec: PresetSpec | None, preset: ModelPreset | None) -> None:
    """A gated model needs a token (upstream: downloadAuthRequired without modelAccessSecret is
    an error); a token for an open model is only noted, since kaito downloads every preset at
    run time and passes the token along unused."""
    if spec is None:
        return
    entry = preset or catalog_entry(spec)
    options = spec.preset_options
    secret = options.model_access_secret if options is not None else None
    if spec.preset_options is not None and spec.preset_options.image and preset is not None:
        check_image(ck, f"{path}.presetOptions.image", spec.preset_options.image)
    if entry is None or entry.custom:
        return
    if spec.access_mode == "private" and options is not None and options.image:
        return  # the weights come in the private image, not from Hugging Face
    if entry.gated and not secret:
        ck.error(
            f"{path}.presetOptions.modelAccessSecret",
            f"{spec.name} is gated on Hugging Face ({entry.hf_repo}); create a Secret with key "
            "HF_TOKEN holding a token whose account accepted the model's licence, and name it here",
        )
    elif secret and not entry.gated:
        ck.warn(
            f"{path}.presetOptions.modelAccessSecret",
            f"{spec.name} is not gated; the Secret is not needed (upstream Kaito rejects it for "
            "presets whose weights are in its images)",
        )


@cache
def _by_repo() -> dict[str, ModelPreset]:
    return {m.hf_repo.lower(): m for m in list_presets()}
