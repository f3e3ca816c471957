"""Typed settings of each NodeProvisioner backend, one dataclass per backend.

Why one per backend and not one bag: each backend reads only what is its own, mypy checks every
read, and a setting nobody reads cannot hide in a shared ``Any``. ``kaito controller`` fills
them from its flags (and, for ``CLOUD_PROVIDER``, the environment the chart sets) into
:class:`kaito.operator.OperatorOptions`, which hands each backend its own.

Each field's docstring is its ``kaito controller`` flag's help text. This module imports nothing
heavy, so the CLI can build the options of every backend without loading any of them.
"""

from __future__ import annotations

import os
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
class KarpenterOptions:
    """Settings of ``--node-provisioner karpenter`` (one static NodePool per Workspace)."""

    node_class: NodeClassRef | None = None
    """karpenter backend: the NodePools' node class as group/Kind/name, e.g.
    karpenter.azure.com/AKSNodeClass/default (default: kwok's; a real cloud needs its provider's
    class, the chart's karpenter.nodeClass)."""


__all__ = [
    "CLOUDS",
    "CLOUD_PROVIDER_ENV",
    "DEFAULT_CLOUD",
    "BYOOptions",
    "Cloud",
    "GPUProvisionerOptions",
    "KarpenterOptions",
    "NodeClassRef",
    "parse_cloud",
    "resolve_cloud",
]
