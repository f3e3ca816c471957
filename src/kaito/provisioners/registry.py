"""The NodeProvisioner backends by ``--node-provisioner`` name, each with its options dataclass.

A backend is ``factory(manager, options) -> NodeProvisioner``, its ``options`` an instance of
the registered dataclass (:mod:`kaito.provisioners.options`). The factory is imported only when
the backend is chosen, so a backend's dependencies cost nothing to processes that do not use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from kaito.nodes import NodeProvisioner
from kaito.provisioners.options import BYOOptions, GPUProvisionerOptions, KarpenterOptions
from kaito.runtime import Manager

BackendOptions = BYOOptions | GPUProvisionerOptions | KarpenterOptions
BackendFactory = Callable[[Manager, BackendOptions], NodeProvisioner]


@dataclass(frozen=True)
class BackendSpec:
    """One registered NodeProvisioner backend."""

    #: The backend's own options dataclass.
    options: type[BackendOptions]
    #: ``"module:attribute"`` of its factory (a class or function taking manager and options),
    #: or the factory itself (an embedder's or a test's own backend).
    factory: str | BackendFactory

    def new(self, manager: Manager, options: BackendOptions) -> NodeProvisioner:
        """The backend, built by its factory; TypeError when ``options`` is another backend's."""
        if not isinstance(options, self.options):
            raise TypeError(f"{self.factory!r} takes {self.options.__name__}, not {type(options).__name__}")
        factory = self.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = cast(BackendFactory, getattr(importlib.import_module(module), attr))
        return factory(manager, options)


BACKENDS: dict[str, BackendSpec] = {
    "byo": BackendSpec(BYOOptions, "kaito.provisioners.byo:BYOProvisioner"),
    "gpu-provisioner": BackendSpec(GPUProvisionerOptions, "kaito.provisioners.gpu_provisioner:new_backend"),
    "karpenter": BackendSpec(KarpenterOptions, "kaito.provisioners.karpenter:new_backend"),
}

__all__ = ["BACKENDS", "BackendFactory", "BackendOptions", "BackendSpec"]
