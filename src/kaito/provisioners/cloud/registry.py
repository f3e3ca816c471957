"""The clouds kaito's node-provisioner can serve NodeClaims with, by name (``--cloud``).

Adding a cloud is one package under ``kaito.provisioners.cloud`` (an options dataclass and a
``new_cloud(client, options)`` factory) and one line in :data:`CLOUDS`. The options class is
imported here, the factory only when the cloud is chosen, so a process that never uses a cloud
never loads its SDK. ``kaito node-provisioner`` makes one flag per field of every registered
cloud's options (``--field-name``, the field's docstring as help), so a new cloud's settings
reach the command line without touching the CLI.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

from kaito.nodes import CloudProvider
from kaito.provisioners.cloud.aks.options import AksOptions
from kaito.provisioners.cloud.kwok.options import KwokOptions
from kaito.runtime import Client


class CloudOptions(Protocol):
    """What every cloud's options dataclass offers besides its fields."""

    def check(self) -> None:
        """Raise ValueError (one line naming the flag and the fix) for settings that cannot work."""
        ...


#: ``new_cloud(client, options) -> CloudProvider``, the one entry point of a cloud package.
CloudFactory = Callable[[Client, CloudOptions], CloudProvider]


@dataclass(frozen=True)
class CloudSpec:
    """One registered cloud."""

    #: The cloud's options dataclass (frozen, every field defaulted, each with a docstring).
    options: type[CloudOptions]
    #: ``"module:function"`` of its factory, imported only when the cloud is chosen.
    factory: str
    #: Whether ``kaito controller --node-provisioner-cloud`` may run it in the controller's own
    #: process. Only a cloud that needs no identity of its own (the local kwok); a real cloud
    #: runs as ``kaito node-provisioner``, its own Deployment with its own credentials.
    in_process: bool = False

    def new(self, client: Client, options: CloudOptions) -> CloudProvider:
        """The cloud, built by its factory from ``options``."""
        module, _, attr = self.factory.partition(":")
        factory = cast(CloudFactory, getattr(importlib.import_module(module), attr))
        return factory(client, options)


CLOUDS: dict[str, CloudSpec] = {
    "kwok": CloudSpec(KwokOptions, "kaito.provisioners.cloud.kwok:new_cloud", in_process=True),
    "aks": CloudSpec(AksOptions, "kaito.provisioners.cloud.aks:new_cloud"),
}


def default_cloud_options() -> dict[str, CloudOptions]:
    """Every registered cloud's options at their defaults, by cloud name."""
    return {name: spec.options() for name, spec in CLOUDS.items()}


def cloud_spec(name: str, flag: str = "--cloud") -> CloudSpec:
    """The registered cloud ``name``; ValueError naming ``flag`` and the choices otherwise."""
    spec = CLOUDS.get(name)
    if spec is None:
        raise ValueError(f"{flag} {name!r} is not supported: use one of {', '.join(CLOUDS)}")
    return spec


def changed_fields(options: CloudOptions) -> list[str]:
    """The fields of one cloud's options that differ from their defaults (to refuse settings
    given for a cloud that is not the one chosen)."""
    default = type(options)()
    return [
        f.name
        for f in dataclasses.fields(options)  # type: ignore[arg-type]
        if getattr(options, f.name) != getattr(default, f.name)
    ]


def with_defaults(given: Mapping[str, CloudOptions]) -> dict[str, CloudOptions]:
    """``given`` completed with the defaults of every cloud it does not name."""
    return {**default_cloud_options(), **given}


__all__ = [
    "CLOUDS",
    "CloudFactory",
    "CloudOptions",
    "CloudSpec",
    "changed_fields",
    "cloud_spec",
    "default_cloud_options",
    "with_defaults",
]
