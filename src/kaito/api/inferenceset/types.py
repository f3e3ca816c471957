"""The InferenceSet custom resource (kaito.sh v1alpha1 and v1beta1): N Workspaces from one template.

Upstream Kaito v0.12 serves the kind in both versions with one shape (``spec.template``,
``spec.replicas``, ``spec.labelSelector``; v1beta1 stored), with the scale subresource on
``.spec.replicas`` / ``.status.replicas`` / ``.status.selector`` so that ``kubectl scale``, a
HorizontalPodAutoscaler or KEDA can drive it. kaito keeps that shape and, as for Workspaces, one
schema in both versions (conversion strategy ``None``).

Why the template's inference section is not the Workspace's own class: a Workspace freezes its
preset name after create (CEL transition rules), but an InferenceSet may move all its replicas to
another model; the controller rolls that change by replacing one Workspace at a time. The
template therefore carries the Workspace's shape rules and none of its immutability rules.

docs/inferenceset.md lists where this differs from upstream.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from kaito.api import names as c
from kaito.api.meta import Condition, KubeModel, LabelSelector, ManifestMixin, ObjectMeta
from kaito.api.workspace.types import InferenceSpec, PartitionSpec, cel

# The group and versions are the Workspace's (one API group, one version policy).
GROUP: Final = c.GROUP
VERSIONS: Final = c.VERSIONS
STORAGE_VERSION: Final = c.STORAGE_VERSION
KIND: Final = "InferenceSet"
PLURAL: Final = "inferencesets"
SINGULAR: Final = "inferenceset"
#: Upstream's short names (``kubectl get is``).
SHORT_NAMES: Final = ("is", "isets")
#: Upstream's category plus kaito's (``kubectl get kaito`` lists everything kaito owns).
CATEGORIES: Final = ("inferenceset", "kaito")
#: Condition type on InferenceSet.status.conditions: True when every desired replica is a
#: WorkspaceReady Workspace on the current template (upstream's name).
CONDITION_READY: Final = "InferenceSetReady"
#: Label on each child Workspace (and, through the workspace controller, on its pods) naming the
#: set; ``status.selector`` selects by it (upstream's key).
LABEL_CREATED_BY: Final = "inferenceset.kaito.sh/created-by"
#: kaito's: the child's index (``<set>-<index>``), so ``kubectl get wk -l`` can pick one.
LABEL_INDEX: Final = "inferenceset.kaito.sh/index"
#: kaito's: hash of the template a child was written from; a different one means "roll it".
ANNOTATION_TEMPLATE_HASH: Final = "inferenceset.kaito.sh/template-hash"
#: Label key prefix the controller owns on children; a template may not set keys under it.
RESERVED_LABEL_PREFIX: Final = "inferenceset.kaito.sh/"
#: Longest InferenceSet name: ``<name>-<index>`` must still name a Workspace (63 characters)
#: for indexes up to 9999.
MAX_NAME_LENGTH: Final = 58

ROLLING_UPDATE: Final = "RollingUpdate"
ON_DELETE: Final = "OnDelete"


class _TemplateInferenceSpec(InferenceSpec):
    """The Workspace's inference section with its shape rules only (no oldSelf rules): changing
    the preset of a set is allowed and rolled by replacing Workspaces one at a time."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.preset) != has(self.template)",
                    "inference needs exactly one of preset or template",
                ),
                cel(
                    "!has(self.adapters) || self.adapters.all(a, "
                    "self.adapters.exists_one(b, b.source.name == a.source.name))",
                    "inference.adapters: adapter source names must be unique",
                ),
            ]
        },
    )


class TemplateMetadata(KubeModel):
    """Labels and annotations copied onto every child Workspace (annotations such as
    ``kaito.sh/runtime`` steer the children as they steer any Workspace)."""

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class InferenceSetResourceSpec(KubeModel):
    """The GPU SKU of each replica's nodes (required when kaito provisions nodes, as for a
    Workspace) and the GPU partition each replica runs on, copied to every child Workspace as
    upstream does; which nodes the replicas may use is ``spec.labelSelector``."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "x-kubernetes-validations": [
                # as upstream: a child Workspace's partition is immutable, so the set's is too
                cel(
                    "has(self.partition) == has(oldSelf.partition) && "
                    "(!has(self.partition) || self.partition == oldSelf.partition)",
                    "spec.template.resource.partition is immutable; create a new InferenceSet to "
                    "change the GPU partition",
                )
            ]
        },
    )

    instance_type: str | None = Field(default=None, max_length=128)
    partition: PartitionSpec | None = Field(
        default=None,
        description="Each replica's GPU partition (a MIG slice or whole GPUs; BYO nodes only).",
    )


class InferenceSetTemplate(KubeModel):
    """What each child Workspace is made of."""

    metadata: TemplateMetadata | None = None
    resource: InferenceSetResourceSpec = Field(default_factory=InferenceSetResourceSpec)
    inference: _TemplateInferenceSpec


class RollingUpdateStrategy(KubeModel):
    """How many replicas a template change may take out of service at once."""

    max_unavailable: int = Field(default=1, ge=1, description="Replicas rolled at once (an integer).")


class UpdateStrategy(KubeModel):
    """``RollingUpdate`` (default): outdated Workspaces are replaced or updated a few at a time,
    each next one only once the rolled ones are WorkspaceReady. ``OnDelete``: a Workspace takes the
    new template only when someone deletes it (the controller recreates it from the template)."""

    type: Literal["RollingUpdate", "OnDelete"] = ROLLING_UPDATE
    rolling_update: RollingUpdateStrategy | None = None


class InferenceSetSpec(KubeModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(has(self.labelSelector.matchLabels) && size(self.labelSelector.matchLabels) > 0)"
                    " || (has(self.labelSelector.matchExpressions)"
                    " && size(self.labelSelector.matchExpressions) > 0)",
                    "spec.labelSelector needs at least one label (matchLabels or matchExpressions)",
                )
            ]
        },
    )

    template: InferenceSetTemplate
    replicas: int = Field(default=1, ge=0, le=10000, description="Workspaces to run (the scale subresource).")
    #: Accepted for upstream compatibility; upstream v0.12's controller does not read it either.
    node_count_limit: int | None = Field(default=None, ge=0)
    label_selector: LabelSelector = Field(
        description="The nodes each child Workspace may use (its resource.labelSelector)."
    )
    update_strategy: UpdateStrategy | None = None

    @property
    def max_unavailable(self) -> int:
        strategy = self.update_strategy
        if strategy is None or strategy.rolling_update is None:
            return 1
        return strategy.rolling_update.max_unavailable

    @property
    def on_delete(self) -> bool:
        return self.update_strategy is not None and self.update_strategy.type == ON_DELETE


class InferenceSetStatus(KubeModel):
    #: Child Workspaces that exist and are not being deleted (the scale subresource's status).
    replicas: int | None = Field(default=None, ge=0)
    #: Children that are WorkspaceReady for their current spec.
    ready_replicas: int | None = Field(default=None, ge=0)
    #: kaito's: children written from the current template.
    updated_replicas: int | None = Field(default=None, ge=0)
    #: Label selector (string form) of the children and their pods, for HPA / KEDA / VPA.
    selector: str | None = None
    conditions: list[Condition] | None = None
    #: The metadata.generation the controller last acted on.
    observed_generation: int | None = Field(default=None, ge=0)


class InferenceSet(ManifestMixin, KubeModel):
    """N Workspaces from one template, scaled through spec.replicas (the scale subresource)."""

    api_version: Literal["kaito.sh/v1alpha1", "kaito.sh/v1beta1"] = Field(
        default="kaito.sh/v1beta1", alias="apiVersion"
    )
    kind: Literal["InferenceSet"] = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: InferenceSetSpec
    status: InferenceSetStatus | None = None


def child_name(set_name: str, index: int) -> str:
    """The Workspace at ``index`` of the set."""
    return f"{set_name}-{index}"


def child_index(set_name: str, ws_name: str) -> int | None:
    """The index in ``<set>-<index>``; None when the name is not one the set would give."""
    prefix = f"{set_name}-"
    if not ws_name.startswith(prefix):
        return None
    tail = ws_name[len(prefix) :]
    if not tail.isdigit() or (len(tail) > 1 and tail[0] == "0"):
        return None
    return int(tail)


def selector_of(set_name: str) -> str:
    """``status.selector``: the children, and their pods (the workspace controller copies the
    label onto them), in the string form the scale subresource carries."""
    return f"{LABEL_CREATED_BY}={set_name}"


__all__ = [
    "ANNOTATION_TEMPLATE_HASH",
    "CATEGORIES",
    "CONDITION_READY",
    "GROUP",
    "KIND",
    "LABEL_CREATED_BY",
    "LABEL_INDEX",
    "MAX_NAME_LENGTH",
    "ON_DELETE",
    "PLURAL",
    "RESERVED_LABEL_PREFIX",
    "ROLLING_UPDATE",
    "SHORT_NAMES",
    "SINGULAR",
    "STORAGE_VERSION",
    "VERSIONS",
    "InferenceSet",
    "InferenceSetResourceSpec",
    "InferenceSetSpec",
    "InferenceSetStatus",
    "InferenceSetTemplate",
    "RollingUpdateStrategy",
    "TemplateMetadata",
    "UpdateStrategy",
    "child_index",
    "child_name",
    "selector_of",
]
