"""bench/_smoke.py, the `make test` wrapper of the small benchmark runs: it passes only when both
sides produced figures, whatever the ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SMOKE = Path(__file__).resolve().parents[3] / "bench" / "_smoke.py"


def fake_bench(tmp_path: Path, result: dict[str, object], rc: int = 0) -> Path:
    script = tmp_path / "runtime.py"
    script.write_text(
        "import json, sys\n"
        "assert sys.argv[1:] == ['--small'], sys.argv\n"
        "print('round 0: progress line')\n"
        f"print(json.dumps({result!r}))\n"
        f"sys.exit({rc})\n"
    )
    return script


def smoke(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SMOKE), str(script)], capture_output=True, text=True)


def test_a_missed_target_still_passes_when_both_sides_ran(tmp_path: Path) -> None:
    missed: dict[str, object] = {"kaito_per_s": 90.0, "kopf_per_s": 20.0, "client_go_per_s": 95.0}
    missed["targets"] = {"ratio>=5": False}
    ran = smoke(fake_bench(tmp_path, missed))
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "round 0: progress line"
    assert "targets" not in json.loads(lines[1])
    assert lines[-1].startswith("smoke ok: runtime")


def test_a_side_without_figures_fails(tmp_path: Path) -> None:
    ran = smoke(fake_bench(tmp_path, {"kaito_per_s": 90.0, "kopf_per_s": 0, "client_go_per_s": 95.0}))
    assert ran.returncode == 1 and "kopf_per_s=0" in ran.stderr
    no_client_go = smoke(fake_bench(tmp_path, {"kaito_per_s": 90.0, "kopf_per_s": 20.0}))
    assert no_client_go.returncode == 1 and "client_go_per_s=None" in no_client_go.stderr
    crashed = smoke(fake_bench(tmp_path, {"kaito_per_s": 1.0, "kopf_per_s": 1.0}, rc=3))
    assert crashed.returncode == 3
