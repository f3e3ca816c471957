"""bench/plot.py: benchmark JSON -> PNG figures, and one clear line when matplotlib is missing.

matplotlib comes only with the ``bench`` extra, so the drawing tests skip without it; the data
extraction and the missing-matplotlib message are tested everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLOT = ROOT / "bench" / "plot.py"


def _load_plot() -> Any:
    spec = importlib.util.spec_from_file_location("bench_plot", PLOT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_plot"] = mod
    spec.loader.exec_module(mod)
    return mod


plot = _load_plot()


#: Shaped as bench/workspace.py's full-mode result (trimmed), for one Workspace count.
def workspace_result(n: int, kaito_s: float, upstream_s: float) -> dict[str, Any]:
    def side(name: str, seconds: float) -> dict[str, Any]:
        return {
            "side": name,
            "seconds_to_all_ready": seconds,
            "ready_s": [seconds / 2, seconds * 0.9, seconds],
        }

    return {
        "workspaces": n,
        "comparisons": {
            "kcm_default": {
                "ratio_seconds_to_all_ready": round(upstream_s / kaito_s, 3),
                "ratio_seconds_per_round": [1.9, 2.1, 1.8],
                "kaito": {"seconds_to_all_ready": kaito_s},
                "upstream": {"seconds_to_all_ready": upstream_s},
                "rounds": {"kaito": [side("kaito", kaito_s)], "upstream": [side("upstream", upstream_s)]},
            }
        },
    }


#: Shaped as bench/workspace.py --kaito-only's result (trimmed).
KAITO_ONLY = {
    "workspaces": 1000,
    "kcm_default": {"seconds_to_all_ready": 75.0},
    "runs": {
        "kcm_default": {
            "side": "kaito",
            "workspaces": 1000,
            "seconds_to_all_ready": 75.0,
            "ready_s": [9, 40, 75],
        }
    },
}

#: Shaped as bench/runtime.py's result (trimmed).
RUNTIME = {
    "ratio": 6.9,
    "ratio_per_round": [4.97, 9.39, 7.94],
    "per_round": [{"kaito_per_s": 1.0, "kopf_per_s": 2.0}],
    "with_status_write": {"ratio_per_round": [1.4, 1.5, 1.3]},
    "latencies_ms": [6.1, 6.4, 6.6, 7.0, 8.9],
}


def png_ok(path: Path) -> tuple[int, int]:
    """Check a PNG's signature and every chunk's CRC; return its width and height."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, seen = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, (path, kind)
        seen.append(kind)
        pos += 12 + length
    assert seen[0] == b"IHDR" and seen[-1] == b"IEND" and b"IDAT" in seen
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_series_are_found_where_the_bench_scripts_put_them() -> None:
    assert plot.ratio_series(RUNTIME) == [
        ("ratio_per_round", [4.97, 9.39, 7.94]),
        ("with_status_write.ratio_per_round", [1.4, 1.5, 1.3]),
    ]
    assert plot.latency_series(RUNTIME) == [("latency", [6.1, 6.4, 6.6, 7.0, 8.9], "ms")]
    ws = workspace_result(100, 20.0, 40.0)
    assert plot.ratio_series(ws) == [("kcm_default.ratio_seconds_per_round", [1.9, 2.1, 1.8])]
    labels = {label: (len(xs), unit) for label, xs, unit in plot.latency_series(ws)}
    assert labels == {"kcm_default.kaito": (3, "s"), "kcm_default.upstream": (3, "s")}
    # one Workspace count is no scaling curve; two are
    assert plot.scaling_points([ws]) == {}
    points = plot.scaling_points([ws, workspace_result(1000, 90.0, 400.0)])
    assert points["kaito (kcm_default)"] == [(100, 20.0), (1000, 90.0)]
    # a --kaito-only scale run at 1,000 next to a full-mode run at 100
    points = plot.scaling_points([ws, KAITO_ONLY])
    assert points == {"kaito (kcm_default)": [(100, 20.0), (1000, 75.0)]}
    assert [(label, len(xs)) for label, xs, _ in plot.latency_series(KAITO_ONLY)] == [("kcm_default", 3)]


def test_the_recorded_json_in_performance_md_is_read() -> None:
    results = plot.load(ROOT / "docs" / "performance.md")
    assert any("comparisons" in r for r in results)
    assert any(
        label.endswith("ratio_seconds_per_round") for r in results for label, _ in plot.ratio_series(r)
    )


def test_sample_json_becomes_valid_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib comes with the bench extra")
    inputs = []
    for i, result in enumerate(
        [RUNTIME, workspace_result(100, 20.0, 40.0), workspace_result(1000, 90.0, 400.0)]
    ):
        path = tmp_path / f"r{i}.json"
        path.write_text("progress line\n" + json.dumps(result) + "\n")  # a whole stdout capture
        inputs.append(str(path))
    ran = subprocess.run(
        [sys.executable, str(PLOT), *inputs, "-o", str(tmp_path / "out"), "--name", "t"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    written = [Path(p) for p in ran.stdout.split()]
    assert [p.name for p in written] == ["t-ratios.png", "t-latency-cdf.png", "t-scaling.png"]
    for path in written:
        width, height = png_ok(path)
        assert width >= 300 and height >= 150
        assert path.stat().st_size < 200_000


def test_without_matplotlib_the_error_names_the_extra(tmp_path: Path) -> None:
    src = tmp_path / "r.json"
    src.write_text(json.dumps(RUNTIME))
    # a python whose import of matplotlib fails, as in an install without the bench extra
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('No module named matplotlib')\n")
    ran = subprocess.run(
        [sys.executable, str(PLOT), str(src), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert ran.returncode == 2
    assert ran.stderr.strip() == plot.EXTRA_HINT
    assert "kaito[bench]" in ran.stderr
    assert not (tmp_path / "out" / "r-ratios.png").exists()
