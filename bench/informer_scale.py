"""Informer at scale: kaito.runtime's against client-go's, syncing N existing objects.

    python bench/informer_scale.py --n 10000,100000   # full: each kind and N, 3 alternating rounds
    python bench/informer_scale.py --small            # make test: N = 2,000, 1 round per kind

One real etcd + kube-apiserver (``kaito.envtest.Cluster``). N small BenchObjects (bench/runtime.py's
CRD and objects, a few hundred bytes each as stored) are created in one namespace, concurrently,
before any clock; for several N the namespace grows from one N to the next. Then, per round and
alternating (kaito first in even rounds, client-go first in odd ones), each side starts a fresh
process that:

1. loads its kubeconfig and syncs one informer on an empty namespace (the connection, TLS and
   code paths warm; neither side's imports or start-up are measured), collects garbage and
   reads its RSS (``rss_before``);
2. starts an informer on the N objects and waits until it has synced: ``sync_seconds``
   (kaito: ``Informer.wait_for_sync``; client-go: ``HasSyncedChecker().Done()``, no polling);
3. reads its peak RSS (VmHWM), collects garbage and reads its RSS again (``rss_after``).

Reported per side and N (medians over rounds, every round kept): ``sync_seconds``,
``peak_rss_mb`` (VmHWM: the whole process, interpreter or Go runtime included),
``bytes_per_object`` ((rss_after - rss_before) / N: what the cache costs to keep) and
``peak_bytes_per_object`` ((VmHWM - rss_before) / N: what syncing it costs at the worst moment).
Goals (issue 24): kaito's sync time ≤ 2 x client-go's (``ratio_sync_seconds`` = kaito ÷ client-go)
and kaito's RSS per object ≤ client-go's (``ratio_bytes_per_object``, ``ratio_peak_bytes_per_object``).

Two kinds (``--kinds``), each in its own namespace:

- ``benchobjects``, like for like and the headline: both sides watch the CRD through a dynamic
  client (JSON on the wire, decoded into generic maps: kaito's dicts, client-go's
  ``unstructured.Unstructured``).
- ``configmaps``, client-go at its most efficient: its generated typed clientset asks for
  protobuf and decodes into Go structs; kaito still reads JSON into dicts (it has no typed mode).
  ConfigMaps of the same shape (a label, two short data fields).

Both sides drop ``metadata.managedFields`` on the way into the cache (kaito by default, client-go
through the informer transform controller-runtime installs by default). Each side syncs the way
it does by default, which is the same way on both since kaito's informer has it too: a
watch-list, one watch that streams the initial state (client-go 1.37's WatchListClient, kaito's
``InformerOptions.watch_list``). ``KUBE_FEATURE_WatchListClient=false`` turns it off for the Go
peer only, ``KAITO_BENCH_WATCH_LIST=false`` for kaito only (it then lists in consistent pages
of 500). ``etcd_db_bytes`` is etcd's database size after
creating each N (the default quota is 2 GiB).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _clientgo
from runtime import BENCH, obj, setup

from kaito.runtime import GVK, Client, configure_logging

#: Per kind: the namespace its N objects live in and the GVK kaito's informer watches.
KINDS = {"benchobjects": ("scale", BENCH), "configmaps": ("scale-cm", GVK("", "v1", "ConfigMap"))}
EMPTY_NS = "scale-empty"
SIDES = ("kaito", "client_go")
ETCD_DEFAULT_QUOTA = 2 * 1024**3


def proc_status_kib(text: str, field: str) -> int:
    """One ``Field:   123 kB`` line of ``/proc/<pid>/status`` (VmRSS, VmHWM, ...), in KiB."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == field:
            return int(rest.split()[0])
    raise KeyError(f"{field} not in /proc status")


def etcd_db_bytes(status_json: str) -> int:
    """The database size from ``etcdctl endpoint status -w json`` (first endpoint)."""
    return int(json.loads(status_json)[0]["Status"]["dbSize"])


def _self_kib(field: str) -> int:
    return proc_status_kib(Path("/proc/self/status").read_text(), field)


def configmap(ns: str, i: int) -> dict[str, Any]:
    """A ConfigMap shaped like bench/runtime.py's BenchObject (a label, two short fields)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"o{i:05d}", "namespace": ns, "labels": {"bench": "yes"}},
        "data": {"size": "small", "index": str(i)},
    }


async def kaito_child(kubeconfig: str, kind: str, ns: str, expect: int) -> dict[str, Any]:
    """kaito's side, in a fresh process; prints the same result fields as the client-go peer."""
    from kubernetes_asyncio import config as kconfig
    from kubernetes_asyncio.client import Configuration

    from kaito.runtime import InformerCache

    cfg = Configuration()
    await kconfig.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    async with Client(cfg) as client:
        cache = InformerCache(client, watch_list=os.environ.get("KAITO_BENCH_WATCH_LIST", "true") != "false")
        gvk = KINDS[kind][1]
        cache.get_informer(gvk, namespace=EMPTY_NS)
        await cache.start()
        assert await cache.wait_for_sync(60)
        gc.collect()
        before = _self_kib("VmRSS")
        t0 = time.perf_counter()
        inf = cache.get_informer(gvk, namespace=ns)
        await inf.start()
        synced = await inf.wait_for_sync(1800)
        seconds = time.perf_counter() - t0
        if not synced or len(inf.store) != expect:
            raise RuntimeError(f"kaito informer: synced={synced}, {len(inf.store)} of {expect} objects")
        hwm = _self_kib("VmHWM")
        gc.collect()
        after = _self_kib("VmRSS")
        objects = len(inf.store)
        await cache.stop()
    return {
        "kind": "result",
        "command": "sync",
        "objects": objects,
        "sync_seconds": seconds,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "hwm_kib": hwm,
    }


async def run_kaito(kubeconfig: str, kind: str, ns: str, expect: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", kubeconfig, kind, ns, str(expect),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"kaito child exited {proc.returncode}: {err.decode()[-2000:]}")
    return _clientgo.parse_result(out.decode())  # the same line format as the peer's


async def run_client_go(kubeconfig: str, kind: str, ns: str, expect: int) -> dict[str, Any]:
    return await _clientgo.run(
        ["sync", "-kubeconfig", kubeconfig, "-kind", kind, "-namespace", ns,
         "-warmup-namespace", EMPTY_NS, "-expect", str(expect)],
    )  # fmt: skip


def figures(res: dict[str, Any], n: int) -> dict[str, float]:
    """One side's figures from its result line (RSS fields in KiB)."""
    before, after, hwm = (int(res[k]) * 1024 for k in ("rss_before_kib", "rss_after_kib", "hwm_kib"))
    return {
        "sync_seconds": float(res["sync_seconds"]),
        "peak_rss_mb": hwm / 2**20,
        "rss_after_mb": after / 2**20,
        "bytes_per_object": (after - before) / n,
        "peak_bytes_per_object": (hwm - before) / n,
    }


def progress(what: str, **shown: Any) -> None:
    """One line per step on stderr, with the load: a run cut short still shows what it measured."""
    text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    print(
        f"[{time.strftime('%H:%M:%S')}] {what} {text} load={os.getloadavg()[0]:.1f}",
        file=sys.stderr,
        flush=True,
    )


async def create_upto(client: Client, kind: str, have: int, n: int, concurrency: int) -> None:
    """Grow the kind's namespace from ``have`` to ``n`` objects (names o<index>, as bench/runtime.py's)."""
    ns = KINDS[kind][0]
    make = obj if kind == "benchobjects" else configmap
    it = iter(range(have, n))

    async def worker() -> None:
        for i in it:
            await client.create(make(ns, i))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure(kubeconfig: str, kind: str, n: int, rounds: int) -> dict[str, Any]:
    """Alternating rounds of both sides on ``n`` objects of ``kind``; medians, ratios, goals."""
    ns = KINDS[kind][0]
    entry: dict[str, Any] = {"rounds": []}
    for r in range(rounds):
        row: dict[str, Any] = {}
        for side in SIDES if r % 2 == 0 else SIDES[::-1]:
            run = run_kaito if side == "kaito" else run_client_go
            row[side] = {k: round(v, 3) for k, v in figures(await run(kubeconfig, kind, ns, n), n).items()}
            progress(f"{kind} N={n} round {r} {side}", **row[side])
        row["load1"] = round(os.getloadavg()[0], 2)
        entry["rounds"].append(row)
    for side in SIDES:
        entry[side] = {
            k: round(statistics.median(row[side][k] for row in entry["rounds"]), 3)
            for k in entry["rounds"][0][side]
        }
    k, c = entry["kaito"], entry["client_go"]
    entry["ratio_sync_seconds"] = round(k["sync_seconds"] / c["sync_seconds"], 3)
    entry["ratio_bytes_per_object"] = round(k["bytes_per_object"] / c["bytes_per_object"], 3)
    entry["ratio_peak_bytes_per_object"] = round(k["peak_bytes_per_object"] / c["peak_bytes_per_object"], 3)
    entry["goals"] = {
        "sync_seconds<=2x_client_go": entry["ratio_sync_seconds"] <= 2,
        "bytes_per_object<=client_go": entry["ratio_bytes_per_object"] <= 1,
        "peak_bytes_per_object<=client_go": entry["ratio_peak_bytes_per_object"] <= 1,
    }
    return entry


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from kaito.envtest import Cluster, ClusterOptions

    sizes = [2000] if args.small else sorted(int(x) for x in args.n.split(","))
    kinds = args.kinds.split(",")
    rounds = 1 if args.small else args.rounds
    result: dict[str, Any] = {"mode": "small" if args.small else "full", "rounds": rounds, "kinds": {}}
    t_start = time.time()
    _clientgo.binary(lambda m: progress(m))  # a first build happens before any clock
    with Cluster(ClusterOptions()) as cluster:
        kubeconfig = str(cluster.kubeconfig)
        etcdctl = [str(cluster.assets / "etcdctl"), "--endpoints", cluster.etcd_url]
        async with Client(cluster.client_configuration()) as client:
            await setup(client, [*(KINDS[kind][0] for kind in kinds), EMPTY_NS])
            for kind in kinds:
                result["kinds"][kind] = {}
                have = 0
                for n in sizes:
                    t = time.time()
                    await create_upto(client, kind, have, n, args.concurrency)
                    created_s = time.time() - t
                    status = await asyncio.to_thread(
                        subprocess.run,
                        [*etcdctl, "endpoint", "status", "-w", "json"],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    created: dict[str, Any] = {
                        "created": n - have,
                        "create_seconds": round(created_s, 1),
                        "create_per_s": round((n - have) / created_s, 1) if n > have else None,
                        "etcd_db_bytes": etcd_db_bytes(status.stdout),
                        "etcd_quota_bytes": ETCD_DEFAULT_QUOTA,
                    }
                    have = n
                    progress(
                        f"{kind} N={n} created",
                        seconds=created_s,
                        etcd_db_mb=created["etcd_db_bytes"] / 2**20,
                    )
                    result["kinds"][kind][str(n)] = {**created, **await measure(kubeconfig, kind, n, rounds)}
    head = result["kinds"][kinds[0]][str(sizes[-1])]  # the headline: the first kind at the largest N
    result["n"] = sizes[-1]
    result["headline_kind"] = kinds[0]
    result["kaito_sync_seconds"] = head["kaito"]["sync_seconds"]
    result["client_go_sync_seconds"] = head["client_go"]["sync_seconds"]
    result["ratio_sync_seconds"] = head["ratio_sync_seconds"]
    result["ratio_bytes_per_object"] = head["ratio_bytes_per_object"]
    result["wall_seconds"] = round(time.time() - t_start, 1)
    result["loadavg_1m"] = round(os.getloadavg()[0], 2)
    result["cpus"] = os.cpu_count()
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, ns, expect = sys.argv[3], sys.argv[4], int(sys.argv[5])
        print(json.dumps(asyncio.run(kaito_child(sys.argv[2], kind, ns, expect))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description="kaito.runtime vs client-go informer sync at scale")
    parser.add_argument("--small", action="store_true", help="quick run for make test")
    parser.add_argument("--n", default="10000,100000", help="object counts, comma-separated")
    parser.add_argument("--kinds", default="benchobjects,configmaps", help="the first is the headline")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per kind and N")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent creates")
    configure_logging("console", "WARNING")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
