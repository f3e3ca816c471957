"""The fields upstream Kaito freezes after create (api/v1beta1/workspace_validation.go)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaito.api.validation import FieldError, ValidationResult
from kaito.api.workspace.types import PresetSpec, Workspace


def check_update(ws: Workspace, old: Workspace, result: ValidationResult) -> None:
    """The fields upstream Kaito freezes after create (api/v1beta1/workspace_validation.go)."""

    def err(path: str, what: str) -> None:
        result.errors.append(
            FieldError(path, f"is immutable ({what}); delete and recreate the Workspace to change it")
        )

    if ws.resource.instance_type != old.resource.instance_type:
        err(
            "resource.instanceType",
            f"was {old.resource.instance_type!r}, now {ws.resource.instance_type!r}",
        )
    if ws.resource.label_selector.to_dict() != old.resource.label_selector.to_dict():
        err("resource.labelSelector", "changed")
    new_count, old_count = ws.resource.count, old.resource.count
    if new_count is not None and old_count is not None and new_count != old_count:
        err("resource.count", f"was {old.resource.count}, now {ws.resource.count}")
    new_part, old_part = ws.resource.partition, old.resource.partition
    if (new_part.to_dict() if new_part else None) != (old_part.to_dict() if old_part else None):
        err("resource.partition", "the pod's GPU slice or GPU count is fixed at create")
    if (ws.inference is None) != (old.inference is None):
        err("inference", "a Workspace cannot switch between inference and tuning")
        return
    if ws.inference is not None and old.inference is not None:
        _preset_unchanged("inference.preset", ws.inference.preset, old.inference.preset, err)
        if (ws.inference.template is None) != (old.inference.template is None):
            err("inference.template", "it cannot be set or unset after create; its contents may change")
    if ws.tuning is not None and old.tuning is not None:
        _preset_unchanged("tuning.preset", ws.tuning.preset, old.tuning.preset, err)
        if ws.tuning.method != old.tuning.method:
            err("tuning.method", f"was {old.tuning.method!r}, now {ws.tuning.method!r}")
        if ws.tuning.input.name != old.tuning.input.name:
            err("tuning.input.name", f"was {old.tuning.input.name!r}, now {ws.tuning.input.name!r}")


def _preset_unchanged(
    path: str, new: PresetSpec | None, old: PresetSpec | None, err: Callable[[str, str], None]
) -> None:
    new_name = new.name if new else None
    old_name = old.name if old else None
    if new_name != old_name:
        err(f"{path}.name" if new_name and old_name else path, f"was {old_name!r}, now {new_name!r}")
    elif _dump(new) != _dump(old):
        err(path, "its accessMode and presetOptions are fixed with the model")


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json") if model is not None else None
