"""InferenceSet validation: the set's own fields, then the Workspace its template makes, judged by
the Workspace rules (:func:`kaito.api.workspace.validation.validate_workspace`).

Why validate a generated child rather than re-state the rules: a template the Workspace webhook
would refuse would otherwise be admitted on the set and fail later, once per replica, in the
controller. Errors from the child are renamed to where the user wrote the value
(``inference.preset.name`` -> ``spec.template.inference.preset.name``,
``resource.labelSelector`` -> ``spec.labelSelector``), so the message names the field to fix.

On update the Workspace's immutability rules do not apply: a set may change its preset or SKU,
and the controller rolls that by replacing Workspaces one at a time. As for Workspaces, a fault
the stored object already had is not refused again, so existing sets stay editable when a rule
tightens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kaito.api.inferenceset.child import child_workspace
from kaito.api.inferenceset.types import (
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    RESERVED_LABEL_PREFIX,
    VERSIONS,
    InferenceSet,
)
from kaito.api.labels import key_problem, value_problem
from kaito.api.validation import (
    ConfigMaps,
    FieldError,
    HubModels,
    ValidationOptions,
    ValidationResult,
    field_errors,
)
from kaito.api.workspace.validation import validate_workspace

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
#: Where each Workspace field comes from in the set (longest prefix first).
_RENAMES = (
    ("resource.labelSelector", "spec.labelSelector"),
    ("resource", "spec.template.resource"),
    ("inference", "spec.template.inference"),
    ("metadata.annotations", "spec.template.metadata.annotations"),
    ("metadata.labels", "spec.template.metadata.labels"),
)


def set_field(workspace_field: str) -> str:
    """The InferenceSet field a child Workspace's field was written from."""
    for prefix, target in _RENAMES:
        if workspace_field == prefix or workspace_field.startswith((f"{prefix}.", f"{prefix}[")):
            return target + workspace_field[len(prefix) :]
    return "spec.template"


def validate_inferenceset(
    obj: Any,
    old: Any = None,
    options: ValidationOptions | None = None,
    *,
    config_maps: ConfigMaps | None = None,
    hub_models: HubModels | None = None,
) -> ValidationResult:
    """Check an InferenceSet manifest (dict or model); ``old`` (the stored object) turns on the
    update behaviour. ``config_maps`` and ``hub_models`` as for :func:`validate_workspace`."""
    result = ValidationResult()
    try:
        model = _parse(obj, result)
        if model is None:
            return result
        old_model = _parse(old, ValidationResult()) if old is not None else None
        _check_name(model, result)
        _check_template_labels(model, result)
        if model.spec.node_count_limit:
            result.warnings.append(
                "spec.nodeCountLimit: accepted but not enforced (upstream Kaito v0.12 does not enforce it "
                "either); bound the replicas (or the HPA's maxReplicas) instead"
            )
        child = _child_result(model, options, config_maps, hub_models)
        if old_model is not None and _partition(model) != _partition(old_model):
            result.errors.append(
                FieldError(
                    "spec.template.resource.partition",
                    "is immutable (each replica's GPU slice or GPU count is fixed at create); "
                    "delete and recreate the InferenceSet to change it",
                )
            )
        if old_model is not None:
            # Faults the stored set already had are not refused again (rules that tightened later
            # must not wedge an existing object).
            known = set(_child_result(old_model, options, None, hub_models, check_config=False).errors)
            child.errors = [e for e in child.errors if e not in known]
        result.errors += child.errors
        result.warnings += child.warnings
        result.skipped += child.skipped
    except Exception as exc:  # the validator must answer, never crash
        result.errors.append(FieldError("<root>", f"internal validation error ({type(exc).__name__}: {exc})"))
    result.errors = sorted(set(result.errors), key=lambda e: (e.field, e.message))
    return result


def _partition(model: InferenceSet) -> dict[str, Any] | None:
    part = model.spec.template.resource.partition
    return part.to_dict() if part is not None else None


def _parse(obj: Any, result: ValidationResult) -> InferenceSet | None:
    if isinstance(obj, InferenceSet):
        return obj
    if not isinstance(obj, Mapping):
        result.errors.append(
            FieldError("<root>", f"expected an InferenceSet object, got {type(obj).__name__}")
        )
        return None
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    allowed = [f"{GROUP}/{v}" for v in VERSIONS]
    if kind != KIND or api_version not in allowed:
        result.errors.append(
            FieldError(
                "apiVersion",
                f"expected kind InferenceSet in {' or '.join(allowed)}, got kind {kind!r} in {api_version!r}",
            )
        )
        return None
    try:
        return InferenceSet.model_validate(dict(obj))
    except ValidationError as exc:
        for err in field_errors(exc):
            message = err.message.replace("is not a Workspace field", "is not an InferenceSet field")
            if err.field == "spec.replicas" and "greater than or equal" in message:
                message = message.replace("input should be greater than or equal to 0", "must be 0 or more")
            result.errors.append(FieldError(err.field, message))
        return None


def _check_name(model: InferenceSet, result: ValidationResult) -> None:
    name = model.metadata.name
    if name is None:
        if model.metadata.generate_name:
            result.errors.append(
                FieldError(
                    "metadata.generateName",
                    "an InferenceSet needs a fixed name (its Workspaces are named <name>-<index>); "
                    "set metadata.name",
                )
            )
        else:
            result.errors.append(FieldError("metadata.name", "is required"))
    elif len(name) > MAX_NAME_LENGTH or not _DNS1035.match(name):
        result.errors.append(
            FieldError(
                "metadata.name",
                f"{name!r} cannot prefix its Workspaces' names (<name>-<index> names a Service); use at most "
                f"{MAX_NAME_LENGTH} lowercase letters, digits and '-', starting with a letter",
            )
        )


def _check_template_labels(model: InferenceSet, result: ValidationResult) -> None:
    """The apiserver does not check label syntax inside a spec, but each child carries these
    labels, so a bad one would fail every child's create; the controller's own keys are refused."""
    tmeta = model.spec.template.metadata
    for key, value in ((tmeta.labels if tmeta else None) or {}).items():
        path = f'spec.template.metadata.labels["{key}"]'
        if key.startswith(RESERVED_LABEL_PREFIX):
            result.errors.append(
                FieldError(
                    path, f"{key!r}: keys under {RESERVED_LABEL_PREFIX} are set by the controller; remove it"
                )
            )
            continue
        problem = key_problem(key) or value_problem(value)
        if problem:
            result.errors.append(FieldError(path, f"{problem}; it is copied onto every Workspace of the set"))


def _child_result(
    model: InferenceSet,
    options: ValidationOptions | None,
    config_maps: ConfigMaps | None,
    hub_models: HubModels | None = None,
    *,
    check_config: bool = True,
) -> ValidationResult:
    """The Workspace rules on the set's index-0 Workspace, renamed to the set's fields. The
    child's name is the set's to answer for (checked by :func:`_check_name`)."""
    if not model.metadata.name:
        return ValidationResult()
    child = child_workspace(model, 0)
    got = validate_workspace(child, None, options, config_maps=config_maps, hub_models=hub_models)
    out = ValidationResult()
    out.errors = [FieldError(set_field(e.field), e.message) for e in got.errors if e.field != "metadata.name"]
    out.warnings = [_rename_warning(w) for w in got.warnings]
    out.skipped = [_rename_warning(w) for w in got.skipped] if check_config else []
    return out


def _rename_warning(text: str) -> str:
    field, sep, rest = text.partition(": ")
    return f"{set_field(field)}: {rest}" if sep and " " not in field else text


__all__ = ["set_field", "validate_inferenceset"]
