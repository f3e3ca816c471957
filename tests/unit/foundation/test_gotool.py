"""The Go-built tools' lookup: the override variable, the cache folder, and the refusals that
name the way out (no build here: the real builds run where a test first needs the tool)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito.envtest.assets import AssetsError
from kaito.envtest.gotool import GoTool

TOOL = GoTool(name="demo", module="example.com/demo", cmd="cmd/demo", version="1.2.3", env_var="KAITO_DEMO")


def test_cache_folder_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_ASSETS", str(tmp_path / "cache"))
    monkeypatch.delenv("KAITO_DEMO", raising=False)
    assert TOOL.folder().name == "demo-1.2.3"
    assert TOOL.find() is None
    binary = TOOL.folder() / "demo"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert TOOL.find() == binary
    assert TOOL.ensure(build=False) == binary
    ready = tmp_path / "packaged-demo"
    ready.write_text("#!/bin/sh\n")
    ready.chmod(0o755)
    monkeypatch.setenv("KAITO_DEMO", str(ready))
    assert TOOL.find() == ready


def test_refusals_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_ASSETS", str(tmp_path / "cache"))
    monkeypatch.setenv("KAITO_DEMO", str(tmp_path / "not-executable"))
    with pytest.raises(
        AssetsError, match=r"KAITO_DEMO=.* is not an executable; point it at demo or unset it"
    ):
        TOOL.find()
    monkeypatch.delenv("KAITO_DEMO")
    with pytest.raises(AssetsError, match=r"demo is missing in .*; .*or set KAITO_DEMO"):
        TOOL.ensure(build=False)
