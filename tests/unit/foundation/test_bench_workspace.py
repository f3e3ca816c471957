"""bench/workspace.py's full mode needs upstream Kaito's source tarball: without it the run must
stop at once with one line naming the path and how to point at it (never a traceback, never a
half-run with kaito alone passed off as a comparison)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "bench" / "workspace.py"


def test_full_mode_without_the_tarball_fails_with_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "kaito-0.12.0-src.tar.gz"
    env = {**os.environ, "KAITO_UPSTREAM_TARBALL": str(missing), "PYTHONPATH": str(ROOT / "src")}
    ran = subprocess.run(
        [sys.executable, str(BENCH), "--workspaces", "1"], capture_output=True, text=True, env=env, timeout=60
    )
    assert ran.returncode == 1
    assert ran.stdout == ""
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert str(missing) in lines[0]
    assert "KAITO_UPSTREAM_TARBALL" in lines[0] and "--upstream-tarball" in lines[0]


def test_the_flag_overrides_the_environment(tmp_path: Path) -> None:
    flag = tmp_path / "flag.tar.gz"
    env = {
        **os.environ,
        "KAITO_UPSTREAM_TARBALL": str(tmp_path / "env.tar.gz"),
        "PYTHONPATH": str(ROOT / "src"),
    }
    ran = subprocess.run(
        [sys.executable, str(BENCH), "--upstream-tarball", str(flag)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 1
    assert str(flag) in ran.stderr and "env.tar.gz" not in ran.stderr
