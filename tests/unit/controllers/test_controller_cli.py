"""`kaito controller`: controller-runtime style flags, clear one-line errors for bad choices."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from typer.testing import CliRunner

from kaito.cli.main import app, load_command
from kaito.operator import OperatorOptions
from kaito.operator.featuregates import FeatureGates
from kaito.operator.nodeprovisioner import NodeProvisionerOptions
from kaito.provisioners.cloud import CLOUDS
from kaito.provisioners.options import NodeClassAPI
from kaito.runtime import field_docs


def test_help_lists_controller_runtime_flags() -> None:
    command = load_command("controller")
    out = " ".join(opt for p in command.params for opt in p.opts)
    for flag in (
        "--kubeconfig",
        "--metrics-bind-address",
        "--health-probe-bind-address",
        "--leader-elect",
        "--node-provisioner",
        "--inference-image",
        "--tuning-image",
    ):
        assert flag in out


def test_unknown_node_provisioner_is_one_line_naming_the_choices() -> None:
    result = CliRunner().invoke(app, ["controller", "--node-provisioner", "nope"])
    assert result.exit_code == 2
    assert "--node-provisioner 'nope' is not available; choose one of: byo" in result.output


def test_webhook_needs_its_certificates() -> None:
    result = CliRunner().invoke(app, ["controller", "--webhook", "--webhook-certs", "external"])
    assert result.exit_code == 2 and "--webhook-cert-dir" in result.output


def _leaf_docs(cls: type, *, leaves: tuple[type, ...], clouds: tuple[str, ...]) -> dict[str, str]:
    """``Class.field`` -> docstring for every setting under ``cls``: nested option groups are
    walked into (``leaves`` are values parsed from one flag, not groups), and a ``clouds`` dict
    into the options of each named registered cloud."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type) and hint not in leaves:
            out.update(_leaf_docs(hint, leaves=leaves, clouds=clouds))
        elif f.name == "clouds":
            for name in clouds:
                out.update(_leaf_docs(CLOUDS[name].options, leaves=leaves, clouds=clouds))
        else:
            assert f.name in docs, f"{cls.__name__}.{f.name} has no docstring"
            out[f"{cls.__name__}.{f.name}"] = docs[f.name]
    return out


def _helps(command_name: str) -> set[str]:
    command = load_command(command_name)
    return {" ".join((p.help or "").split()) for p in command.params}


@pytest.mark.parametrize(
    ("command", "options", "clouds"),
    [
        ("controller", OperatorOptions, tuple(n for n, s in CLOUDS.items() if s.in_process)),
        ("node-provisioner", NodeProvisionerOptions, tuple(CLOUDS)),
    ],
)
def test_every_option_field_is_a_flag_whose_help_is_its_docstring(
    command: str, options: type, clouds: tuple[str, ...]
) -> None:
    """The help is generated from the options' docstrings, never typed again: every setting's
    docstring is the help text of one of the command's flags."""
    docs = _leaf_docs(options, leaves=(FeatureGates, NodeClassAPI), clouds=clouds)
    assert len(docs) > 10
    helps = _helps(command)
    missing = [name for name, doc in docs.items() if doc not in helps]
    assert not missing, f"kaito {command}: no flag has the docstring of {missing} as its help"
