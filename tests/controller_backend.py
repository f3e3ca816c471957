"""What ``kaito controller ARGS`` would run with, for the settings tests of unit/deploy and
integration/deploy: the real command line with ``--dry-run`` parses the flags and the environment,
builds the node-provisioner backend without connecting, and prints both as JSON."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from kaito.cli.main import app


def dry_run(args: list[str], env: dict[str, str | None]) -> dict[str, Any]:
    """``kaito controller ARGS --dry-run`` with ENV (None unsets a variable): its report."""
    result = CliRunner().invoke(app, ["controller", *args, "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def backend_of(args: list[str], env: dict[str, str | None]) -> dict[str, Any]:
    """The backend the dry run built: its name, type and resolved settings."""
    backend: dict[str, Any] = dry_run(args, env)["backend"]
    return backend
