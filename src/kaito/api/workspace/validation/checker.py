"""The state one pass of the Workspace rules shares: the object, the options, what the caller
looked up in the cluster and on the Hub, and where errors and warnings go.

Each part of the spec has its own module of ``check_*`` functions taking a :class:`Checker`.
"""

from __future__ import annotations

from kaito.api import names as c
from kaito.api.validation import ConfigMaps, FieldError, HubModels, ValidationOptions, ValidationResult
from kaito.api.workspace.types import Workspace


class Checker:
    """One pass over one Workspace: ``old`` is the stored object on update (a ConfigMap is checked
    again only when its name changes); ``check_config`` False skips the ConfigMap checks (the pass
    over the stored object, whose faults are forgiven)."""

    def __init__(
        self,
        ws: Workspace,
        opts: ValidationOptions,
        result: ValidationResult,
        config_maps: ConfigMaps | None = None,
        *,
        old: Workspace | None = None,
        check_config: bool = True,
        hub_models: HubModels | None = None,
    ) -> None:
        self.ws, self.opts, self.result = ws, opts, result
        self.hub_models = hub_models
        self.config_maps, self.old, self.check_config = config_maps, old, check_config
        self.annotations: dict[str, str] = dict(ws.metadata.annotations or {})

    def error(self, path: str, message: str) -> None:
        self.result.errors.append(FieldError(path, message))

    def warn(self, path: str, message: str) -> None:
        self.result.warnings.append(f"{path}: {message}")

    @property
    def runtime(self) -> str:
        """The server runtime, as upstream picks it: the annotation, vllm by default."""
        value = self.annotations.get(c.ANNOTATION_RUNTIME, "vllm")
        return value if value in c.RUNTIMES else "vllm"
