"""kubectl-style output of presets / estimate / validate: fits 80 columns, -o wide|json|yaml.

Runs the typer commands through typer's runner (the same code path as the console script).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from typer.testing import CliRunner

from kaito.cli import estimate, presets, validate
from kaito.cli.output import Column, render_table
from kaito.presets import get_preset, list_presets

SEED = Path(__file__).resolve().parents[1] / "api" / "seed"
runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(presets.app, name="presets")
    app.command("validate")(validate.validate)
    app.command("estimate")(estimate.estimate_cmd)
    return app


def run(*args: str, columns: int | None = 80) -> Any:
    env = {"COLUMNS": str(columns)} if columns else {}
    return runner.invoke(_app(), list(args), env=env)


def test_presets_list_fits_80_columns_and_keeps_whole_names() -> None:
    res = run("presets", "list")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split() == ["NAME", "PARAMS", "WEIGHTS", "CONTEXT", "GATED", "TUNING"]
    for p in list_presets():  # every name whole, none squashed
        assert any(line.split()[0] == p.name for line in lines[1:]), p.name


def test_narrow_terminal_drops_low_priority_columns_first() -> None:
    res = run("presets", "list", columns=50)
    header = res.output.splitlines()[0].split()
    assert header[0] == "NAME" and "CONTEXT" in header and "TUNING" not in header
    assert max(len(line) for line in res.output.splitlines()) <= 50


def test_wide_adds_columns_and_never_drops() -> None:
    res = run("presets", "list", "-o", "wide", columns=80)
    header = res.output.splitlines()[0]
    for col in ("KV/TOKEN", "RUNTIMES", "PARSERS", "HF MODEL", "REVISION", "TUNING"):
        assert col in header
    assert "meta-llama/Llama-3.3-70B-Instruct" in res.output


def test_render_table_without_width_keeps_everything() -> None:
    cols = [Column("A"), Column("B", 1), Column("C", wide=True)]
    text = render_table(cols, [["x" * 50, "y" * 50, "z"]], wide=False, width=None)
    assert text.splitlines()[0].split() == ["A", "B"]  # a pipe: nothing dropped but wide-only columns


def test_presets_json_and_yaml_are_stable_documents() -> None:
    as_json = json.loads(run("presets", "list", "-o", "json").output)
    as_yaml = yaml.safe_load(run("presets", "list", "-o", "yaml", columns=20).output)
    assert as_json == as_yaml  # same document, terminal width irrelevant
    assert as_json["kind"] == "PresetList" and as_json["catalogVersion"]
    item = next(i for i in as_json["items"] if i["name"] == "llama-3.3-70b-instruct")
    assert item["gated"] is True and item["revision"] == get_preset("llama-3.3-70b-instruct").revision
    assert item["kvBytesPerToken"] == 327_680  # camelCase, as Kubernetes objects
    assert not [k for k in item if "_" in k], item
    skus = json.loads(run("presets", "skus", "-o", "json").output)
    trn = next(s for s in skus["items"] if s["name"] == "trn1.2xlarge")
    assert trn["supported"] is False and "vLLM runtime" in trn["unsupportedReason"]
    v100 = next(s for s in skus["items"] if s["name"] == "Standard_NC6s_v3")
    assert v100["upstream"] == "dropped" and v100["gpuCount"] == 1 and v100["gpuMemoryGib"] == 16


def test_skus_table_fits_80_columns() -> None:
    res = run("presets", "skus")
    assert res.exit_code == 0 and max(len(x) for x in res.output.splitlines()) <= 80
    assert "unsupported" in res.output and "Standard_ND96isr_H200_v5" in res.output


def test_estimate_json_is_the_estimate() -> None:
    res = run("estimate", "-p", "phi-3-mini-4k-instruct", "-t", "Standard_NC6s_v3", "-o", "json")
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert data["kind"] == "Estimate" and data["fits"] is True and data["kvCacheTokens"] == 13_376
    assert data["perGpu"]["weights"] == 7_640_000_000 and "no longer supports" in data["upstreamNote"]
    bad = run("estimate", "-p", "gpt-oss-20b", "-t", "Standard_NC6s_v3", "-o", "yaml")
    assert bad.exit_code == 1 and yaml.safe_load(bad.output)["fits"] is False


def test_estimate_shows_why_a_sku_is_rejected() -> None:
    res = run("estimate", "-p", "gpt-oss-120b", "--cloud", "azure", "--all", columns=None)
    assert res.exit_code == 0
    assert "REASON" in res.output.splitlines()[0]
    row = next(line for line in res.output.splitlines() if line.startswith("Standard_NC6s_v3 "))
    assert "needs CUDA compute capability >= 8.0" in row and "dropped" in row
    data = json.loads(run("estimate", "-p", "gpt-oss-120b", "--all", "-o", "json").output)
    rejected = {i["instanceType"]: i["reason"] for i in data["items"] if not i["fits"]}
    assert "compute capability" in rejected["Standard_NC6s_v3"]
    assert "not supported by the vLLM runtime" in rejected["inf2.xlarge"]
    res = run(
        "estimate", "-p", "llama-3.3-70b-instruct", "-t", "Standard_NC4as_T4_v3", "-n", "1", "-o", "wide"
    )
    assert res.exit_code == 1
    assert "Reason:" in res.output and "use at least" in res.output and "Rejected layout:" in res.output


def test_ranking_fits_80_columns() -> None:
    res = run("estimate", "-p", "phi-4")
    assert res.exit_code == 0
    table = res.output.split("\n\n")[0].splitlines()
    assert max(len(x) for x in table) <= 80 and table[0].startswith("INSTANCE TYPE")


def test_validate_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (SEED / "phi3_inference.yaml").read_text().replace("Standard_NC6s_v3", "Standard_XYZ")
        + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
    )
    res = run("validate", "-o", "json", "-f", str(bad), "-f", str(SEED / "phi3_tuning.yaml"))
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert (data["kind"], data["checked"], data["rejected"]) == ("ValidationResult", 2, 1)
    results = [(i["kind"], i["result"]) for i in data["items"]]
    assert results == [("Workspace", "rejected"), ("ConfigMap", "skipped"), ("Workspace", "valid")]
    assert any("resource.instanceType" in e for e in data["items"][0]["errors"])
    assert set(data["items"][1]) == {"source", "kind", "name", "result", "errors", "warnings", "skipped"}
    ok = run("validate", "-o", "yaml", "-f", str(SEED / "phi3_inference.yaml"))
    assert ok.exit_code == 0 and yaml.safe_load(ok.stdout)["rejected"] == 0
