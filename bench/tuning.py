"""Kaito's tuning runtime against a plain peft script: same tiny model, data, rank and steps.

Each round runs ``python -m kaito.tuning train`` and the peer (bench/_tuning_peer.py) one after the
other, alternating which goes first, as separate processes (the same cold start for both). Tokens
per second are the non-padding training tokens over the seconds of the training loop, measured the
same way in both; peak RSS is each child's own maximum resident set (``wait4``). Medians of the
rounds and the median of per-round ratios are reported. Prints one JSON object on the last line.

    .venv-inference/bin/python bench/tuning.py --small    # 2 rounds of 6 steps, ~3 min on 2 cores
    .venv-inference/bin/python bench/tuning.py            # 5 rounds of 30 steps
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kaito.contract.tinymodel import cpu_env

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["what is kaito", "how does tuning work", "hello there", "which gpu node", "tell me a model"]


def dataset(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(0)
    rows = [
        {
            "messages": [
                {"role": "system", "content": "answer briefly"},
                {
                    "role": "user",
                    "content": rng.choice(QUESTIONS) + " " + " ".join(rng.choices(QUESTIONS, k=3)),
                },
                {"role": "assistant", "content": "kaito tuning adapter answer " + rng.choice(QUESTIONS)},
            ]
        }
        for _ in range(n)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def run(cmd: list[str], log: Path) -> tuple[str, float]:
    """Run a child to completion; its stdout and its own peak RSS in MiB."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, env=cpu_env(OMP_NUM_THREADS="2"), cwd=ROOT
        )
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[2]} failed ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}")
    return out, usage.ru_maxrss / 1024.0


def kaito_round(model: Path, data: Path, work: Path, steps: int, rank: int) -> tuple[float, float]:
    cfg = work / "training_config.yaml"
    cfg.write_text(
        "training_config:\n"
        "  ModelConfig: {torch_dtype: float32}\n"
        "  TokenizerParams: {max_length: 128}\n"
        f"  LoraConfig: {{r: {rank}, lora_alpha: {rank * 2}, lora_dropout: 0.0}}\n"
        f"  TrainingArguments: {{max_steps: {steps}, per_device_train_batch_size: 4, learning_rate: 0.005,"
        " save_strategy: 'no', seed: 7}\n"
        "  DatasetConfig: {shuffle_dataset: false}\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "kaito.tuning",
        "train",
        "--model",
        str(model),
        "--config",
        str(cfg),
        "--data",
        str(data.parent),
        "--output",
        str(work / "kaito-out"),
    ]
    out, rss = run(cmd, work / "kaito.log")
    done = next(json.loads(ln) for ln in out.splitlines() if ln.startswith('{"event": "done"'))
    return float(done["tokens_per_s"]), rss


def peer_round(model: Path, data: Path, work: Path, steps: int, rank: int) -> tuple[float, float]:
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "_tuning_peer.py"),
        "--model",
        str(model),
        "--data",
        str(data),
        "--steps",
        str(steps),
        "--rank",
        str(rank),
        "--output",
        str(work / "peer-out"),
    ]
    out, rss = run(cmd, work / "peer.log")
    return float(json.loads(out.strip().splitlines()[-1])["tokens_per_s"]), rss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--small", action="store_true")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--rank", type=int, default=8)
    a = p.parse_args()
    rounds = a.rounds or (2 if a.small else 5)
    steps = a.steps or (6 if a.small else 30)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from kaito.contract.tinymodel import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="kaito-bench-tuning-") as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model")
        data = root / "data" / "train.parquet"
        dataset(data, 64)
        kaito: list[float] = []
        peer: list[float] = []
        ratios: list[float] = []
        krss: list[float] = []
        prss: list[float] = []
        for i in range(rounds):
            order = ["kaito", "peer"] if i % 2 == 0 else ["peer", "kaito"]
            got: dict[str, tuple[float, float]] = {}
            for who in order:
                work = root / f"r{i}-{who}"
                work.mkdir()
                fn = kaito_round if who == "kaito" else peer_round
                got[who] = fn(model, data, work, steps, a.rank)
            kaito.append(got["kaito"][0])
            peer.append(got["peer"][0])
            krss.append(got["kaito"][1])
            prss.append(got["peer"][1])
            ratios.append(got["kaito"][0] / got["peer"][0])
            print(
                f"round {i}: kaito {got['kaito'][0]:.1f} tok/s, peft {got['peer'][0]:.1f} tok/s", flush=True
            )
    result: dict[str, Any] = {
        "bench": "tuning",
        "mode": "small" if a.small else "full",
        "rounds": rounds,
        "steps": steps,
        "lora_rank": a.rank,
        "kaito_tokens_per_s": round(statistics.median(kaito), 1),
        "peft_tokens_per_s": round(statistics.median(peer), 1),
        "ratio": round(statistics.median(ratios), 3),
        "kaito_peak_rss_mb": round(max(krss), 1),
        "peft_peak_rss_mb": round(max(prss), 1),
        "target_ratio": 0.95,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
