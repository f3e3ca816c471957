"""The Workspace rules: one pure function behind the webhook, the CLI linter and the controller.

The function never raises on bad input: anything that is not a well-formed Workspace becomes
errors (:class:`~kaito.api.validation.FieldError`). One module per part of the spec:
``metadata`` (name, annotations), ``resource`` (selector, SKU, fit), ``partition`` (MIG slices,
whole GPUs), ``preset``, ``inference``,
``tuning``, ``images``, ``configmaps`` and ``update`` (what is frozen after create); they share a
:class:`~kaito.api.workspace.validation.checker.Checker`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kaito.api import names as c
from kaito.api.validation import (
    ConfigMaps,
    FieldError,
    HubModels,
    ValidationOptions,
    ValidationResult,
    field_errors,
)
from kaito.api.workspace.podpolicy import pod_policy_problems
from kaito.api.workspace.types import Workspace
from kaito.api.workspace.validation.checker import Checker
from kaito.api.workspace.validation.inference import check_inference
from kaito.api.workspace.validation.metadata import check_annotations, check_name
from kaito.api.workspace.validation.partition import check_partition
from kaito.api.workspace.validation.resource import check_instance_type, check_label_selector
from kaito.api.workspace.validation.tuning import check_tuning
from kaito.api.workspace.validation.update import check_update
from kaito.api.workspace.validation.weights import check_weights_source


def validate_workspace(
    obj: Any,
    old: Any = None,
    options: ValidationOptions | None = None,
    *,
    config_maps: ConfigMaps | None = None,
    hub_models: HubModels | None = None,
) -> ValidationResult:
    """Check a Workspace manifest (dict or model); ``old`` turns on the update rules.

    ``config_maps`` holds what the caller could read of the ConfigMaps in the Workspace's
    namespace (see :data:`kaito.api.validation.ConfigMaps`); without it the
    ``inference.config`` check is reported in ``result.skipped`` rather than silently passed.
    ``hub_models`` holds what the caller read from the Hub for an ``org/model`` preset (see
    :data:`kaito.api.validation.HubModels`).
    """
    opts = options or ValidationOptions()
    result = ValidationResult()
    try:
        ws = parse_workspace(obj, result)
        if ws is None:
            return result
        result.workspace = ws
        old_ws = parse_workspace(old, ValidationResult()) if old is not None else None
        check_all(Checker(ws, opts, result, config_maps, old=old_ws, hub_models=hub_models))
        _check_pod_policy(ws, opts, result)
        if old_ws is not None:
            check_update(ws, old_ws, result)
            # Rules that tighten later (a deprecated preset, a retired SKU) must not wedge
            # existing objects: their finalizers and labels still have to be writable.
            before = ValidationResult()
            check_all(Checker(old_ws, opts, before, check_config=False, hub_models=hub_models))
            _check_pod_policy(old_ws, opts, before)
            known = set(before.errors)
            result.errors = [e for e in result.errors if e not in known]
    except Exception as exc:  # the validator must answer, never crash
        result.errors.append(FieldError("<root>", f"internal validation error ({type(exc).__name__}: {exc})"))
    result.errors = sorted(set(result.errors), key=lambda e: (e.field, e.message))
    return result


def parse_workspace(obj: Any, result: ValidationResult) -> Workspace | None:
    if isinstance(obj, Workspace):
        return obj
    if not isinstance(obj, Mapping):
        result.errors.append(FieldError("<root>", f"expected a Workspace object, got {type(obj).__name__}"))
        return None
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    allowed = [f"{c.GROUP}/{v}" for v in c.VERSIONS]
    if kind != c.KIND or not isinstance(api_version, str) or api_version not in allowed:
        result.errors.append(
            FieldError(
                "apiVersion",
                f"expected kind Workspace in kaito.sh/v1alpha1 or kaito.sh/v1beta1, got kind "
                f"{kind!r} in {api_version!r}",
            )
        )
        return None
    try:
        return Workspace.model_validate(dict(obj))
    except ValidationError as exc:
        result.errors += field_errors(exc)
        return None


def check_all(ck: Checker) -> None:
    """Every rule of the Workspace API, part by part."""
    ws = ck.ws
    check_name(ck)
    check_annotations(ck)
    check_weights_source(ck)
    check_label_selector(ck)
    sku = check_instance_type(ck)
    partitioned = check_partition(ck)
    if (ws.inference is None) == (ws.tuning is None):
        ck.error(
            "inference",
            "a Workspace needs exactly one of inference or tuning; keep one and move the other "
            "to its own Workspace",
        )
    if ws.inference is not None:
        check_inference(ck, sku, partitioned=partitioned)
    if ws.tuning is not None:
        check_tuning(ck, sku)


def _check_pod_policy(ws: Workspace, opts: ValidationOptions, result: ValidationResult) -> None:
    """The operator's pod policy, when it is on (kept apart from check_all: it is the operator's
    choice, not a rule of the Workspace API)."""
    if opts.refuse_privileged_pods:
        result.errors += [FieldError(path, message) for path, message in pod_policy_problems(ws)]


__all__ = ["validate_workspace"]
