"""What every kind's validator answers, and how: field errors, warnings, the cluster's options.

The Workspace rules live in :mod:`kaito.api.workspace.validation`, the InferenceSet's in
:mod:`kaito.api.inferenceset.validation`; both report through these types, so the webhook and
``kaito validate`` print any kind's answer the same way. Every rejection is a
:class:`FieldError` naming the field, what is wrong and how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kaito.api.workspace.types import Workspace
from kaito.presets import ModelPreset

#: What the webhook found for each ConfigMap name: the object, None when absent, or a string saying
#: why it could not be read. A name missing from the mapping was not looked up (no cluster).
ConfigMaps = Mapping[str, "Mapping[str, Any] | str | None"]
#: What the caller learned from the Hugging Face Hub for each ``org/model`` preset name
#: (:mod:`kaito.api.hub`): the sized preset, or the refusal's message. A name missing from the
#: mapping was not looked up (offline), and is admitted unsized with a warning.
HubModels = Mapping[str, "ModelPreset | str"]


@dataclass(frozen=True, order=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class ValidationOptions:
    """How the cluster is run; the webhook and the CLI take these from flags."""

    #: Cloud whose SKU table ``resource.instanceType`` must come from; None accepts any cloud.
    cloud: str | None = "azure"
    #: Whether kaito provisions GPU nodes (then instanceType is required) or only selects them.
    auto_provisioning: bool = True
    #: The Workspace pod policy (:mod:`kaito.api.workspace.podpolicy`): refuse templates and tuning volumes
    #: that would give the pod the node (privileged, host namespaces, hostPath, added
    #: capabilities) or another ServiceAccount. On by default because a Workspace author is not
    #: necessarily a node admin; turn off only where every Workspace author is trusted with nodes.
    refuse_privileged_pods: bool = True
    #: The node classes ``kaito.sh/node-class-name`` may name when the karpenter backend
    #: provisions nodes; None when it does not (the annotation is then inert, and said to be).
    node_class_names: tuple[str, ...] | None = None
    #: Feature gates ``enableMIG`` / ``enableAccelerator`` (off by default, as upstream): whether
    #: ``resource.partition`` may use mode ``mig`` / ``accelerator``.
    mig: bool = False
    accelerator: bool = False


@dataclass
class ValidationResult:
    errors: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Checks that need the cluster and were not run (``kaito validate`` without the ConfigMap).
    skipped: list[str] = field(default_factory=list)
    workspace: Workspace | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def message(self) -> str:
        return "; ".join(str(e) for e in self.errors)


# --- pydantic's errors in kaito's words ------------------------------------------------------

_HINTS = {
    "missing": "is required",
    "extra_forbidden": "is not a Workspace field; remove it (check spelling and indentation)",
}


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """A pydantic error as FieldErrors with kaito's paths and messages (``spec.replicas``,
    ``inference.adapters[0].strength``), for every kind's validator."""
    out = []
    for err in exc.errors(include_url=False):
        loc = _loc(err["loc"])
        path = f"{prefix}{loc}" if loc != "<root>" else prefix.rstrip(".") or loc
        out.append(FieldError(path, _describe(err)))
    return out


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def _describe(err: Any) -> str:
    kind = err["type"]
    if kind in _HINTS:
        return str(_HINTS[kind])
    msg = str(err["msg"])
    if kind == "string_pattern_mismatch" and err["loc"] and err["loc"][-1] == "strength":
        return f'{err.get("input")!r} is not a strength; use a decimal string from "0" to "1", e.g. "0.5"'
    if kind == "literal_error" and err["loc"] and err["loc"][-1] == "method":
        return f"{err.get('input')!r} is not a tuning method; use lora or qlora"
    given = err.get("input")
    simple = isinstance(given, str | int | float | bool) or given is None
    shown = repr(given) if simple else type(given).__name__
    return f"{msg[0].lower()}{msg[1:]} (got {shown})"
