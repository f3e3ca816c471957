"""`kaito controller`: controller-runtime style flags, clear one-line errors for bad choices."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from kaito.cli.main import app
from kaito.operator import BACKENDS, OperatorOptions, make_provisioner


def test_help_lists_controller_runtime_flags() -> None:
    import typer.main

    command = typer.main.get_command(app).commands["controller"]  # type: ignore[attr-defined]
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


def test_every_option_is_documented() -> None:
    import inspect

    source = inspect.getsource(OperatorOptions)
    for f in dataclasses.fields(OperatorOptions):
        before = source.split(f"    {f.name}:")[0].rstrip().splitlines()[-1].strip()
        assert before.startswith("#:"), f"OperatorOptions.{f.name} has no #: docstring of its own"


def test_factory_refuses_unknown_backend_names() -> None:
    assert "byo" in BACKENDS
    with pytest.raises(ValueError, match="choose one of"):
        make_provisioner(None, OperatorOptions(node_provisioner="karpenterx"))  # type: ignore[arg-type]
