"""Typed settings of each NodeProvisioner backend, one dataclass per backend.

Why one per backend and not one bag: each backend reads only what is its own, mypy checks every
read, and a setting nobody reads cannot hide in a shared ``Any``. ``kaito controller`` fills
them from its flags (and, for ``CLOUD_PROVIDER``, the environment the chart sets) into
:class:`kaito.operator.OperatorOptions`, which hands each backend its own.

Each field's docstring is its ``kaito controller`` flag's help text. This module imports nothing
heavy, so the CLI can build the options of every backend without loading any of them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Cloud = Literal["azure", "aws"]
CLOUDS: tuple[Cloud, ...] = ("azure", "aws")
#: Environment variable upstream Kaito's chart sets for the cloud (the chart's ``cloudProvider``).
CLOUD_PROVIDER_ENV = "CLOUD_PROVIDER"
DEFAULT_CLOUD: Cloud = "azure"


def parse_cloud(value: str, source: str) -> Cloud:
    """``value`` as a supported cloud; ValueError naming ``source`` (the flag or variable) else."""
    lowered = value.strip().lower()
    for cloud in CLOUDS:
        if lowered == cloud:
            return cloud
    raise ValueError(f"{source}={value!r} is not supported: use {' or '.join(CLOUDS)}")


def resolve_cloud(explicit: str | None, environ: Mapping[str, str] | None = None) -> Cloud:
    """The cloud by precedence: an explicit setting (``--cloud-provider``) > ``$CLOUD_PROVIDER``
    (what the chart sets) > azure. An empty value counts as unset at each level."""
    if explicit:
        return parse_cloud(explicit, "--cloud-provider")
    env = os.environ if environ is None else environ
    from_env = env.get(CLOUD_PROVIDER_ENV, "")
    if from_env.strip():
        return parse_cloud(from_env, CLOUD_PROVIDER_ENV)
    return DEFAULT_CLOUD


@dataclass(frozen=True)
class BYOOptions:
    """``--node-provisioner byo`` has no settings: it selects Nodes the user already has and
    never creates or deletes any, so there is nothing cloud- or class-specific to choose."""


@dataclass(frozen=True)
class GPUProvisionerOptions:
    """Settings of ``--node-provisioner gpu-provisioner`` (NodeClaims, as upstream Kaito writes)."""

    cloud_provider: Cloud | None = None
    """gpu-provisioner backend: the cloud whose NodeClaim shape to write (nodeClassRef,
    requirements), azure or aws (default: $CLOUD_PROVIDER, which the chart sets, else azure)."""
    orphan_nodeclaim_grace: float = 300.0
    """gpu-provisioner: age (s) before a NodeClaim of no Workspace is deleted. The finalizer
    deletes a Workspace's claims; this sweep catches any that escaped it (a create answered after
    the finalizer ran, a finalizer removed by hand), which would otherwise hold a GPU node forever."""
    orphan_nodeclaim_interval: float = 60.0
    """gpu-provisioner: seconds between two sweeps for such claims (the first runs at start)."""
    preferred_node_grace: float = 300.0
    """gpu-provisioner: seconds a NotReady preferred node still counts (a kubelet restart must not
    buy a GPU node that its return makes surplus)."""

    def cloud(self, environ: Mapping[str, str] | None = None) -> Cloud:
        """The cloud these options select, the environment filling in an unset value."""
        return resolve_cloud(self.cloud_provider, environ)


@dataclass(frozen=True)
class NodeClassRef:
    """A Karpenter ``nodeClassRef``: which provider-specific node class a NodePool's nodes use."""

    #: API group of the node class (``karpenter.azure.com``, ``karpenter.k8s.aws``...).
    group: str
    #: Kind of the node class (``AKSNodeClass``, ``EC2NodeClass``, ``KWOKNodeClass``).
    kind: str
    #: Name of the node class object.
    name: str

    @classmethod
    def parse(cls, text: str) -> NodeClassRef:
        """``group/Kind/name`` (the flag's form); ValueError naming the flag and the form."""
        parts = text.strip().split("/")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ValueError(
                f"--karpenter-node-class {text!r} is not group/Kind/name "
                "(e.g. karpenter.azure.com/AKSNodeClass/default)"
            )
        group, kind, name = (p.strip() for p in parts)
        return cls(group=group, kind=kind, name=name)

    def as_ref(self) -> dict[str, str]:
        """The ``nodeClassRef`` object a NodePool template carries."""
        return {"group": self.group, "kind": self.kind, "name": self.name}


@dataclass(frozen=True)
class NodeClassAPI:
    """The API type of a Karpenter provider's node class: what kaito creates and GETs the
    ``--karpenter-node-classes`` as, and the group/kind every NodePool's ``nodeClassRef`` names."""

    #: API group (``karpenter.azure.com``).
    group: str
    #: API version the objects are written in (``v1beta1``).
    version: str
    #: Kind (``AKSNodeClass``).
    kind: str

    @classmethod
    def parse(cls, text: str) -> NodeClassAPI:
        """A provider name (``kwok``, ``azure``, ``aws``) or ``group/version/Kind``; ValueError
        naming the flag, the form and the providers otherwise."""
        value = text.strip()
        preset = NODE_CLASS_APIS.get(value.lower())
        if preset is not None:
            return preset
        parts = [p.strip() for p in value.split("/")]
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"--karpenter-node-class-api {text!r} is neither a provider "
                f"({', '.join(NODE_CLASS_APIS)}) nor group/version/Kind "
                "(e.g. karpenter.azure.com/v1beta1/AKSNodeClass)"
            )
        return cls(group=parts[0], version=parts[1], kind=parts[2])

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


#: The node class API of each Karpenter provider kaito knows, by the name the flag and the chart
#: take: kwok's (the local peer, kaito's default), Azure's AKSNodeClass (the type upstream Kaito's
#: chart configures) and AWS's EC2NodeClass (the type upstream's AWS NodeClaims reference).
NODE_CLASS_APIS: dict[str, NodeClassAPI] = {
    "kwok": NodeClassAPI("karpenter.kwok.sh", "v1alpha1", "KWOKNodeClass"),
    "azure": NodeClassAPI("karpenter.azure.com", "v1beta1", "AKSNodeClass"),
    "aws": NodeClassAPI("karpenter.k8s.aws", "v1", "EC2NodeClass"),
}

#: A DNS-1123 subdomain: what a cluster-scoped object's name must be.
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENTRY_KEYS = ("name", "default", "spec")


@dataclass(frozen=True)
class NodeClassEntry:
    """One entry of ``--karpenter-node-classes``: a node class Workspaces may select by name."""

    #: The node class object's name (what ``kaito.sh/node-class-name`` takes).
    name: str
    #: The class a Workspace without the annotation gets; exactly one entry has it.
    default: bool = False
    #: The provider's spec, passed through unchanged; kaito creates the class with it and keeps
    #: it so. None: kaito adopts an existing class as it is (it must exist) and never writes it.
    spec: Mapping[str, object] | None = None


def parse_node_classes(text: str) -> tuple[NodeClassEntry, ...]:
    """``--karpenter-node-classes``: a JSON array of ``{"name", "default", "spec"}`` objects,
    exactly one default, names unique DNS-1123 subdomains. Sorted by name. ValueError naming the
    entry (index and name) and the field otherwise, so that a chart typo is found from the log."""
    flag = "--karpenter-node-classes"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{flag} is not JSON ({exc}); give an array such as "
            '[{"name":"image-family-ubuntu","default":true,"spec":{...}}]'
        ) from None
    if not isinstance(raw, list) or not raw:
        raise ValueError(
            f'{flag} must be a non-empty JSON array of {{"name", "default", "spec"}} objects, '
            f"not {type(raw).__name__ if raw else 'an empty one'}"
        )
    entries: list[NodeClassEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{flag}[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object with name, default and spec, not {item!r}")
        name = item.get("name")
        if isinstance(name, str) and name:
            where = f"{flag}[{i}] ({name})"
        unknown = sorted(set(item) - set(_ENTRY_KEYS))
        if unknown:
            raise ValueError(
                f"{where}: unknown field {unknown[0]!r}; an entry takes {', '.join(_ENTRY_KEYS)}"
            )
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.name is required: the node class object's name")
        if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            raise ValueError(
                f"{where}.name {name!r} is not a valid object name: use lowercase letters, digits, "
                "'-' and '.', starting and ending with a letter or digit"
            )
        if name in seen:
            raise ValueError(f"{where}.name {name!r} is declared twice; node class names are unique")
        seen.add(name)
        default = item.get("default", False)
        if not isinstance(default, bool):
            raise ValueError(f"{where}.default must be true or false, not {default!r}")
        spec = item.get("spec")
        if spec is not None and not isinstance(spec, dict):
            raise ValueError(
                f"{where}.spec must be an object (the provider's node class spec) or left out to "
                f"adopt an existing class, not {type(spec).__name__}"
            )
        entries.append(NodeClassEntry(name=name, default=default, spec=spec))
    defaults = [e.name for e in entries if e.default]
    if len(defaults) != 1:
        raise ValueError(
            f'{flag}: exactly one entry must have "default": true, found {len(defaults)}'
            + (f" ({', '.join(defaults)})" if defaults else "")
        )
    return tuple(sorted(entries, key=lambda e: e.name))


@dataclass(frozen=True)
class KarpenterOptions:
    """Settings of ``--node-provisioner karpenter`` (one static NodePool per Workspace).

    Two ways to name the node class. ``node_classes`` (upstream's ``--karpenter-node-classes``):
    kaito creates or adopts each class at start, of the ``node_class_api`` type, and a Workspace
    picks one with ``kaito.sh/node-class-name`` (the default otherwise). ``node_class`` (the single
    reference ``group/Kind/name``): every NodePool references that one existing class, which
    kaito neither creates nor checks; the annotation may name only it. Neither: kwok's ``default``
    class (the local peer). Giving both is refused.
    """

    node_class: NodeClassRef | None = None
    """karpenter backend: one existing node class every NodePool references, as group/Kind/name,
    e.g. karpenter.azure.com/AKSNodeClass/default; kaito neither creates nor checks it (default:
    kwok's; exclusive with --karpenter-node-classes, which a real cloud should use)."""
    node_classes: tuple[NodeClassEntry, ...] = ()
    """karpenter backend: JSON array of the node classes kaito creates (or adopts, without a
    spec) at start and Workspaces select with kaito.sh/node-class-name, e.g.
    [{"name":"image-family-ubuntu","default":true,"spec":{"imageFamily":"Ubuntu2204"}}]; exactly
    one default; spec passed through to the provider's class (the chart's karpenterProviders)."""
    node_class_api: NodeClassAPI = NODE_CLASS_APIS["kwok"]
    """karpenter backend: the type of --karpenter-node-classes: kwok, azure (AKSNodeClass), aws
    (EC2NodeClass) or group/version/Kind."""

    def __post_init__(self) -> None:
        if self.node_class is not None and self.node_classes:
            raise ValueError(
                "--karpenter-node-class and --karpenter-node-classes are exclusive: give the "
                "classes kaito manages, or one existing class to reference, not both"
            )

    @property
    def default_class(self) -> str:
        """The name of the class a Workspace without ``kaito.sh/node-class-name`` gets."""
        if self.node_classes:
            return next(e.name for e in self.node_classes if e.default)
        return self.node_class.name if self.node_class is not None else "default"

    @property
    def class_names(self) -> tuple[str, ...]:
        """What ``kaito.sh/node-class-name`` may name (the webhook's allowlist), sorted."""
        if self.node_classes:
            return tuple(e.name for e in self.node_classes)
        return (self.default_class,)

    def ref(self, name: str | None = None) -> dict[str, str]:
        """The ``nodeClassRef`` of class ``name`` (default: the default class)."""
        if self.node_class is not None and not self.node_classes:
            return {**self.node_class.as_ref(), "name": name or self.node_class.name}
        api = self.node_class_api
        return {"group": api.group, "kind": api.kind, "name": name or self.default_class}


__all__ = [
    "CLOUDS",
    "CLOUD_PROVIDER_ENV",
    "DEFAULT_CLOUD",
    "NODE_CLASS_APIS",
    "BYOOptions",
    "Cloud",
    "GPUProvisionerOptions",
    "KarpenterOptions",
    "NodeClassAPI",
    "NodeClassEntry",
    "NodeClassRef",
    "parse_cloud",
    "parse_node_classes",
    "resolve_cloud",
]
