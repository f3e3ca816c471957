"""The backend ``kaito controller ARGS`` would build, for the settings tests of unit/deploy and
integration/deploy: the real command line parses the flags and the environment, and only its
final "connect and run" step is replaced by capturing the options it would run with; the backend
is built on a Manager that never connects (nothing starts)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio.client import Configuration
from typer.testing import CliRunner

import kaito.cli.controller as controller_cli
from kaito.cli.main import app
from kaito.operator import OperatorOptions, make_provisioner
from kaito.runtime import Manager


def start_controller(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str | None]
) -> OperatorOptions:
    """``kaito controller ARGS`` with ENV; returns the options it would run with."""
    captured: list[OperatorOptions] = []

    async def capture(options: OperatorOptions) -> None:
        captured.append(options)

    monkeypatch.setattr(controller_cli, "run", capture)
    monkeypatch.setattr(controller_cli, "configure_logging", lambda *a, **k: None)
    result = CliRunner().invoke(app, ["controller", *args], env=env)
    assert result.exit_code == 0, result.output
    (options,) = captured
    return options


def build(options: OperatorOptions) -> Any:
    """The backend the operator would build from ``options``."""

    async def make() -> Any:
        cfg = Configuration()
        cfg.host = "https://127.0.0.1:1"
        return make_provisioner(Manager(cfg, handle_signals=False), options)

    return asyncio.run(make())
