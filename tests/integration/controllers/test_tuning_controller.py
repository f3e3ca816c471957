"""Tuning Workspaces on the real control plane: the seed's YAML -> a Job -> WorkspaceSucceeded.

The seed's tuning Workspace is applied with only its registry and secret names replaced by a real
local registry (hack/registry.sh, TLS + htpasswd) and a kubernetes.io/dockerconfigjson Secret for
it. kwok runs the Job's pod to completion; kube-controller-manager's Job controller marks the Job
Complete or Failed; the Workspace's conditions and printer columns must follow.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from workspace_helpers import REPO, Running, cond, get_ws, gpu_nodes, seed_path, wait_condition, wait_for

from kaito.api import names
from kaito.controllers.workspace.tuning import JOB, PUSHER, TuningJobOptions
from kaito.envtest import Cluster
from kaito.runtime import Client

pytestmark = pytest.mark.cluster
WS = "workspace-phi-3-mini"
SEED_IMAGE = "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1"
SEED_SECRET = "ACR_REGISTRY_SECRET_HERE"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("registry")
    script = REPO / "hack" / "registry.sh"
    out = subprocess.run(
        ["bash", str(script), "start", str(state)], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in (state / "registry.env").read_text().split())
    try:
        yield env
    finally:
        subprocess.run(["bash", str(script), "stop", str(state)], timeout=60)


def seed_with(registry: dict[str, str], secret: str) -> str:
    text = seed_path("phi3_tuning.yaml").read_text()
    assert SEED_IMAGE in text and SEED_SECRET in text
    return text.replace(SEED_IMAGE, f"{registry['REGISTRY_HOST']}/adapters/phi-3:0.0.1").replace(
        SEED_SECRET, secret
    )


def push_secret(cluster: Cluster, ns: str, registry: dict[str, str], name: str) -> None:
    cluster.kubectl(
        "create",
        "secret",
        "docker-registry",
        name,
        "-n",
        ns,
        f"--docker-server={registry['REGISTRY_HOST']}",
        f"--docker-username={registry['REGISTRY_USER']}",
        f"--docker-password={registry['REGISTRY_PASSWORD']}",
    )


async def the_job(client: Client, ns: str) -> dict[str, Any] | None:
    jobs = await client.list(JOB, ns, cached=False)
    return jobs[0] if jobs else None


def table(out: str) -> list[dict[str, str]]:
    """kubectl's table output by column position (tuning Workspaces leave some cells empty)."""
    import re

    lines = [ln for ln in out.splitlines() if ln.strip()]
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    header = [lines[0][a:b].strip() for a, b in bounds]
    return [dict(zip(header, (ln[a:b].strip() for a, b in bounds), strict=True)) for ln in lines[1:]]


async def test_seed_tuning_workspace_runs_its_job_to_success(
    operator: Running,
    kclient: Client,
    crds: Cluster,
    namespace: str,
    registry: dict[str, str],
    tmp_path: Path,
) -> None:
    push_secret(crds, namespace, registry, "local-registry")
    manifest = tmp_path / "ws.yaml"
    manifest.write_text(seed_with(registry, "local-registry"))
    async with gpu_nodes(kclient, 1, {"app": "phi-3-adapter"}) as nodes:
        crds.kubectl("apply", "-n", namespace, "-f", str(manifest))
        job = await wait_for(lambda: the_job(kclient, namespace), "the tuning Job")
        assert job["metadata"]["name"] == WS
        pod = job["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["initContainers"]] == ["data-downloader"]
        assert [c["name"] for c in pod["containers"]] == [WS, PUSHER]
        trainer = pod["containers"][0]
        assert {m["mountPath"] for m in trainer["volumeMounts"]} == {
            "/dev/shm",
            "/mnt/config",
            "/mnt/data",
            "/mnt/results",
        }
        assert trainer["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert f"{registry['REGISTRY_HOST']}/adapters/phi-3:0.0.1" in pod["containers"][1]["command"]
        assert pod["imagePullSecrets"] == [{"name": "local-registry"}]

        ws = await wait_condition(kclient, namespace, WS, names.WORKSPACE_SUCCEEDED, "True", timeout=180)
        assert ws["status"]["state"] == names.STATE_SUCCEEDED
        assert cond(ws, names.JOB_STARTED)["status"] == "True"
        assert cond(ws, names.RESOURCE_READY)["status"] == "True"
        assert ws["status"]["workerNodes"] == nodes
        row = table(crds.kubectl("get", "workspace", WS, "-n", namespace, "-o", "wide").stdout)[0]
        assert (
            row["JOBSTARTED"] == "True"
            and row["WORKSPACESUCCEEDED"] == "True"
            and row["STATE"] == "Succeeded"
        )
        # the default table (the seed's columns) says "done" too: WORKSPACEREADY True
        plain = table(crds.kubectl("get", "workspace", WS, "-n", namespace).stdout)[0]
        assert plain["RESOURCEREADY"] == "True" and plain["WORKSPACEREADY"] == "True", plain
        assert cond(ws, names.WORKSPACE_READY)["reason"] == cond(ws, names.WORKSPACE_SUCCEEDED)["reason"]
        cm = crds.kubectl("get", "configmap", f"{WS}-tuning-config", "-n", namespace, "-o", "name").stdout
        assert cm.strip() == f"configmap/{WS}-tuning-config"

        # A controller restart reads the finished Job; it never reruns it.
        uid = job["metadata"]["uid"]
        await operator.restart()
        await wait_for(lambda: _reconciled_once_more(operator), "a reconcile after the restart")
        after = await the_job(kclient, namespace)
        assert after is not None and after["metadata"]["uid"] == uid
        assert len(await kclient.list(JOB, namespace, cached=False)) == 1
        ws = await get_ws(kclient, namespace, WS)
        assert ws is not None and ws["status"]["state"] == names.STATE_SUCCEEDED


async def _reconciled_once_more(running: Running) -> bool:
    assert running.op is not None
    for metric in running.op.manager.metrics.reconcile_total.collect():
        for s in metric.samples:
            if s.name.endswith("_total") and s.labels.get("controller") == "workspace" and s.value >= 1:
                return True
    return False


async def test_failing_job_marks_the_workspace_failed_with_its_reason(
    operator: Running,
    kclient: Client,
    crds: Cluster,
    namespace: str,
    registry: dict[str, str],
    tmp_path: Path,
) -> None:
    # A tuning image that cannot be pulled (kwok's kubelet reports ImagePullBackOff for the reserved
    # .invalid domain) and a deadline: the Job controller fails the Job with DeadlineExceeded.
    assert operator.op is not None
    operator.op.workspace.tuning.options = TuningJobOptions(
        image="registry.invalid/kaito/tuning:0", active_deadline_seconds=20
    )
    push_secret(crds, namespace, registry, "local-registry")
    manifest = tmp_path / "ws.yaml"
    manifest.write_text(seed_with(registry, "local-registry"))
    async with gpu_nodes(kclient, 1, {"app": "phi-3-adapter"}):
        crds.kubectl("apply", "-n", namespace, "-f", str(manifest))
        ws = await wait_condition(
            kclient, namespace, WS, names.WORKSPACE_SUCCEEDED, "False", reason="DeadlineExceeded", timeout=180
        )
        assert ws["status"]["state"] == names.STATE_FAILED
        assert cond(ws, names.JOB_STARTED)["status"] == "True"
        assert (
            "tuning Job workspace-phi-3-mini failed (DeadlineExceeded)"
            in cond(ws, names.WORKSPACE_SUCCEEDED)["message"]
        )
