"""The `kaito` entry point itself: --version, shell completion, and `kaito crds` (the CRDs from the
installed package, identical to what the chart and config/ ship)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import yaml
from typer.testing import CliRunner

from kaito.cli.main import app

REPO = Path(__file__).resolve().parents[3]
runner = CliRunner()


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"kaito {metadata.version('kaito')}"


def test_completion_is_offered() -> None:
    result = runner.invoke(app, ["--help"])
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_crds_are_what_the_chart_installs() -> None:
    result = runner.invoke(app, ["crds"])
    assert result.exit_code == 0, result.output
    printed = [d for d in yaml.safe_load_all(result.output) if d]
    chart = [
        d
        for f in sorted((REPO / "charts" / "kaito" / "crds").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    key = lambda d: d["metadata"]["name"]  # noqa: E731
    assert sorted(printed, key=key) == sorted(chart, key=key)
    assert all(d["kind"] == "CustomResourceDefinition" for d in printed)


def test_crds_by_group_and_a_wrong_group_named() -> None:
    result = runner.invoke(app, ["crds", "--group", "kaito.sh"])
    assert result.exit_code == 0, result.output
    groups = {d["spec"]["group"] for d in yaml.safe_load_all(result.output) if d}
    assert groups == {"kaito.sh"}
    result = runner.invoke(app, ["crds", "--group", "kaito.io"])
    assert result.exit_code == 2
    assert "kaito.io is not a group kaito defines" in result.output
    assert "kaito.sh" in result.output and "karpenter.sh" in result.output


def test_serve_help_documents_every_flag() -> None:
    from kaito.inference.config import build_parser

    actions = [a for a in build_parser()._actions if a.option_strings]
    undocumented = [a.option_strings[0] for a in actions if not (a.help or "").strip()]
    assert not undocumented, f"kaito serve flags without help: {undocumented}"


def test_every_command_is_listed_and_loads() -> None:
    """The lazy table of contents: `kaito --help` names every command, and each one imports."""
    from kaito.cli.main import COMMANDS, load_command

    listing = runner.invoke(app, ["--help"]).output
    for name in COMMANDS:
        assert name in listing
        assert load_command(name).name == name


def test_the_controller_process_imports_only_what_it_runs() -> None:
    """`kaito controller` is the long-lived process: the local control plane's modules (and the
    certificate library they pull in, ~16 MB resident) stay out unless a webhook serves, and so
    do rich and pygments, which structlog would import for tracebacks kaito renders itself."""
    import subprocess
    import sys

    probe = (
        "import sys, kaito.cli.main as m\n"
        "sys.argv = ['kaito', 'controller', '--dry-run']\n"
        "try:\n    m.app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(k for k in ('cryptography', 'kaito.envtest', 'kaito.localnode', 'kaito.cli.local',"
        " 'kaito.weights', 'rich', 'pygments') if k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
