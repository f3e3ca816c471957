"""docs/validation.md's table of upstream's example manifests (issue 23) stays true.

Each row names a file in tests/data/upstream, its kind, kaito's verdict and, in backticks, a
fragment of the refusal (refused rows) or of a warning (rows that say "warns"). Workspaces go
through ``kaito validate`` (the CLI, with every file of the folder so that their ConfigMaps are
read); InferenceSets through the admission webhook's InferenceSet handler.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kaito.api.validation import ValidationOptions
from kaito.api.webhook import inferenceset_validating_handler
from kaito.cli.main import app

ROOT = Path(__file__).resolve().parents[3]
UPSTREAM = ROOT / "tests" / "data" / "upstream"
DOC = ROOT / "docs" / "validation.md"
KINDS = ("Workspace", "InferenceSet")
BEGIN, END = "<!-- upstream-examples-table", "<!-- end upstream-examples-table -->"


@dataclass(frozen=True)
class Row:
    manifest: str
    kind: str
    verdict: str
    why: str

    @property
    def fragment(self) -> str | None:
        """The backticked text a refusal or warning must contain, if the row quotes one."""
        if self.verdict == "refused" or self.why.startswith("warns"):
            found = re.search(r"`([^`]+)`", self.why)
            return found.group(1) if found else None
        return None


def table_rows() -> list[Row]:
    text = DOC.read_text()
    block = text[text.index(BEGIN) : text.index(END)]
    rows = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        rows.append(Row(cells[0].strip("`"), cells[1], cells[2], cells[3]))
    return rows


ROWS = table_rows()


@pytest.fixture(scope="module")
def workspace_results() -> dict[str, dict[str, Any]]:
    """``kaito validate -o json`` over the whole folder, by file name."""
    files = [str(p) for p in sorted(UPSTREAM.glob("*.yaml"))]
    res = CliRunner().invoke(
        app, ["validate", "--offline", "--cloud", "any", "-o", "json", *files], env={"COLUMNS": "300"}
    )
    assert res.exit_code in (0, 1), res.output
    out: dict[str, dict[str, Any]] = {}
    for item in json.loads(res.stdout)["items"]:
        if item["kind"] == "Workspace":
            out[Path(item["source"].split("#")[0]).name] = item
    return out


def inferenceset_verdict(path: Path) -> tuple[bool, str, list[str]]:
    obj = yaml.safe_load(path.read_text())
    obj["metadata"].setdefault("namespace", "default")
    handler = inferenceset_validating_handler(ValidationOptions())
    resp = handler({"uid": "u", "operation": "CREATE", "object": obj})
    assert isinstance(resp, dict)
    return bool(resp["allowed"]), resp.get("status", {}).get("message", ""), list(resp.get("warnings", []))


def test_the_table_lists_every_example_manifest() -> None:
    listed = {r.manifest for r in ROWS}
    assert len(listed) == len(ROWS), "a manifest is listed twice"
    on_disk = {
        p.name
        for p in UPSTREAM.glob("*.yaml")
        if any(d and d.get("kind") in KINDS for d in yaml.safe_load_all(p.read_text()))
    }
    assert listed == on_disk
    assert {r.verdict for r in ROWS} <= {"accepted", "refused"}
    assert all(r.fragment for r in ROWS if r.verdict == "refused"), "every refusal quotes its reason"


@pytest.mark.parametrize("row", ROWS, ids=[r.manifest for r in ROWS])
def test_row_holds(row: Row, workspace_results: dict[str, dict[str, Any]]) -> None:
    path = UPSTREAM / row.manifest
    if row.kind == "Workspace":
        item = workspace_results[row.manifest]
        allowed = item["result"] == "valid"
        message = "\n".join(item["errors"])
        warnings = item["warnings"]
    else:
        assert row.kind == "InferenceSet"
        allowed, message, warnings = inferenceset_verdict(path)
    assert allowed == (row.verdict == "accepted"), (row.manifest, message)
    if row.fragment is None:
        return
    if row.verdict == "refused":
        assert row.fragment in message, (row.manifest, message)
    else:
        assert any(row.fragment in w for w in warnings), (row.manifest, warnings)


def test_the_arc_example_is_refused_on_azure() -> None:
    """The table's note on the Arc example: it needs an Arc SKU table."""
    arc = str(UPSTREAM / "workspace-phi-3-with-adapters-arc.yaml")
    res = CliRunner().invoke(app, ["validate", "--offline", "--cloud", "azure", arc], env={"COLUMNS": "300"})
    assert res.exit_code == 1
    assert "'Standard_NC4_A2' is not a known GPU SKU for azure" in res.output
