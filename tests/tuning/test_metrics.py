"""The progress metrics: built at scrape time from the run's values, and not loaded without a port.

Also the training loop's garbage collection: the long-lived heap is frozen while Trainer.train()
runs (its opening gc.collect() then skips it) and thawed afterwards.
"""

from __future__ import annotations

import gc
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.tuning.conftest import ROOT, conversations, train_config, write_parquet

from kaito.contract.tinymodel import cpu_env
from kaito.tuning.config import load_config
from kaito.tuning.metrics import Progress


def _scrape(progress: Progress) -> dict[str, float]:
    from prometheus_client import generate_latest

    text = generate_latest(progress.registry()).decode()
    return {
        ln.split()[0]: float(ln.split()[1])
        for ln in text.splitlines()
        if ln.startswith("kaito_tuning_") and not ln.startswith("kaito_tuning_tokens_created")
    }


def test_scrape_reads_the_values_of_the_last_update() -> None:
    out = io.StringIO()
    progress = Progress(out)
    first = _scrape(progress)
    assert first["kaito_tuning_step"] == 0 and first["kaito_tuning_tokens_total"] == 0
    assert "kaito_tuning_loss" not in first  # no loss logged yet: absent, not a made-up 0
    progress.add_tokens(120)
    progress.add_tokens(30)
    progress.update(3, 30, 0.25, 1.5)
    seen = _scrape(progress)
    assert seen["kaito_tuning_step"] == 3 and seen["kaito_tuning_max_steps"] == 30
    assert seen["kaito_tuning_epoch"] == 0.25 and seen["kaito_tuning_loss"] == 1.5
    assert seen["kaito_tuning_tokens_total"] == 150 and seen["kaito_tuning_tokens_per_second"] > 0
    line = json.loads(out.getvalue().splitlines()[-1])
    assert line["step"] == 3 and line["tokens_per_s"] == round(seen["kaito_tuning_tokens_per_second"], 1)
    progress.update(4, 30, 0.3, None)  # a log without a loss keeps the last one
    assert _scrape(progress)["kaito_tuning_loss"] == 1.5


def _run_python(code: str) -> str:
    """``code`` in a fresh interpreter (its imports and memory are its own); its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cpu_env(), cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_no_metrics_library_without_a_port() -> None:
    code = (
        "import io, sys\n"
        "from kaito.tuning.metrics import Progress\n"
        "p = Progress(io.StringIO()); p.add_tokens(5); p.update(1, 2, 0.5, 1.0)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'http.server'))))\n"
    )
    assert _run_python(code).strip() == "[]"


def test_the_long_lived_heap_is_frozen_during_training_only(tmp_path: Path, tiny_model: Path) -> None:
    from kaito.tuning.trainer import train

    write_parquet(tmp_path / "data" / "t.parquet", conversations(8))
    cfg = load_config("lora", train_config(tmp_path / "c.yaml", steps=2))
    full: list[int] = []  # frozen objects at the start of each full collection

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(gc.get_freeze_count())

    gc.callbacks.append(watch)
    try:
        result = train(tiny_model, tmp_path / "data", tmp_path / "out", cfg, Progress(io.StringIO()))
    finally:
        gc.callbacks.remove(watch)
    assert result.steps == 2
    # Trainer.train() opens with a full gc.collect() (accelerate's free_memory); it ran with the
    # libraries and the model frozen, so it walked only what training allocated.
    assert full and max(full) > 100_000, full
    assert gc.get_freeze_count() == 0  # thawed once training is over


def test_release_free_heap_returns_freed_pages_to_the_os() -> None:
    # 2000 blocks of 64 KiB (malloc'd, under glibc's mmap threshold) are freed except the last,
    # which pins the top of the heap: without a trim the ~125 MB stay resident.
    code = (
        "from kaito.tuning.trainer import release_free_heap\n"
        "def anon():\n"
        "    lines = open('/proc/self/status').read().splitlines()\n"
        "    return next(int(ln.split()[1]) for ln in lines if ln.startswith('RssAnon'))\n"
        "blocks = [bytearray(64 * 1024) for _ in range(2000)]\n"
        "last = blocks.pop()\n"
        "del blocks\n"
        "before = anon()\n"
        "ok = release_free_heap()\n"
        "print(ok, before - anon())\n"
    )
    out = _run_python(code)
    ok, released_kib = out.split()
    assert ok == "True" and int(released_kib) > 64 * 1024, out
