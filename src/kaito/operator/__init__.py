"""Composition root: one options object wires the Manager, the controllers, the chosen node
provisioner and the webhook, so `kaito controller` stays a thin CLI."""

from kaito.operator.options import OperatorOptions
from kaito.operator.wiring import Operator, build_operator, make_provisioner, run
from kaito.provisioners.registry import BACKENDS

__all__ = ["BACKENDS", "Operator", "OperatorOptions", "build_operator", "make_provisioner", "run"]
