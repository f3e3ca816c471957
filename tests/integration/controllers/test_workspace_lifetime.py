"""What the workspace controller keeps and leaves running, on the real control plane (issue 20):
its background writes end with its leadership, and its map of recent writes does not grow."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from workspace_helpers import (
    Running,
    apply_text,
    get_ws,
    gpu_nodes,
    uniq,
    wait_condition,
    wait_for,
    workspace_yaml,
)

from kaito.api import names
from kaito.controllers.workspace import WORKSPACE
from kaito.envtest import Cluster
from kaito.operator import OperatorOptions, build_operator
from kaito.operator.options import ElectionOptions
from kaito.runtime import LEASE, Client, LeaderElector, NotFoundError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from faultproxy import FaultProxy, Seen  # isort: skip  (found through the path above)

pytestmark = pytest.mark.cluster

READY = names.WORKSPACE_READY


async def test_recent_writes_empty_once_workspaces_converge_or_go(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    """Issue 20, bug 9: every write the controller remembers (StatefulSets, Services, the
    ControllerRevisions and the shared ConfigMap written once, status updates) is dropped once
    the cache shows it, and a deleted Workspace leaves nothing behind either."""
    assert operator.op is not None
    recent = operator.op.workspace.writer.recent
    label = {"apps": uniq("recent")}
    count, deleted = 4, 2
    async with gpu_nodes(kclient, count, label):
        wss = [uniq("rw") for _ in range(count)]
        for name in wss:
            apply_text(crds, namespace, workspace_yaml(name, label))
        for name in wss:
            await wait_condition(kclient, namespace, name, READY, "True")
        # Converged: nothing is written any more, so nothing may be remembered.
        await wait_for(lambda: len(recent) == 0, f"RecentWrites empty after convergence ({len(recent)})")

        for name in wss[:deleted]:
            crds.kubectl("delete", "workspace", name, "-n", namespace, "--wait=false")
        for name in wss[:deleted]:

            async def gone(n: str = name) -> bool:
                return await get_ws(kclient, namespace, n) is None

            await wait_for(gone, f"{name} deleted")
        # The deletions wrote (finalizer removal, child deletes): all of it is seen, or gone.
        await wait_for(lambda: len(recent) == 0, f"RecentWrites empty after deletions ({len(recent)})")


async def test_no_background_write_after_the_lease_is_lost(
    crds: Cluster, kclient: Client, namespace: str
) -> None:
    """Issue 20, bug 7: the Services of a Workspace are written in the background. One write is
    held at a proxy in front of the apiserver; the other waits for its slot behind it. Then
    another process takes the lease. Once the operator has seen the loss, no Service write of
    its may reach the apiserver: the controller's background work stops with the lease."""
    loop = asyncio.get_running_loop()
    services = f"/api/v1/namespaces/{namespace}/services"
    writes: list[tuple[float, str]] = []
    gate = asyncio.Event()

    async def before(seen: Seen) -> None:
        if seen.path.startswith(services) and seen.method in ("POST", "PUT", "PATCH"):
            writes.append((loop.time(), seen.path))
            if len(writes) == 1:
                await gate.wait()  # the first Service write is held before the apiserver

    timings = {"lease_duration": 4.0, "renew_deadline": 3.0, "retry_period": 0.3}
    lease_name = "kaito-bg-writes"
    label = {"apps": uniq("bg")}
    async with FaultProxy(crds.client_configuration(), before=before) as proxy:
        options = OperatorOptions(
            metrics_bind_address="0",
            health_probe_bind_address="0",
            namespace=namespace,
            leader_election=ElectionOptions(enabled=True, id=lease_name, namespace=namespace, **timings),
            max_concurrent_reconciles=1,  # one background slot: the second write waits
        )
        op = build_operator(proxy.configuration(), options, handle_signals=False)
        task = asyncio.create_task(op.start())
        new = LeaderElector(kclient, name=lease_name, namespace=namespace, identity="new", **timings)
        tnew: asyncio.Task[None] | None = None
        name = uniq("bg")
        try:
            async with gpu_nodes(kclient, 1, label):
                apply_text(crds, namespace, workspace_yaml(name, label))
                await wait_for(lambda: len(writes) >= 1, "the first Service write held at the proxy")

                lease = await kclient.get(LEASE, lease_name, namespace, cached=False)
                lease["spec"].update(
                    holderIdentity="new", renewTime=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                )
                await kclient.update(lease)
                tnew = asyncio.create_task(new.run())  # it holds the lease now and keeps renewing
                await wait_for(lambda: not op.manager.is_leader, "the operator saw the loss", interval=0.01)
                lost = loop.time()
                gate.set()  # had the writes survived the loss, the second would be sent now
                # Both writes settled (sent or abandoned): nothing more can come after this.
                await wait_for(lambda: not op.workspace.writer.in_flight, "the background writes settled")
                late = [(t - lost, path) for t, path in writes if t > lost]
                assert late == [], late
                assert len(writes) == 1
        finally:
            gate.set()
            op.stop()
            await asyncio.wait_for(task, 60)
            if tnew is not None:
                tnew.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tnew
            # No operator runs for this namespace any more: take the Workspace away by hand.
            with contextlib.suppress(NotFoundError):
                await kclient.patch(WORKSPACE, name, {"metadata": {"finalizers": None}}, namespace)
                await kclient.delete(WORKSPACE, name, namespace)
