"""Pull throughput of a weights artifact: ``kaito models pull`` against ``oras pull``, same run.

One artifact is pushed once (``kaito models push``) to a real registry on loopback (Debian's
docker-registry with TLS and htpasswd, hack/registry.sh): a model folder of ``--shards`` random
safetensors-sized files plus a config.json, the layout of a Hugging Face snapshot. Each round then
pulls it into an empty folder with both clients as separate processes (the same cold start),
alternating which goes first, both at the same concurrency; MB/s is the artifact's bytes over the
process's wall time. Medians of the rounds and the median of per-round ratios (kaito / oras) are
reported; one JSON object on the last line. oras is the real CLI, built from its Go module into
kaito's asset cache (kaito.envtest.orascli).

    .venv/bin/python bench/weights.py --small    # 3 rounds of 64 MB
    .venv/bin/python bench/weights.py            # 7 rounds of 1 GB (4 x 256 MB)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_model(folder: Path, shards: int, shard_mb: int) -> int:
    """A Hugging Face-shaped folder of random (incompressible) shards; returns its bytes."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "phi3", "bench": True}))
    total = 0
    for i in range(shards):
        path = folder / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        with path.open("wb") as f:
            for _ in range(shard_mb):
                f.write(os.urandom(1 << 20))
        total += path.stat().st_size
    return total + (folder / "config.json").stat().st_size


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return seconds


def same_files(a: Path, b: Path) -> bool:
    def files(root: Path) -> dict[str, int]:
        return {
            p.relative_to(root).as_posix(): p.stat().st_size
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        }

    return files(a) == files(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="3 rounds of 64 MB (a smoke run)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--shards", type=int)
    parser.add_argument("--shard-mb", type=int)
    parser.add_argument("--concurrency", type=int, default=4, help="streams for both clients")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.small else 7)
    shards = args.shards or 4
    shard_mb = args.shard_mb or (16 if args.small else 256)

    from kaito.envtest.orascli import ensure_oras
    from kaito.weights import RegistryClient, push_folder

    oras = str(ensure_oras(progress=lambda m: print(m, file=sys.stderr)))
    work = Path(tempfile.mkdtemp(prefix="kaito-bench-weights-"))
    state = work / "registry"
    script = ROOT / "hack" / "registry.sh"
    out = subprocess.run(
        ["bash", str(script), "start", str(state)], capture_output=True, text=True, timeout=900
    )
    if out.returncode != 0:
        raise SystemExit(f"registry did not start: {out.stderr.strip()[-500:]}")
    try:
        env_file = dict(line.split("=", 1) for line in (state / "registry.env").read_text().split())
        host, ca = env_file["REGISTRY_HOST"], env_file["REGISTRY_CA"]
        auth = base64.b64encode(
            f"{env_file['REGISTRY_USER']}:{env_file['REGISTRY_PASSWORD']}".encode()
        ).decode()
        config = work / "auth.json"
        config.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
        model = work / "model"
        size = make_model(model, shards, shard_mb)
        image = f"{host}/bench/weights:v1"
        pushed = push_folder(
            RegistryClient.for_image(image, registry_config=config, ca_file=Path(ca)), model, concurrency=4
        )
        print(f"pushed {size / 1e6:.0f} MB as {pushed.digest} in {pushed.seconds:.1f}s", file=sys.stderr)
        c = str(args.concurrency)
        kaito_argv = [sys.executable, "-m", "kaito.weights", "pull", image]
        kaito_flags = ["--registry-config", str(config), "--ca-file", ca, "--concurrency", c]
        oras_flags = ["--registry-config", str(config), "--ca-file", ca, "--concurrency", c]
        kaito_s: list[float] = []
        oras_s: list[float] = []
        for r in range(rounds):
            order = ("kaito", "oras") if r % 2 == 0 else ("oras", "kaito")
            for side in order:
                dest = work / f"pull-{side}-{r}"
                if side == "kaito":
                    kaito_s.append(timed([*kaito_argv, str(dest), *kaito_flags]))
                else:
                    oras_s.append(timed([oras, "pull", image, "-o", str(dest), *oras_flags]))
                if not same_files(dest, model):
                    raise SystemExit(f"{side} pulled a different folder than was pushed")
                shutil.rmtree(dest)
            print(
                f"round {r}: kaito {size / 1e6 / kaito_s[-1]:.1f} MB/s, "
                f"oras {size / 1e6 / oras_s[-1]:.1f} MB/s",
                file=sys.stderr,
            )
        kaito_mbps = [size / 1e6 / s for s in kaito_s]
        oras_mbps = [size / 1e6 / s for s in oras_s]
        result = {
            "bench": "weights",
            "artifact_mb": round(size / 1e6, 1),
            "files": shards + 1,
            "rounds": rounds,
            "concurrency": args.concurrency,
            "kaito_mb_per_s": round(statistics.median(kaito_mbps), 1),
            "oras_mb_per_s": round(statistics.median(oras_mbps), 1),
            "ratio_median": round(
                statistics.median(k / o for k, o in zip(kaito_mbps, oras_mbps, strict=True)), 3
            ),
            "kaito_rounds_mb_per_s": [round(x, 1) for x in kaito_mbps],
            "oras_rounds_mb_per_s": [round(x, 1) for x in oras_mbps],
            "oras_version": subprocess.run([oras, "version"], capture_output=True, text=True).stdout.split()[
                1
            ],
            "cpus": os.cpu_count(),
            "load_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(result))
    finally:
        subprocess.run(["bash", str(script), "stop", str(state)], timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
