"""``kaito node-provisioner --cloud aks`` as a real process, killed between "agent pool created"
and "claim status written": after a restart there is exactly one pool per claim, and a pool left
behind with no claim (a crash after its claim was force-deleted) is garbage-collected."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from provisioning_helpers import claim_ready, delete_claims_and_wait, eventually, get_or_none

from kaito.api.nodeclaim import NODECLAIM
from kaito.envtest.aks import AksEmulator
from kaito.nodes import NodeRequest
from kaito.provisioners.gpu_provisioner import nodeclaim_manifest
from kaito.runtime import Client

pytestmark = [pytest.mark.cluster, pytest.mark.full_cluster]

KAITO = Path(sys.executable).with_name("kaito")


def start_node_provisioner(cluster: Any, aks: AksEmulator, log: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        AZURE_TENANT_ID="tenant-1",
        AZURE_CLIENT_ID="client-1",
        AZURE_CLIENT_SECRET="secret-1",
        AZURE_AUTHORITY_HOST=aks.endpoint,
    )
    argv = [
        str(KAITO),
        "node-provisioner",
        "--cloud",
        "aks",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--subscription-id",
        aks.subscription,
        "--resource-group",
        aks.resource_group,
        "--cluster-name",
        aks.cluster_name,
        "--arm-endpoint",
        aks.endpoint,
        "--ca-bundle",
        str(aks.ca_cert),
        "--polling-interval",
        "0.2",
        "--error-retry",
        "0.5",
        "--gc-grace",
        "2",
        "--gc-interval",
        "0.5",
        "--metrics-bind-address",
        "0",
        "--health-probe-bind-address",
        "0",
    ]
    return subprocess.Popen(argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def test_restart_after_a_crash_makes_no_second_pool_and_collects_orphans(
    crds: Any, kclient: Client, aks: AksEmulator, tmp_path: Path
) -> None:
    log = tmp_path / "node-provisioner.log"
    proc = start_node_provisioner(crds, aks, log)
    killed: list[str] = []

    def crash(pool: str) -> None:
        if not killed:
            killed.append(pool)
            os.kill(proc.pid, signal.SIGKILL)  # before the 201 even reaches the controller

    aks.on_pool_put = crash
    claim = nodeclaim_manifest(
        NodeRequest(
            workspace="crash",
            namespace="default",
            uid="u",
            instance_type="Standard_NC6s_v3",
            count=1,
        )
    )
    name = claim["metadata"]["name"]
    second: subprocess.Popen[bytes] | None = None
    try:
        await kclient.create(claim)

        async def dead() -> bool:
            return proc.poll() is not None

        await eventually(
            dead, 90, f"controller killed at the PUT ({log.read_text(errors='replace')[-800:]})"
        )
        assert killed == [name]
        assert aks.pool_names() == [name]
        after_crash = await get_or_none(kclient, NODECLAIM, name)
        assert not (after_crash.get("status") or {}).get("providerID")  # status never written

        # A pool whose claim vanished while nobody watched, created an hour ago.
        old = datetime.fromtimestamp(time.time() - 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        aks.add_pool(
            "wsorphan0001",
            "Standard_NC6s_v3",
            tags={"kaito-nodeclaim": "wsorphan0001", "kaito-created": old},
            age=3600,
        )
        # A pool kaito did not make is never touched.
        aks.add_pool("system", "Standard_NC6s_v3", tags={})

        aks.on_pool_put = None
        second = start_node_provisioner(crds, aks, log)
        await eventually(lambda: claim_ready(kclient, name), 90, "claim Ready after the restart")

        async def orphan_gone() -> bool:
            return "wsorphan0001" not in aks.pools

        await eventually(orphan_gone, 60, "orphan pool collected")
        assert aks.pool_names() == sorted([name, "system"])
        assert aks.requests_to("PUT", f"/agentPools/{name}") == 1

        await delete_claims_and_wait(kclient, [name])
        assert aks.pool_names() == ["system"]
    finally:
        for p in (proc, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
