"""``kaito local port-forward``: host loopback to a pod on a local node.

Why no tunnel through the apiserver (as ``kubectl port-forward`` does): local pods have real
addresses on this machine (their veth routes), so the forwarder resolves the target the way a
Service would (a ready endpoint from the EndpointSlices kube-controller-manager writes from pod
readiness) and connects straight to it. Each new connection resolves again, so a restarted pod
with a new address is followed, and a Service with no ready endpoint is refused with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from typing import Any

from kaito.localnode.sandbox import NETWORK
from kaito.runtime import GVK, POD, SERVICE, Client, NotFoundError

ENDPOINTSLICE = GVK("discovery.k8s.io", "v1", "EndpointSlice")
Obj = dict[str, Any]


class ForwardError(Exception):
    """The target cannot be reached; the message says why and what to check."""


def parse_target(target: str) -> tuple[str, str]:
    kind, sep, name = target.partition("/")
    if not sep:
        kind, name = "pod", target
    kind = {"svc": "service", "services": "service", "pods": "pod", "po": "pod"}.get(kind, kind)
    if kind not in ("service", "pod") or not name:
        raise ForwardError(f"target {target!r}: use svc/NAME or pod/NAME")
    return kind, name


def _local_ip(ip: str) -> str:
    if ipaddress.ip_address(ip) not in NETWORK:
        raise ForwardError(
            f"address {ip} is not on a kaito local node (kwok pods have no process behind them); "
            "label the node kaito.sh/node-agent=local"
        )
    return ip


async def resolve(client: Client, namespace: str, target: str, port: int) -> tuple[str, int]:
    """(pod IP, container port) for ``target`` and the Service or container ``port``."""
    kind, name = parse_target(target)
    if kind == "pod":
        try:
            pod = await client.get(POD, name, namespace)
        except NotFoundError:
            raise ForwardError(f'pod "{name}" not found in namespace "{namespace}"') from None
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            raise ForwardError(f'pod "{name}" has no IP yet (phase {pod.get("status", {}).get("phase")})')
        return _local_ip(ip), port
    try:
        svc = await client.get(SERVICE, name, namespace)
    except NotFoundError:
        raise ForwardError(f'service "{name}" not found in namespace "{namespace}"') from None
    sport = next((p for p in svc["spec"].get("ports") or [] if p.get("port") == port), None)
    if sport is None:
        have = ", ".join(str(p.get("port")) for p in svc["spec"].get("ports") or [])
        raise ForwardError(f'service "{name}" has no port {port} (ports: {have or "none"})')
    target_port = sport.get("targetPort", port)
    slices = await client.list(
        ENDPOINTSLICE, namespace, label_selector=f"kubernetes.io/service-name={name}", cached=False
    )
    for sl in slices:
        ports = {p.get("name") or "": p.get("port") for p in sl.get("ports") or []}
        number = ports.get(sport.get("name") or "") or (target_port if isinstance(target_port, int) else None)
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") and number:
                return _local_ip(ep["addresses"][0]), int(number)
    raise ForwardError(f'service "{name}" has no ready endpoint (are its pods Ready?)')


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def forward(
    client: Client,
    namespace: str,
    target: str,
    local_port: int,
    remote_port: int,
    *,
    address: str = "127.0.0.1",
    ready: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled; every connection resolves the target afresh."""
    await resolve(client, namespace, target, remote_port)  # fail early with the reason

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ip, port = await resolve(client, namespace, target, remote_port)
            ur, uw = await asyncio.open_connection(ip, port)
        except (ForwardError, OSError):
            w.close()
            return
        await asyncio.gather(_pipe(r, uw), _pipe(ur, w))

    server = await asyncio.start_server(handle, address, local_port)
    async with server:
        if ready is not None:
            ready.set()
        await server.serve_forever()
