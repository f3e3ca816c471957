"""The slice of Kubernetes object metadata and condition shapes kaito's types share."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class KubeModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors (like kubectl)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ManifestMixin:
    """Conversion to and from the plain dicts the runtime and the API server speak, for the
    top-level kinds (mixed into a KubeModel subclass)."""

    @classmethod
    def from_manifest(cls, obj: dict[str, Any]) -> Self:
        result: Self = cls.model_validate(obj)  # type: ignore[attr-defined]
        return result

    def to_manifest(self) -> dict[str, Any]:
        result: dict[str, Any] = self.to_dict()  # type: ignore[attr-defined]
        return result


class ObjectMeta(KubeModel):
    """Metadata as the apiserver returns it; fields kaito does not read pass through untouched."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    finalizers: list[str] | None = None
    owner_references: list[dict[str, Any]] | None = None


class LabelSelectorRequirement(KubeModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(KubeModel):
    """A metav1.LabelSelector."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class Condition(KubeModel):
    """A metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = Field(default=None, ge=0)


def selector_matches(selector: dict[str, Any], labels: dict[str, str] | None) -> bool:
    """metav1.LabelSelector semantics on plain dicts: every matchLabel and every matchExpression.

    The workspace controller (mapping Node events) and the BYO provisioner (choosing nodes) must
    agree exactly on which nodes a Workspace selects, so both use this one function.
    """
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.get("matchExpressions") or ():
        key, op, values = req.get("key", ""), req.get("operator"), req.get("values") or ()
        present = key in labels
        if op == "In" and (not present or labels[key] not in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True
