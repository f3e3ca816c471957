"""client-go, the live Go peer of kaito.runtime's benchmarks: build it once, run it, read it.

The peer is ``bench/clientgo/main.go`` (a dynamic shared informer, a lister, a rate-limited
workqueue and workers: a client-go controller as client-go's own docs write one), pinned to
``k8s.io/client-go`` of the Kubernetes version the envtest control plane runs. It is built with
``go build`` on first use into the asset cache (``kaito.envtest.assets.cache_root()``, like
upstream Kaito's controller in bench/workspace.py) under a folder named by a hash of its source:
an edited main.go gets a fresh build, an unchanged one is never rebuilt. ``KAITO_CLIENTGO_PEER_BIN``
points at a ready binary instead (no Go toolchain needed then).

The peer writes JSON objects, one per line, on stdout; the last with ``"kind": "result"`` holds
its figures (``parse_result``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "bench" / "clientgo"
BINARY_ENV = "KAITO_CLIENTGO_PEER_BIN"
NAME = "clientgo-peer"


class PeerMissing(RuntimeError):
    """The peer can be neither found nor built; the message says why and what to set, on one line."""


def source_hash(source: Path = SOURCE) -> str:
    """A digest of everything ``go build`` reads from the peer's folder (go.mod, go.sum, *.go).

    Why a hash and not a version: the peer is this repository's code and changes with it, and a
    stale binary would silently measure old code."""
    digest = hashlib.sha256()
    files = sorted(p for p in source.iterdir() if p.name in ("go.mod", "go.sum") or p.suffix == ".go")
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


#: The executable this process resolved first: every run of one benchmark uses the same build,
#: even when bench/clientgo is edited while the benchmark runs (a re-hash would rebuild mid-run
#: and mix two builds in one comparison).
_resolved: list[Path] = []


def binary(log: Callable[[str], None] = lambda _m: None) -> Path:
    """The peer's executable: ``KAITO_CLIENTGO_PEER_BIN``, else the cached build of this source,
    else ``go build`` into the cache (a minute or two when the k8s.io modules are in Go's module
    cache, as after ``make assets``). Resolved once per process."""
    if not _resolved:
        _resolved.append(_find_or_build(log))
    return _resolved[0]


def _find_or_build(log: Callable[[str], None]) -> Path:
    ready = os.environ.get(BINARY_ENV)
    if ready:
        path = Path(ready).expanduser()
        if not os.access(path, os.X_OK):
            raise PeerMissing(f"{BINARY_ENV}={path} is not an executable file")
        return path
    from kaito.envtest.assets import cache_root

    target = cache_root() / f"{NAME}-{source_hash()}" / NAME
    if os.access(target, os.X_OK):
        return target
    go = shutil.which("go")
    if go is None:
        raise PeerMissing(f"no Go toolchain to build {SOURCE} into {target}; install Go or set {BINARY_ENV}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    log(f"building the client-go peer ({SOURCE}) into {target}")
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local", CGO_ENABLED="0")
    cmd = [go, "build", "-trimpath", "-o", str(partial), "."]
    proc = subprocess.run(cmd, cwd=SOURCE, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise PeerMissing(f"go build of the client-go peer failed: {tail}")
    partial.replace(target)
    return target


def parse_result(stdout: str) -> dict[str, Any]:
    """The peer's figures: the last stdout line that is a JSON object with ``"kind": "result"``.

    Other lines (none today; klog writes to stderr) are skipped rather than rejected, so a
    diagnostic line printed by a dependency cannot break a run that did produce its result."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("kind") == "result":
            return obj
    raise ValueError(f"no result line in the client-go peer's output: {stdout[-300:]!r}")


async def run(args: Sequence[str], timeout: float = 1800) -> dict[str, Any]:  # noqa: ASYNC109
    """Run the peer (``reconcile ...`` or ``sync ...``) to its end and return its result line."""
    proc = await asyncio.create_subprocess_exec(
        str(binary(lambda m: print(m, file=sys.stderr, flush=True))),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"client-go peer {args[0]} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"client-go peer {args[0]} exited {proc.returncode}: {err.decode()[-2000:]}")
    return parse_result(out.decode())
