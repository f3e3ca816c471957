"""`pip install kaito` gives an operator author the library and nothing of kaito's own operator.

A fresh virtualenv gets the package with no extras, from this checkout (a real wheel build, as
pip does for a user). There, ``kaito.runtime`` and ``kaito.envtest`` import and their public names
resolve; the operator's stack (typer, FastAPI, kubernetes-asyncio, pydantic, the Azure SDK) is
absent; and the ``kaito`` script says which extra to install instead of a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

PROBE = """
import importlib.util, sys
import kaito.runtime, kaito.envtest
for module in (kaito.runtime, kaito.envtest):
    for name in module.__all__:
        getattr(module, name)
absent = [m for m in ("typer", "fastapi", "uvicorn", "kubernetes_asyncio", "pydantic", "rich", "azure")
          if importlib.util.find_spec(m) is not None]
print("absent-but-found:", absent)
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in ("kaito",)))
"""


@pytest.mark.timeout(600)
def test_the_core_install_imports_the_library_alone(tmp_path: Path) -> None:
    venv = tmp_path / "core"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    probe = subprocess.run([str(py), "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert "absent-but-found: []" in probe.stdout, probe.stdout
    # nothing of the operator came along with the library
    loaded = probe.stdout.split("loaded:", 1)[1]
    for part in ("kaito.controllers", "kaito.api", "kaito.cli", "kaito.operator"):
        assert f"'{part}" not in loaded, loaded
    script = subprocess.run(
        [str(venv / "bin" / "kaito"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert script.returncode == 1
    assert "pip install 'kaito[operator]'" in script.stderr and "Traceback" not in script.stderr, (
        script.stderr
    )
