"""kaito's dataset reader against Hugging Face ``datasets`` on the same files, offline.

Why this exists: upstream Kaito's trainer loads tuning data with ``datasets.load_dataset``; kaito
reads the downloaded files itself (``kaito.tuning.dataset``). This measures whether the library
would be the better choice for what a tuning Job does with its data folder: read every file once,
turn rows into conversations, shuffle. Each side runs in a fresh child process per round (cold
imports count, as they do in a Job), alternating which goes first; wall seconds from process start
to examples in memory, and the child's peak RSS (``wait4``), median over the rounds. ``datasets``
runs with ``HF_DATASETS_OFFLINE=1`` and a fresh cache folder per round (a Job's pod starts with an
empty cache). Prints one JSON object.

The peer is installed by the benchmark itself, pinned, into ``~/.cache/kaito/peers/`` (with
``--no-deps``: torch, pyarrow, numpy and huggingface_hub come from the inference venv, as they
would in a tuning image), so the inference venv stays what `make inference-venv` builds.

    .venv-inference/bin/python bench/dataset_loader.py --small   # 10,000 rows, 2 rounds
    .venv-inference/bin/python bench/dataset_loader.py           # 100,000 rows, 5 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KAITO = """
import sys, time
from pathlib import Path
t0 = float(sys.argv[2])
from kaito.tuning.dataset import load_examples
ex = load_examples(Path(sys.argv[1]), {"shuffle_dataset": True})
print(len(ex), time.time() - t0)
"""

# The same work with the library: load every parquet/jsonl file, map rows to conversations,
# shuffle with the same seed, and hold the result in memory as Python lists (what the trainer
# tokenizes next).
PEER = """
import sys, time
t0 = float(sys.argv[2])
from pathlib import Path
import datasets
files = sorted(str(p) for p in Path(sys.argv[1]).rglob("*.parquet"))
ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=sys.argv[3])
ds = ds.shuffle(seed=42)
convs = [[{"role": m["role"], "content": m["content"]} for m in row["messages"]] for row in ds]
print(len(convs), time.time() - t0)
"""


#: The peer and the packages it needs beyond the inference venv, pinned (seen working together).
PEER_PACKAGES = (
    "datasets==5.2.0",
    "dill==0.4.1",
    "multiprocess==0.70.19",
    "xxhash==4.1.0",
    "pandas==3.1.1",
    "pytz==2026.6",
    "tzdata==2026.6",
)


def ensure_peer() -> Path:
    """The folder holding ``datasets`` and its missing dependencies, installed once from PyPI."""
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kaito" / "peers"
    target = home / ("datasets-" + PEER_PACKAGES[0].split("==")[1])
    if (target / ".complete").exists():
        return target
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        print(f"installing the peer ({', '.join(PEER_PACKAGES)}) into {target}", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
                tmp,
                *PEER_PACKAGES,
            ],
            check=True,
        )
        (Path(tmp) / ".complete").touch()
        if target.exists():
            shutil.rmtree(target)
        Path(tmp).rename(target)
        Path(tmp).mkdir()  # TemporaryDirectory removes it on exit
    return target


def write_dataset(folder: Path, rows: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(0)
    words = [
        "kaito",
        "gpu",
        "node",
        "preset",
        "model",
        "adapter",
        "lora",
        "tuning",
        "inference",
        "service",
        "cluster",
    ]

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    data = [
        {
            "messages": [
                {"role": "system", "content": "answer briefly"},
                {"role": "user", "content": text(rng.randint(8, 40))},
                {"role": "assistant", "content": text(rng.randint(20, 120))},
            ]
        }
        for _ in range(rows)
    ]
    path = folder / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(data), path)
    return path.stat().st_size


def run(code: str, data: Path, cache: Path, peer: Path | None) -> tuple[int, float, float]:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    if peer is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(peer), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(data), repr(time.time()), str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: {err[-2000:]}")
    n, seconds = out.split()
    return int(n), float(seconds), usage.ru_maxrss / 1024


def main() -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args()
    rows = args.rows or (10_000 if args.small else 100_000)
    rounds = args.rounds or (2 if args.small else 5)
    peer = ensure_peer()
    per_round: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="kaito-bench-data-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        size = write_dataset(data, rows)
        for r in range(rounds):
            order = ("kaito", "datasets") if r % 2 == 0 else ("datasets", "kaito")
            got: dict[str, float] = {}
            for side in order:
                cache = Path(tmp) / f"hf-cache-{r}-{side}"
                n, secs, rss = run(
                    *((KAITO, data, cache, None) if side == "kaito" else (PEER, data, cache, peer))
                )
                if n != rows:
                    raise SystemExit(f"{side} read {n} rows of {rows}")
                got[f"{side}_s"], got[f"{side}_rss_mb"] = secs, rss
            per_round.append(got)

    def med(key: str) -> float:
        return round(statistics.median(p[key] for p in per_round), 3)

    return {
        "bench": "dataset_loader",
        "rows": rows,
        "parquet_mb": round(size / 2**20, 2),
        "rounds": rounds,
        "peer": PEER_PACKAGES[0],
        "kaito_s": med("kaito_s"),
        "datasets_s": med("datasets_s"),
        "kaito_peak_rss_mb": med("kaito_rss_mb"),
        "datasets_peak_rss_mb": med("datasets_rss_mb"),
        "ratio_time_datasets_over_kaito": round(
            statistics.median(p["datasets_s"] / p["kaito_s"] for p in per_round), 3
        ),
        "per_round": [{k: round(v, 3) for k, v in p.items()} for p in per_round],
    }


if __name__ == "__main__":
    print(json.dumps(main()))
