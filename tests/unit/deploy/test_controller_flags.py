"""``kaito controller`` refuses bad deployment flags with one line naming the flag and the fix,
before it connects anywhere."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kaito.cli.main import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--feature-gates", "nope=true"], "--feature-gates: unknown gate 'nope'; known: vLLM, "),
        (["--feature-gates", "vLLM=false"], "vLLM=false is not supported"),
        (["--webhook-certs", "acme"], "--webhook-certs must be self-signed or external"),
        (["--webhook", "--webhook-certs", "external"], "--webhook-certs external needs --webhook-cert-dir"),
        (["--log-level", "loud"], "--log-level must be debug, info, warning or error"),
        (["--log-format", "xml"], "--log-format must be console, json or auto"),
    ],
)
def test_bad_flags_exit_2_with_the_fix(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["controller", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
