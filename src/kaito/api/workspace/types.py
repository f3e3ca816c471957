"""The Workspace custom resource (kaito.sh v1alpha1 and v1beta1).

Both versions have the same shape, with ``resource``, ``inference``, ``tuning`` and ``status`` at
the top level (no ``spec``): upstream's v1beta1 shape, which upstream's v1alpha1 is a subset of
(it lacks ``presetOptions.modelAccessSecret`` and ``status.state``, ``targetNodeCount``,
``performance``). kaito's v1alpha1 keeps accepting the whole shape, as it always has, so no field
exists in one version and not the other and the apiserver converts with strategy ``None``: a
v1alpha1 client that reads and writes back cannot drop a v1beta1 field, and no read depends on a
conversion webhook being up. docs/workspace-api.md lists where this still differs from upstream.
The CRD schema in config/crd is generated from these classes (kaito.api.crd): the class and field
metadata below (CEL rules, patterns, defaults) are what the apiserver enforces without the webhook.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from kaito.api import names as c
from kaito.api.meta import Condition, KubeModel, LabelSelector, ManifestMixin, ObjectMeta
from kaito.presets import bypass_requested

PRESERVE: JsonDict = {"x-kubernetes-preserve-unknown-fields": True}
#: "0" .. "1" as a decimal string, e.g. "0.5", "1.0".
STRENGTH_PATTERN = r"^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$"
#: Hosts no data source may point at; the webhook does the full check (it parses the URL).
_FORBIDDEN_HOSTS = (
    r"^https?://(localhost|127\.|0\.|10\.|169\.254\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\."
    r"|\[::1\]|\[f[cd]|\[fe80|metadata\.google\.internal|metadata\.azure\.com)"
)


def cel(rule: str, message: str) -> JsonDict:
    return {"rule": rule, "message": message}


def _rules(*rules: JsonDict) -> ConfigDict:
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={"x-kubernetes-validations": list(rules)},
    )


#: GPU partitioning modes, by upstream's names (``resource.partition.mode``).
PARTITION_MIG = "mig"
PARTITION_ACCELERATOR = "accelerator"


class PartitionSpec(KubeModel):
    """Run the workload on part of a node's GPUs (upstream v0.12's ``resource.partition``).

    ``mig``: one NVIDIA Multi-Instance GPU slice, named by ``profile`` (``1g.10gb``); the pod asks
    for the extended resource ``nvidia.com/mig-<profile>`` that the device plugin's "mixed"
    strategy advertises. ``accelerator``: ``count`` whole GPUs of a node (``nvidia.com/gpu``)
    rather than all of them. Both need bring-your-own nodes and their feature gate
    (``enableMIG``, ``enableAccelerator``); the webhook checks those, the schema checks the shape.
    """

    model_config = _rules(
        cel(
            "self.mode != 'mig' || (has(self.profile) && !has(self.count))",
            "resource.partition: mode mig needs profile (e.g. 1g.10gb) and no count",
        ),
        cel(
            "self.mode != 'accelerator' || (has(self.count) && !has(self.profile))",
            "resource.partition: mode accelerator needs count (whole GPUs) and no profile",
        ),
        cel(
            "!has(self.profile) || self.profile.matches('^[0-9]+g\\\\.[0-9]+(\\\\.[0-9]+)?gb$')",
            "resource.partition.profile must be a MIG profile such as 1g.10gb or 3g.40gb",
        ),
    )

    mode: Literal["mig", "accelerator"] = Field(
        description="mig: one MIG slice named by profile; accelerator: count whole GPUs."
    )
    profile: str | None = Field(
        default=None,
        max_length=32,
        description="MIG profile (mode mig), e.g. 1g.10gb, 3g.40gb.",
    )
    count: int | None = Field(default=None, ge=1, le=64, description="Whole GPUs (mode accelerator).")


class ResourceSpec(KubeModel):
    """Which GPU nodes run the workload: a SKU to provision, or existing nodes to select."""

    model_config = _rules(
        cel(
            "has(self.instanceType) == has(oldSelf.instanceType) && "
            "(!has(self.instanceType) || self.instanceType == oldSelf.instanceType)",
            "resource.instanceType is immutable; create a new Workspace to change the GPU type",
        ),
        cel(
            "self.labelSelector == oldSelf.labelSelector",
            "resource.labelSelector is immutable; create a new Workspace to select other nodes",
        ),
        cel(
            "has(self.partition) == has(oldSelf.partition) && "
            "(!has(self.partition) || self.partition == oldSelf.partition)",
            "resource.partition is immutable; create a new Workspace to change the GPU partition",
        ),
        cel(
            "(has(self.labelSelector.matchLabels) && size(self.labelSelector.matchLabels) > 0) || "
            "(has(self.labelSelector.matchExpressions) && size(self.labelSelector.matchExpressions) > 0)",
            "resource.labelSelector needs at least one label (matchLabels or matchExpressions)",
        ),
    )

    count: int | None = Field(
        default=None, ge=1, le=64, description="GPU nodes; when unset kaito sizes it from the preset."
    )
    instance_type: str | None = Field(default=None, max_length=128)
    label_selector: LabelSelector
    preferred_nodes: list[str] | None = Field(default=None, max_length=64)
    partition: PartitionSpec | None = Field(
        default=None,
        description="Part of a node's GPUs: a MIG slice or a number of whole GPUs (BYO nodes only).",
    )


class PresetOptions(KubeModel):
    """Where private presets come from (image) and the secret that opens gated HF models."""

    image: str | None = None
    image_pull_secrets: list[str] | None = None
    model_access_secret: str | None = None


class PresetSpec(KubeModel):
    """A catalog model by name, or any Hugging Face org/model id."""

    name: str = Field(min_length=1, max_length=200)
    access_mode: Literal["public", "private"] = "public"
    preset_options: PresetOptions | None = None


class DataSource(KubeModel):
    """Data from URLs, an OCI image or a volume (exactly one for tuning input)."""

    name: str | None = Field(default=None, max_length=253)
    # Bounds keep the CEL cost estimate (adapters x urls x URL length) within the apiserver's budget.
    urls: list[str] | None = Field(
        default=None,
        max_length=50,
        json_schema_extra={
            "items": {
                "type": "string",
                "maxLength": 1024,
                "pattern": "^https?://",
                "x-kubernetes-validations": [
                    cel(
                        "!self.matches('" + _FORBIDDEN_HOSTS.replace("\\", "\\\\") + "')",
                        "URLs must not point at loopback, private, link-local or metadata addresses",
                    )
                ],
            }
        },
    )
    image: str | None = Field(default=None, max_length=512)
    volume_source: dict[str, Any] | None = Field(default=None, json_schema_extra=PRESERVE)
    image_pull_secrets: list[str] | None = None


class AdapterSource(DataSource):
    """An adapter must be named: the name is its directory and its model id at the endpoint."""

    name: str = Field(min_length=1, max_length=253)


class AdapterSpec(KubeModel):
    source: AdapterSource
    strength: str | None = Field(default=None, pattern=STRENGTH_PATTERN)


class InferenceSpec(KubeModel):
    model_config = _rules(
        cel("has(self.preset) != has(self.template)", "inference needs exactly one of preset or template"),
        cel(
            "has(self.preset) == has(oldSelf.preset) && "
            "(!has(self.preset) || self.preset.name == oldSelf.preset.name)",
            "inference.preset.name is immutable; create a new Workspace for another model",
        ),
        cel(
            "!has(self.adapters) || self.adapters.all(a, "
            "self.adapters.exists_one(b, b.source.name == a.source.name))",
            "inference.adapters: adapter source names must be unique",
        ),
    )

    preset: PresetSpec | None = None
    template: dict[str, Any] | None = Field(
        default=None, description="A pod template (PodTemplateSpec)", json_schema_extra=PRESERVE
    )
    config: str | None = Field(default=None, description="ConfigMap with runtime settings")
    adapters: list[AdapterSpec] | None = Field(default=None, max_length=10)


class DataDestination(KubeModel):
    model_config = _rules(
        cel("has(self.image) || has(self.volumeSource)", "tuning.output needs an image or a volumeSource"),
        cel(
            "!has(self.image) || has(self.imagePushSecret)",
            "tuning.output.image needs imagePushSecret to push the adapter",
        ),
    )

    image: str | None = Field(default=None, max_length=512)
    image_push_secret: str | None = None
    volume_source: dict[str, Any] | None = Field(default=None, json_schema_extra=PRESERVE)


class TuningSpec(KubeModel):
    model_config = _rules(
        cel(
            "has(self.preset) == has(oldSelf.preset) && "
            "(!has(self.preset) || self.preset.name == oldSelf.preset.name)",
            "tuning.preset.name is immutable; create a new Workspace for another model",
        ),
        cel(
            "[has(self.input.urls), has(self.input.image), has(self.input.volumeSource)]"
            ".filter(x, x).size() == 1",
            "tuning.input needs exactly one of urls, image or volumeSource",
        ),
    )

    preset: PresetSpec | None = None
    method: Literal["lora", "qlora"] = "lora"
    config: str | None = None
    input: DataSource
    output: DataDestination


class Metric(KubeModel):
    """One benchmark figure as upstream's status.performance carries it (value as a string)."""

    description: str
    value: str
    unit: str | None = None
    config: dict[str, str] | None = None


# kaito runs no post-load benchmark, so its controller never writes status.performance; the field
# exists so that Workspaces copied from an upstream cluster (status included) keep it.
class Performance(KubeModel):
    """Upstream's post-load benchmark results, keyed by metric name (e.g. peakTokensPerMinute)."""

    metrics: dict[str, Metric] | None = None


class WorkspaceStatus(KubeModel):
    worker_nodes: list[str] | None = None
    conditions: list[Condition] | None = None
    state: str | None = None
    performance: Performance | None = None
    target_node_count: int | None = Field(default=None, ge=0)
    #: The metadata.generation the controller last acted on (its status describes that spec).
    observed_generation: int | None = Field(default=None, ge=0)


WORKSPACE_RULES = (
    cel("has(self.inference) != has(self.tuning)", "a Workspace needs exactly one of inference or tuning"),
    cel(
        "has(self.inference) == has(oldSelf.inference)",
        "inference and tuning cannot be swapped on update; create a new Workspace",
    ),
)


class Workspace(ManifestMixin, KubeModel):
    """A model to serve (inference) or fine-tune (tuning) on GPU nodes (resource)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={"x-kubernetes-validations": list(WORKSPACE_RULES)},
    )

    api_version: Literal["kaito.sh/v1alpha1", "kaito.sh/v1beta1"] = Field(
        default="kaito.sh/v1beta1", alias="apiVersion"
    )
    kind: Literal["Workspace"] = "Workspace"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    resource: ResourceSpec
    inference: InferenceSpec | None = None
    tuning: TuningSpec | None = None
    status: WorkspaceStatus | None = None

    @property
    def version(self) -> str:
        return self.api_version.split("/", 1)[1]

    def as_version(self, version: str) -> Workspace:
        """The same object under another served version: what the apiserver's ``None`` conversion
        does (the shapes are identical, so only ``apiVersion`` changes)."""
        if version not in c.VERSIONS:
            raise ValueError(f"unknown Workspace version {version!r}; served: {', '.join(c.VERSIONS)}")
        return self.model_copy(update={"api_version": f"{c.GROUP}/{version}"})

    def condition(self, type_: str) -> Condition | None:
        for cond in (self.status.conditions if self.status else None) or []:
            if cond.type == type_:
                return cond
        return None

    @property
    def runtime(self) -> str:
        return runtime_of(self.metadata.annotations)

    @property
    def enable_lb(self) -> bool:
        return enable_lb_of(self.metadata.annotations)

    @property
    def bypass_resource_checks(self) -> bool:
        return bypass_resource_checks_of(self.metadata.annotations)


# The annotation readers take a plain annotations mapping, so the controller (which works on the
# dicts the apiserver returns) and the models give the same answer.


def runtime_of(annotations: Mapping[str, str] | None) -> str:
    """The runtime ``kaito.sh/runtime`` selects; anything else is vLLM, as upstream."""
    value = (annotations or {}).get(c.ANNOTATION_RUNTIME, "")
    return value if value in c.RUNTIMES else c.RUNTIME_VLLM


def enable_lb_of(annotations: Mapping[str, str] | None) -> bool:
    """``kaito.sh/enablelb: "True"`` (upstream's spelling) or any case of it."""
    return (annotations or {}).get(c.ANNOTATION_ENABLE_LB, "").strip().lower() == "true"


_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def api_key_secret_of(annotations: Mapping[str, str] | None) -> tuple[str, str] | None:
    """``kaito.sh/api-key-secret: <secret-name>[/<key>]`` as (name, key); None when absent.

    Raises ValueError with a message for the user when the value cannot name a Secret key:
    a pod that references it would never start, so the webhook and the controller refuse it.
    """
    raw = (annotations or {}).get(c.ANNOTATION_API_KEY_SECRET)
    if raw is None:
        return None
    name, _, key = raw.strip().partition("/")
    key = key or c.DEFAULT_API_KEY_SECRET_KEY
    if not name or len(name) > 253 or not _SECRET_NAME.match(name):
        raise ValueError(f"{raw!r}: {name!r} is not a Secret name; write <secret-name>[/<key>]")
    if len(key) > 253 or not _SECRET_KEY.match(key) or key in (".", ".."):
        raise ValueError(f"{raw!r}: {key!r} is not a Secret key (letters, digits, '-', '_', '.')")
    return name, key


def bypass_resource_checks_of(annotations: Mapping[str, str] | None) -> bool:
    """Upstream bypasses the checks when the annotation is present, whatever its value (what
    the bypass waives is :func:`kaito.presets.fit`'s to decide)."""
    return bypass_requested(annotations)
