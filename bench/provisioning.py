"""kaito's node-provisioner vs real Karpenter (kwok provider); prints ONE JSON object (last line).

    python bench/provisioning.py           # full: 50 claims per round, 3 alternating rounds per side
    python bench/provisioning.py --small   # quick variant run by `make test` (10 claims, 1 round)

Work: N nodes wanted at once, clock from the request until every NodeClaim reads Ready (cloud
instance, Node registered and Ready with its GPUs).
  kaito (kwok cloud, the ``make run`` default): N gpu-provisioner-shaped NodeClaims created at
      once; kaito's NodeClaim controller runs in this process.
  kaito (AKS emulator, zero emulated delay): the same through the Azure SDK, agent-pool LROs
      over loopback TLS; reported as ``aks_*``.
  karpenter: one static NodePool with ``replicas: N`` for Karpenter's kwok provider (built from
      its Go module through kaito's asset cache; built here if missing, never skipped), with an
      instance-types file made from kaito's SKU table.
Both sides share one control plane (etcd, kube-apiserver, kwok with --manage-all-nodes) with
Karpenter's own CRDs installed, so kaito's claims are validated by Karpenter's schema too.
Rounds alternate (kaito, karpenter, karpenter, kaito, ...); each round pair gives one ratio and
the headline is the median. Readiness is observed by polling the API every 0.1 s (same for both).

Headlines: kaito_claims_per_s, karpenter_claims_per_s, ratio (target >= 1.0), p50_s / p99_s
(kaito kwok: claim created -> Ready), requests_per_claim (API requests kaito's controller made per
claim, counted with an aiohttp TraceConfig; watches count once), aks_claims_per_s,
aks_requests_per_claim (Kubernetes + ARM requests per claim).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from kaito.api.nodeclaim import NODECLAIM, NODEPOOL
from kaito.controllers.nodeclaim import NodeClaimOptions, setup_nodeclaim_controller
from kaito.envtest import Cluster, ClusterOptions
from kaito.envtest.aks import AksEmulator, VmSize
from kaito.envtest.karpenter import InstanceTypeSpec, KarpenterProcess, ensure_karpenter
from kaito.nodes import NODE, CloudProvider, NodeRequest, node_shape
from kaito.presets import list_skus
from kaito.provisioners.cloud.aks import AksCloudProvider, AksOptions
from kaito.provisioners.cloud.kwok import KwokCloudProvider
from kaito.provisioners.gpu_provisioner import nodeclaim_manifest
from kaito.provisioners.karpenter import nodepool_manifest
from kaito.runtime import ApiError, Client, Manager, NotFoundError, configure_logging

SKU = "Standard_NC24ads_A100_v4"


def instance_types() -> list[InstanceTypeSpec]:
    out = []
    for sku in list_skus("azure"):
        s = node_shape(sku.name)
        out.append(InstanceTypeSpec(sku.name, s.cpu, s.memory_gib, s.gpus, sku.price_per_hour or 1.0))
    return out


def vm_sizes() -> dict[str, VmSize]:
    return {
        sku.name: VmSize(node_shape(sku.name).gpus, node_shape(sku.name).cpu, node_shape(sku.name).memory_gib)
        for sku in list_skus("azure")
    }


def ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or ()
    )


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._inc)

    async def _inc(self, *_: Any) -> None:
        self.n += 1


async def wait_ready(client: Client, selector: dict[str, str], n: int, limit: float) -> dict[str, float]:
    """Poll until n claims matching ``selector`` are Ready; claim name -> time first seen Ready."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + limit
    while len(seen) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(seen)}/{n} NodeClaims Ready within {limit:.0f}s")
        try:
            claims = await client.list_from_api(NODECLAIM, label_selector=selector)
        except (TimeoutError, aiohttp.ClientError, ApiError) as exc:  # a loaded shared machine
            print(f"poll failed ({type(exc).__name__}); polling again", file=sys.stderr, flush=True)
            continue
        for c in claims:
            if ready(c) and c["metadata"]["name"] not in seen:
                seen[c["metadata"]["name"]] = time.time()
        await asyncio.sleep(0.1)
    return seen


async def wait_empty(client: Client, gvk: Any, selector: dict[str, str], limit: float = 180.0) -> None:
    deadline = time.monotonic() + limit
    while await client.list_from_api(gvk, label_selector=selector):
        if time.monotonic() > deadline:
            raise SystemExit(f"{gvk.kind} {selector} not cleaned up within {limit:.0f}s")
        await asyncio.sleep(0.2)


async def kaito_round(
    cluster: Cluster, client: Client, n: int, tag: str, cloud: str, aks: AksEmulator | None
) -> dict[str, Any]:
    counter = Counter()
    mgr = Manager(
        cluster.client_configuration(),
        handle_signals=False,
        metrics_bind_address="0",
        health_probe_bind_address="0",
        trace_configs=[counter.trace],
    )
    prov: CloudProvider
    if cloud == "kwok":
        prov = KwokCloudProvider(mgr.client)
    else:
        assert aks is not None
        from azure.identity.aio import ClientSecretCredential

        cred = ClientSecretCredential(
            "t", "c", "s", authority=aks.endpoint, connection_verify=str(aks.ca_cert)
        )
        prov = AksCloudProvider(
            mgr.client,
            AksOptions(
                subscription_id=aks.subscription,
                resource_group=aks.resource_group,
                cluster_name=aks.cluster_name,
                arm_endpoint=aks.endpoint,
                ca_bundle=str(aks.ca_cert),
                polling_interval=0.1,
            ),
            cred,
        )
    setup_nodeclaim_controller(mgr, prov, NodeClaimOptions(poll_interval=0.2, gc_interval=3600))
    task = asyncio.create_task(mgr.start())
    await asyncio.wait_for(mgr.elected.wait(), 120)
    arm_before = len(aks.requests) if aks is not None else 0
    req_before = counter.n
    selector = {"kaito.sh/workspace": tag}
    claims = [
        nodeclaim_manifest(NodeRequest(workspace=tag, namespace="bench", uid=tag, instance_type=SKU, count=1))
        for _ in range(n)
    ]
    started = time.time()
    created: dict[str, float] = {}
    for c in claims:
        await client.create(c)
        created[c["metadata"]["name"]] = time.time()
    seen = await wait_ready(client, selector, n, 300)
    elapsed = max(seen.values()) - started
    requests = counter.n - req_before
    arm = (len(aks.requests) - arm_before) if aks is not None else 0
    for c in claims:
        with contextlib.suppress(NotFoundError):
            await client.delete(NODECLAIM, c["metadata"]["name"])
    await wait_empty(client, NODECLAIM, selector)
    mgr.stop()
    await task
    close = getattr(prov, "close", None)
    if close is not None:
        await close()
    return {
        "claims_per_s": n / elapsed,
        "latencies": [seen[k] - created[k] for k in seen],
        "requests_per_claim": requests / n,
        "arm_requests_per_claim": arm / n,
    }


async def karpenter_round(client: Client, n: int, tag: str) -> dict[str, Any]:
    pool = nodepool_manifest(
        NodeRequest(workspace=tag, namespace="bench", uid=tag, instance_type=SKU, count=n)
    )
    name = pool["metadata"]["name"]
    selector = {"karpenter.sh/nodepool": name}
    started = time.time()
    await client.create(pool)
    seen = await wait_ready(client, selector, n, 300)
    elapsed = max(seen.values()) - started
    await client.delete(NODEPOOL, name)
    await wait_empty(client, NODECLAIM, selector)
    await wait_empty(client, NODE, selector)
    return {"claims_per_s": n / elapsed, "latencies": [t - started for t in seen.values()]}


def pct(values: list[float], q: float) -> float:
    vals = sorted(values)
    return vals[min(len(vals) - 1, round(q * (len(vals) - 1)))]


async def main(small: bool) -> dict[str, Any]:
    n, rounds = (10, 1) if small else (50, 3)
    t0 = time.monotonic()
    folder = ensure_karpenter(progress=lambda m: print(m, file=sys.stderr, flush=True))
    work = Path(tempfile.mkdtemp(prefix="kaito-bench-prov-"))
    cluster = Cluster(ClusterOptions(kwok=True, controller_manager=True))
    cluster.start()
    karp: KarpenterProcess | None = None
    try:
        karp = KarpenterProcess(cluster.kubeconfig, instance_types(), workdir=work, folder=folder)
        for f in karp.crd_files:
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/nodeclaims.karpenter.sh",
            "crd/nodepools.karpenter.sh",
            "crd/kwoknodeclasses.karpenter.kwok.sh",
        )
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input="apiVersion: karpenter.kwok.sh/v1alpha1\nkind: KWOKNodeClass\nmetadata:\n  name: default\n",
        )
        karp.start()
        async with Client(cluster.client_configuration()) as client, AksEmulator(cluster, vm_sizes()) as aks:
            kaito: list[dict[str, Any]] = []
            peer: list[dict[str, Any]] = []
            aks_runs: list[dict[str, Any]] = []
            for r in range(rounds):
                order = ("kaito", "karpenter") if r % 2 == 0 else ("karpenter", "kaito")
                for side in order:
                    tag = f"{side}-{r}"
                    if side == "kaito":
                        kaito.append(await kaito_round(cluster, client, n, tag, "kwok", None))
                    else:
                        peer.append(await karpenter_round(client, n, tag))
                    print(
                        f"round {r} {side}: {(kaito if side == 'kaito' else peer)[-1]['claims_per_s']:.2f}"
                        " claims/s",
                        file=sys.stderr,
                        flush=True,
                    )
                aks_runs.append(await kaito_round(cluster, client, n, f"aks-{r}", "aks", aks))
                print(
                    f"round {r} aks: {aks_runs[-1]['claims_per_s']:.2f} claims/s", file=sys.stderr, flush=True
                )
            ratios = [k["claims_per_s"] / p["claims_per_s"] for k, p in zip(kaito, peer, strict=True)]
            lat = [x for k in kaito for x in k["latencies"]]
            return {
                "bench": "provisioning",
                "small": small,
                "claims": n,
                "rounds": rounds,
                "kaito_claims_per_s": round(statistics.median(k["claims_per_s"] for k in kaito), 3),
                "karpenter_claims_per_s": round(statistics.median(p["claims_per_s"] for p in peer), 3),
                "ratio": round(statistics.median(ratios), 3),
                "p50_s": round(pct(lat, 0.5), 3),
                "p99_s": round(pct(lat, 0.99), 3),
                "requests_per_claim": round(statistics.median(k["requests_per_claim"] for k in kaito), 2),
                "aks_claims_per_s": round(statistics.median(a["claims_per_s"] for a in aks_runs), 3),
                "aks_p50_s": round(pct([x for a in aks_runs for x in a["latencies"]], 0.5), 3),
                "aks_requests_per_claim": round(
                    statistics.median(
                        a["requests_per_claim"] + a["arm_requests_per_claim"] for a in aks_runs
                    ),
                    2,
                ),
                "karpenter_p50_s": round(pct([x for p in peer for x in p["latencies"]], 0.5), 3),
                "wall_s": round(time.monotonic() - t0, 1),
            }
    finally:
        if karp is not None:
            karp.stop()
        cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="10 claims, one round (make test)")
    args = parser.parse_args()
    configure_logging("console", "WARNING", stream=sys.stderr)
    result = asyncio.run(main(args.small))
    print(json.dumps(result))
