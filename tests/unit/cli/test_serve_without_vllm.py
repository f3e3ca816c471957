"""The controller's environment has no vLLM on purpose; `kaito serve` there says so in one line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys


def test_serve_without_vllm_names_the_fix(tmp_path: object) -> None:
    # The controller's virtualenv must stay free of torch/vLLM (they live in .venv-inference).
    assert importlib.util.find_spec("vllm") is None and importlib.util.find_spec("torch") is None
    proc = subprocess.run(
        [sys.executable, "-m", "kaito.cli.main", "serve", "--model", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "'vllm' package" in proc.stderr and "hack/install-inference.sh" in proc.stderr
