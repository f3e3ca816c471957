"""kaito validate / presets / estimate through typer's runner (same code path as the console)."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from kaito.cli import estimate, presets, validate

SEED = Path(__file__).parent / "seed"
runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(presets.app, name="presets")
    app.command("validate")(validate.validate)
    app.command("estimate")(estimate.estimate_cmd)
    return app


def test_validate_seed_files_pass() -> None:
    files = sorted(str(p) for p in SEED.glob("*.yaml"))
    args = ["validate"] + [a for f in files for a in ("-f", f)]
    res = runner.invoke(_app(), args)
    assert res.exit_code == 0, res.output
    assert "4 checked, 0 rejected" in res.output


def test_validate_rejection_exits_1_and_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (SEED / "phi3_inference.yaml").read_text().replace("Standard_NC6s_v3", "Standard_XYZ")
    bad.write_text(text + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    res = runner.invoke(_app(), ["validate", "-f", str(bad), str(SEED / "phi3_tuning.yaml")])
    assert res.exit_code == 1
    assert "resource.instanceType: 'Standard_XYZ' is not a known GPU SKU for azure" in res.output
    assert "skipped ConfigMap" in res.output and "2 checked, 1 rejected" in res.output
    missing = runner.invoke(_app(), ["validate", "-f", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "cannot read" in missing.output
    assert runner.invoke(_app(), ["validate"]).exit_code == 2


def test_presets_list_and_skus() -> None:
    res = runner.invoke(_app(), ["presets", "list"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "phi-3-mini-4k-instruct" in res.output and "phi-2" not in res.output
    res = runner.invoke(_app(), ["presets", "skus", "--cloud", "aws"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "p4d.24xlarge" in res.output and "Standard_NC6s_v3" not in res.output


def test_estimate_one_and_ranking() -> None:
    res = runner.invoke(
        _app(),
        ["estimate", "--preset", "phi-3-mini-4k-instruct", "--instance-type", "Standard_NC6s_v3"],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "float16" in res.output and "13376 tokens" in res.output
    assert "upstream Kaito v0.12 no longer supports Standard_NC6s_v3" in res.output
    res = runner.invoke(
        _app(), ["estimate", "--preset", "llama-3.3-70b-instruct", "--cloud", "azure"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0 and "cheapest first" in res.output
    res = runner.invoke(
        _app(), ["estimate", "-p", "gpt-oss-20b", "-t", "Standard_NC6s_v3"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 1 and "compute capability" in res.output
    res = runner.invoke(_app(), ["estimate", "-p", "nope"])
    assert res.exit_code == 1 and "unknown preset" in res.output
