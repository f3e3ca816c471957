"""The Workspace kind (kaito.sh v1alpha1 and v1beta1): everything about it lives in this package.

``types`` (the pydantic classes the CRD schema is generated from), ``validation`` (the webhook's
rules, one module per part of the spec), ``podpolicy`` (what a Workspace's pods may ask of the
node) and ``inference_config`` (its ConfigMaps). Importing the package gives the types, as
``kaito.api.workspace`` always has; validation is imported from its own module.
"""

from kaito.api.workspace.types import (
    PRESERVE,
    STRENGTH_PATTERN,
    WORKSPACE_RULES,
    AdapterSource,
    AdapterSpec,
    DataDestination,
    DataSource,
    InferenceSpec,
    Metric,
    Performance,
    PresetOptions,
    PresetSpec,
    ResourceSpec,
    TuningSpec,
    Workspace,
    WorkspaceStatus,
    api_key_secret_of,
    bypass_resource_checks_of,
    cel,
    enable_lb_of,
    runtime_of,
)

__all__ = [
    "PRESERVE",
    "STRENGTH_PATTERN",
    "WORKSPACE_RULES",
    "AdapterSource",
    "AdapterSpec",
    "DataDestination",
    "DataSource",
    "InferenceSpec",
    "Metric",
    "Performance",
    "PresetOptions",
    "PresetSpec",
    "ResourceSpec",
    "TuningSpec",
    "Workspace",
    "WorkspaceStatus",
    "api_key_secret_of",
    "bypass_resource_checks_of",
    "cel",
    "enable_lb_of",
    "runtime_of",
]
