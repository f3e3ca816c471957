"""Wiring of kaito's node-provisioner: pick a CloudProvider, register the NodeClaim controller.

Used by ``kaito node-provisioner`` (its own process and Deployment, like upstream's
gpu-provisioner) and by ``kaito controller --node-provisioner gpu-provisioner
--node-provisioner-cloud kwok``, which runs it in the controller's process: the local cluster
(``make run``) then needs one process, not two. A real cloud keeps it separate (its own identity
and Deployment), so in-process is offered only for clouds registered ``in_process`` (kwok). The
clouds come from :mod:`kaito.provisioners.cloud.registry` and are imported only when chosen, so a
kwok-only install never loads the Azure SDK.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from kaito.controllers.nodeclaim import NodeClaimController, NodeClaimOptions, setup_nodeclaim_controller
from kaito.nodes import CloudProvider
from kaito.operator.options import OperatorOptions
from kaito.provisioners.cloud import (
    CLOUDS,
    CloudOptions,
    changed_fields,
    cloud_spec,
    default_cloud_options,
    with_defaults,
)
from kaito.runtime import Manager

#: Clouds ``kaito controller --node-provisioner-cloud`` runs in its own process.
IN_PROCESS_CLOUDS = tuple(name for name, spec in CLOUDS.items() if spec.in_process)


@dataclass
class NodeProvisionerOptions:
    """What ``kaito node-provisioner`` takes on its command line."""

    cloud: str = "kwok"
    """Where nodes come from: a registered cloud (kwok | aks)."""
    claims: NodeClaimOptions = field(default_factory=NodeClaimOptions)
    """How claims are judged (timeouts, garbage collection)."""
    clouds: dict[str, CloudOptions] = field(default_factory=default_cloud_options)
    """Each registered cloud's settings, by cloud name; only the chosen cloud's may differ from
    their defaults."""

    def options(self) -> CloudOptions:
        """The chosen cloud's settings (its defaults when none were given)."""
        spec = cloud_spec(self.cloud)
        return self.clouds.get(self.cloud) or spec.options()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(options: NodeProvisionerOptions) -> None:
    """Raise ValueError (one line naming the flag and the fix) before anything starts."""
    cloud_spec(options.cloud)
    for name, given in with_defaults(options.clouds).items():
        if name == options.cloud:
            continue
        changed = changed_fields(given)
        if changed:
            raise ValueError(
                f"{_flag(changed[0])} is for --cloud {name} (a {name} setting), "
                f"not {options.cloud!r}; drop it"
            )
    options.options().check()


def build_cloud(manager: Manager, options: NodeProvisionerOptions) -> CloudProvider:
    """The CloudProvider named by ``options.cloud``; a clear error names the missing setting."""
    validate(options)
    return cloud_spec(options.cloud).new(manager.client, options.options())


def setup_node_provisioner(manager: Manager, options: NodeProvisionerOptions) -> NodeClaimController:
    """Register the NodeClaim controller and its orphan collector on ``manager``."""
    cloud = build_cloud(manager, options)
    ctrl = setup_nodeclaim_controller(manager, cloud, options.claims)
    close = getattr(cloud, "close", None)
    if close is not None:

        async def close_on_stop(stop: asyncio.Event) -> None:
            await stop.wait()
            await close()

        manager.add(close_on_stop, needs_leader_election=False)
    return ctrl


def in_process_options(options: OperatorOptions) -> NodeProvisionerOptions | None:
    """The node-provisioner ``kaito controller`` runs itself, or None (an external one serves the
    claims). Raises ValueError naming the flag and the fix for a combination that cannot work."""
    chosen = options.cloud.name
    clouds = with_defaults(options.cloud.clouds)
    if not chosen:
        for name, given in clouds.items():
            changed = changed_fields(given)
            if changed:
                raise ValueError(
                    f"{_flag(changed[0])} needs --node-provisioner-cloud {name} "
                    "(the cloud that serves the claims)"
                )
        return None
    if options.provisioner.name != "gpu-provisioner":
        raise ValueError(
            f"--node-provisioner-cloud serves NodeClaims; use it with --node-provisioner gpu-provisioner, "
            f"not {options.provisioner.name!r}"
        )
    if chosen not in IN_PROCESS_CLOUDS:
        raise ValueError(
            f"--node-provisioner-cloud {chosen!r}: only {', '.join(IN_PROCESS_CLOUDS)} runs in the "
            f"controller; run `kaito node-provisioner --cloud {chosen}` as its own process"
        )
    np = NodeProvisionerOptions(cloud=chosen, clouds=dict(clouds))
    validate(np)
    return np


__all__ = [
    "IN_PROCESS_CLOUDS",
    "NodeProvisionerOptions",
    "build_cloud",
    "in_process_options",
    "setup_node_provisioner",
    "validate",
]
