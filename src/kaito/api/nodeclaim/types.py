"""The karpenter.sh/v1 NodeClaim and NodePool shapes kaito writes.

Only the fields kaito sets or reads are modelled; everything else the real Karpenter CRDs carry
passes through (``extra="allow"``) so a read-modify-write never drops a field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from kaito.api.meta import Condition, KubeModel, ManifestMixin, ObjectMeta
from kaito.runtime import GVK

KARPENTER_GROUP = "karpenter.sh"
KARPENTER_VERSION = "v1"
KARPENTER_API_VERSION = f"{KARPENTER_GROUP}/{KARPENTER_VERSION}"
#: The kinds, as the client and the informers address them (the one definition kaito has).
NODECLAIM = GVK(KARPENTER_GROUP, KARPENTER_VERSION, "NodeClaim")
NODEPOOL = GVK(KARPENTER_GROUP, KARPENTER_VERSION, "NodePool")
LABEL_NODEPOOL = "karpenter.sh/nodepool"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
KAITO_NODEPOOL = "kaito"
#: The taint every GPU node kaito asks for carries (``sku=gpu:NoSchedule``, as upstream Kaito and
#: AKS GPU pools): only pods tolerating it land there. ``kaito.nodes.gpu`` builds taint and
#: toleration from these two.
GPU_TAINT_KEY = "sku"
GPU_TAINT_VALUE = "gpu"

# NodeClaim condition types (karpenter v1).
LAUNCHED = "Launched"
REGISTERED = "Registered"
INITIALIZED = "Initialized"
READY = "Ready"


class _Open(KubeModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class NodeClassReference(_Open):
    group: str
    kind: str
    name: str


class NodeSelectorRequirement(_Open):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] | None = None
    min_values: int | None = Field(default=None, ge=1)


class Taint(_Open):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class ResourceRequirements(_Open):
    requests: dict[str, str] | None = None


class NodeClaimSpec(_Open):
    node_class_ref: NodeClassReference
    requirements: list[NodeSelectorRequirement] = Field(default_factory=list)
    resources: ResourceRequirements | None = None
    taints: list[Taint] | None = None
    startup_taints: list[Taint] | None = None
    expire_after: str | None = None
    termination_grace_period: str | None = None


class NodeClaimStatus(_Open):
    node_name: str | None = None
    provider_id: str | None = Field(default=None, alias="providerID")
    image_id: str | None = Field(default=None, alias="imageID")
    capacity: dict[str, str] | None = None
    allocatable: dict[str, str] | None = None
    conditions: list[Condition] | None = None


class NodeClaim(ManifestMixin, _Open):
    api_version: Literal["karpenter.sh/v1"] = Field(default="karpenter.sh/v1", alias="apiVersion")
    kind: Literal["NodeClaim"] = "NodeClaim"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: NodeClaimSpec
    status: NodeClaimStatus | None = None


class NodePoolTemplateMeta(_Open):
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class NodePoolTemplateSpec(_Open):
    node_class_ref: NodeClassReference
    requirements: list[NodeSelectorRequirement] = Field(default_factory=list)
    taints: list[Taint] | None = None
    startup_taints: list[Taint] | None = None
    expire_after: str | None = None
    termination_grace_period: str | None = None


class NodePoolTemplate(_Open):
    metadata: NodePoolTemplateMeta | None = None
    spec: NodePoolTemplateSpec


class Disruption(_Open):
    consolidation_policy: Literal["WhenEmpty", "WhenEmptyOrUnderutilized"] | None = None
    consolidate_after: str | None = None
    budgets: list[dict[str, Any]] | None = None


class NodePoolSpec(_Open):
    template: NodePoolTemplate
    disruption: Disruption | None = None
    limits: dict[str, str] | None = None
    weight: int | None = Field(default=None, ge=1, le=100)
    #: Static capacity: karpenter keeps exactly this many nodes (kaito's per-Workspace pools).
    replicas: int | None = Field(default=None, ge=0)


class NodePoolStatus(_Open):
    resources: dict[str, str] | None = None
    conditions: list[Condition] | None = None
    node_count: int | None = None


class NodePool(ManifestMixin, _Open):
    api_version: Literal["karpenter.sh/v1"] = Field(default="karpenter.sh/v1", alias="apiVersion")
    kind: Literal["NodePool"] = "NodePool"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: NodePoolSpec
    status: NodePoolStatus | None = None
