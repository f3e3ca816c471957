"""The weights artifact layout (kaito.contract.weights): deterministic manifests, and refusals of
manifests a puller must not follow (titles leaving the folder, other artifacts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaito.contract.weights import (
    ARTIFACT_TYPE,
    LayoutError,
    build_manifest,
    check_title,
    parse_manifest,
    scan_folder,
)


def _model(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 100)
    (folder / "sub" / "tokenizer.json").write_text("{}")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x").write_text("not part of the model")
    (folder / ".gitattributes").write_text("*")
    return folder


def test_scan_skips_hidden_and_is_sorted(tmp_path: Path) -> None:
    files = scan_folder(_model(tmp_path / "m"))
    assert [f.title for f in files] == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    assert files[1].size == 100 and files[1].digest.startswith("sha256:")


def test_manifest_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    files = scan_folder(_model(tmp_path / "m"))
    one = build_manifest(files, "phi-4", "abc")
    assert one == build_manifest(list(reversed(files)), "phi-4", "abc")
    parsed = json.loads(one)
    assert parsed["artifactType"] == ARTIFACT_TYPE
    assert parse_manifest(parsed, "img") == files


@pytest.mark.parametrize("title", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b"])
def test_titles_that_leave_the_folder_are_refused(title: str) -> None:
    with pytest.raises(LayoutError, match="plain relative path"):
        check_title(title)


def test_parse_refuses_other_artifacts_and_bad_layers(tmp_path: Path) -> None:
    good = json.loads(build_manifest(scan_folder(_model(tmp_path / "m"))))
    with pytest.raises(LayoutError, match="not a kaito weights artifact"):
        parse_manifest({**good, "artifactType": "application/vnd.other"}, "img")
    dup = {**good, "layers": good["layers"] + good["layers"][:1]}
    with pytest.raises(LayoutError, match="two layers"):
        parse_manifest(dup, "img")
    escape = json.loads(json.dumps(good))
    escape["layers"][0]["annotations"]["org.opencontainers.image.title"] = "../../etc/cron.d/x"
    with pytest.raises(LayoutError, match="plain relative path"):
        parse_manifest(escape, "img")


def test_scan_needs_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="not a folder"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "weights.bin").write_bytes(b"x")
    with pytest.raises(LayoutError, match="no config"):
        scan_folder(tmp_path / "f")
