"""Training on the tiny model: loss goes down, the adapter loads in peft, QLoRA is real here."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.tuning.conftest import (
    ROOT,
    TrainedAdapter,
    conversations,
    events,
    last_line,
    run_tuning,
    train_config,
    write_parquet,
)

from kaito.contract.tinymodel import cpu_env
from kaito.contract.tuning import DONE_MARKER


def test_loss_goes_down_and_progress_is_logged(trained: TrainedAdapter) -> None:
    progress = [e for e in events(trained.proc) if e["event"] == "progress" and "loss" in e]
    assert len(progress) >= 10
    losses = [float(e["loss"]) for e in progress]  # type: ignore[arg-type]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first * 0.7, losses
    assert all(float(e["tokens_per_s"]) > 0 for e in progress)  # type: ignore[arg-type]
    done = next(e for e in events(trained.proc) if e["event"] == "done")
    assert done["steps"] == 12
    assert (trained.dir / DONE_MARKER).is_file()


def test_adapter_files_load_in_peft_and_change_the_output(trained: TrainedAdapter, tiny_model: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = json.loads((trained.dir / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8
    assert set(cfg["target_modules"]) == {
        "qkv_proj",
        "o_proj",
        "gate_up_proj",
        "down_proj",
    }  # vLLM's Phi-3 set
    assert (trained.dir / "adapter_model.safetensors").stat().st_size > 0
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, trained.dir)
    with torch.no_grad():
        after = tuned(ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


def test_qlora_trains_real_4bit_layers_on_this_machine(tmp_path: Path, tiny_model: Path) -> None:
    write_parquet(tmp_path / "data" / "t.parquet", conversations(8))
    cfg = train_config(tmp_path / "c.yaml", steps=3)
    proc = run_tuning(
        "train",
        "--model",
        str(tiny_model),
        "--method",
        "qlora",
        "--config",
        str(cfg),
        "--data",
        str(tmp_path / "data"),
        "--output",
        str(tmp_path / "out"),
    )
    if proc.returncode != 0:
        # Where bitsandbytes cannot run 4-bit, the refusal must be the one clear line, never LoRA.
        assert "method qlora cannot run here" in last_line(proc), proc.stderr[-2000:]
        assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
        return
    start = next(e for e in events(proc) if e["event"] == "start")
    assert start["method"] == "qlora" and int(start["linear4bit_layers"]) > 0  # type: ignore[call-overload]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_metrics_endpoint_reports_step_and_loss(tmp_path: Path, tiny_model: Path) -> None:
    write_parquet(tmp_path / "data" / "t.parquet", conversations(8))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = train_config(tmp_path / "c.yaml", steps=40)
    cmd = [
        sys.executable,
        "-m",
        "kaito.tuning",
        "train",
        "--model",
        str(tiny_model),
        "--config",
        str(cfg),
        "--data",
        str(tmp_path / "data"),
        "--output",
        str(tmp_path / "out"),
        "--metrics-port",
        str(port),
        "--metrics-addr",
        "127.0.0.1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cpu_env(), cwd=ROOT)
    seen = ""
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                seen = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.TransportError:
                seen = ""
            step = [ln for ln in seen.splitlines() if ln.startswith("kaito_tuning_step ")]
            if step and float(step[0].split()[1]) >= 2:
                break
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "kaito_tuning_loss " in seen and "kaito_tuning_tokens_per_second " in seen, seen[-2000:]
    assert "kaito_tuning_tokens_total " in seen


def test_corrupt_and_columnless_datasets_fail_with_one_line(tmp_path: Path, tiny_model: Path) -> None:
    good = write_parquet(tmp_path / "bad" / "x.parquet", conversations(4)).read_bytes()
    (tmp_path / "bad" / "x.parquet").write_bytes(good[: len(good) // 2])
    write_parquet(tmp_path / "cols" / "x.parquet", [{"a": 1, "b": 2}])
    for folder, why in (("bad", "unreadable parquet file"), ("cols", "no usable columns")):
        proc = run_tuning(
            "train",
            "--model",
            str(tiny_model),
            "--data",
            str(tmp_path / folder),
            "--output",
            str(tmp_path / f"o-{folder}"),
        )
        assert proc.returncode == 1
        assert why in last_line(proc) and last_line(proc).startswith("kaito-tuning: ")
        assert not (tmp_path / f"o-{folder}" / "adapter_model.safetensors").exists()
