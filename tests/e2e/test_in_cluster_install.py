"""kaito installed and used the way users do it, on any cluster (issue 19 items 3 and 5).

One story, in order: the controller and curl images built here (no Docker needed) and pushed to
a registry the cluster pulls from; ``helm install`` of charts/kaito with kaito's own
node-provisioner; two controller replicas and a leader Lease; the admission webhook called by the
apiserver through the chart's Service; the README's Workspace served by a GPU node that the
in-cluster node-provisioner made (kwok fakes the machine), WORKSPACEREADY; a tuning Workspace whose
Job runs the chart's tuning image; a pod calling the controller's Service by ClusterIP; ``helm
upgrade`` to a new image tag (rolling replicas, matching inference servers, no second GPU node);
leader failover; ``helm uninstall`` leaving nothing behind.

The cluster is ``tests/e2e/conftest.py``'s: the local control plane with a real kubelet node by
default, or any cluster named by ``KAITO_E2E_KUBECONFIG`` (``hack/kind-e2e.sh`` runs this module
on kind). The seed's ``/chat`` answered by vLLM through the Service needs kaito's 7 GB CPU
inference image and runs in ``make e2e-real`` (tests/e2e_real), not here.

Costs on the local cluster: the controller image builds in about 100 s cold (0.1 s when its
inputs are unchanged) and curl's in about 30 s; the story itself takes about two minutes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from e2e_cluster import E2ECluster

from kaito.envtest.waiting import eventually_blocking

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "examples" / "inference" / "kaito_workspace_phi_3.yaml"
TUNING = REPO / "examples" / "tuning" / "kaito_workspace_phi_3.yaml"
ADAPTERS = REPO / "examples" / "inference" / "kaito_workspace_phi_3_with_adapters.yaml"
ADAPTER_NAME = "workspace-phi-3-mini-adapter"
NS = "kaito-system"
TUNING_NS = "kaito-e2e-tuning"
NAME = "workspace-phi-3-mini"
TAG, UPGRADE_TAG = "e2e", "e2e-2"
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 120.0) -> T:
    return eventually_blocking(probe, what, timeout=timeout, interval=0.5)  # type: ignore[return-value]


class Release:
    """The chart installed on the e2e cluster, and what the story learns along the way."""

    def __init__(self, cluster: E2ECluster) -> None:
        self.c = cluster
        self.installed = False
        self.claims: set[str] = set()
        self.leader = ""
        self.timings: dict[str, float] = {}

    def ready_pods(self, component: str, want: int, tag: str) -> list[dict[str, Any]] | None:
        pods = self.c.json("get", "pods", "-n", NS, "-l", f"app.kubernetes.io/component={component}")["items"]
        ready = [
            p
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and p["spec"]["containers"][0]["image"].endswith(f":{tag}")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        return ready if len(ready) == want and len(pods) == want else None

    def holder(self, pods: list[dict[str, Any]]) -> str | None:
        """The controller pod holding the workspace controller's Lease, if one of ``pods`` does."""
        names = {p["metadata"]["name"] for p in pods}
        for lease in self.c.json("get", "leases", "-n", NS)["items"]:
            held = lease["spec"].get("holderIdentity") or ""
            pod = held.split("_")[0]
            if lease["metadata"]["name"] == "kaito-workspace-controller" and pod in names:
                return pod
        return None

    def workspace_ready(self, namespace: str = "default", name: str = NAME) -> dict[str, Any] | None:
        ws = self.c.json("get", "workspace", name, "-n", namespace)
        conds = {c["type"]: c["status"] for c in (ws.get("status") or {}).get("conditions") or []}
        return ws if conds.get("WorkspaceReady") == "True" else None

    def claims_for(self, name: str, namespace: str = "default") -> set[str]:
        owner = {"kaito.sh/workspace": name, "kaito.sh/workspacenamespace": namespace}
        return {
            c["metadata"]["name"]
            for c in self.c.json("get", "nodeclaims.karpenter.sh")["items"]
            if owner.items() <= (c["metadata"].get("labels") or {}).items()
        }

    def refuses_bad_workspace(self) -> str | None:
        bad = yaml.safe_load(SEED.read_text())
        bad["metadata"] = {"name": "bad", "namespace": "default"}
        bad["resource"]["instanceType"] = "Standard_NOPE"
        got = self.c.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
        # Only kaito's webhook knows SKUs (the CRD's schema cannot): this answer is the webhook's.
        if got.returncode != 0 and "is not a known GPU SKU" in got.stderr:
            return got.stderr
        if got.returncode == 0:
            self.c.kubectl("delete", "workspace", "bad", "-n", "default", "--wait=false", check=False)
        return None

    def run_pod(self, name: str, image: str, *args: str) -> str:
        """Run a pod to completion and return its log. (Not ``kubectl run -i --rm``: when the
        container ends before kubectl attaches, its output can be lost, and a test must not
        depend on that race.)"""
        # no toleration of the GPU taint: it runs where a user's pod would, not on kwok's fakes
        self.c.kubectl("run", name, "--restart=Never", f"--image={image}", "--", *args)
        try:

            def finished() -> str | None:
                phase = self.c.json("get", "pod", name)["status"].get("phase")
                return phase if phase in ("Succeeded", "Failed") else None

            phase = wait_for(finished, f"pod {name} to finish", 240)
            log = self.c.kubectl("logs", name).stdout  # through the kubelet
            assert phase == "Succeeded", f"pod {name} {phase}: {log[-2000:]}"
            return log
        finally:
            self.c.kubectl("delete", "pod", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def release(e2e_cluster: E2ECluster) -> Iterator[Release]:
    rel = Release(e2e_cluster)
    yield rel
    if rel.installed:  # a failed step: leave the cluster as the suite found it
        for ns, name in (("default", NAME), ("default", ADAPTER_NAME), (TUNING_NS, NAME)):
            e2e_cluster.kubectl(
                "delete", "workspace", name, "-n", ns, "--ignore-not-found", "--timeout=120s", check=False
            )
        e2e_cluster.helm("uninstall", "kaito", "-n", NS, "--wait", "--timeout", "180s", check=False)
    e2e_cluster.kubectl("delete", "namespace", TUNING_NS, "--ignore-not-found", "--wait=false", check=False)


def install_args(c: E2ECluster, tag: str) -> list[str]:
    return [
        str(REPO / "charts" / "kaito"), "-n", NS,
        "--set", f"image.repository={c.image('controller', tag)}",
        "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Always",
        # kaito's own node-provisioner, in cluster; on kwok's cloud its GPU nodes are kwok's fakes
        "--set", "nodeProvisioner=gpu-provisioner",
        "--set", "nodeProvisionerController.enabled=true",
        "--set", "nodeProvisionerController.cloud=kwok",
    ]  # fmt: skip


def test_helm_install_runs_the_operator_in_cluster(release: Release) -> None:
    c = release.c
    args = install_args(c, TAG)  # builds and pushes the controller image first
    started = time.monotonic()
    c.helm("install", "kaito", *args, "--create-namespace")
    release.installed = True
    pods = wait_for(lambda: release.ready_pods("controller", 2, TAG), "both controller replicas Ready", 240)
    release.timings["install_to_ready_s"] = round(time.monotonic() - started, 1)
    wait_for(lambda: release.ready_pods("node-provisioner", 1, TAG), "the node-provisioner Ready", 240)
    if c.node is not None:
        assert {p["spec"]["nodeName"] for p in pods} == {c.node.name}
    # pulled from the registry by the node's container runtime, not preloaded
    assert all(
        s["imageID"].startswith(c.pull_registry) for p in pods for s in p["status"]["containerStatuses"]
    )
    release.leader = wait_for(lambda: release.holder(pods), "a controller replica holding the Lease", 120)
    log = c.kubectl("logs", "-n", NS, release.leader).stdout  # through the kubelet
    assert "became leader" in log, log[-2000:]


def test_the_webhook_is_called_through_the_charts_service(release: Release) -> None:
    message = wait_for(release.refuses_bad_workspace, "the in-cluster webhook refusing a bad Workspace")
    assert "resource.instanceType" in message, message


def test_the_readmes_workspace_becomes_ready_on_a_node_the_operator_provisioned(release: Release) -> None:
    c = release.c
    assert not release.claims_for(NAME)
    started = time.monotonic()
    c.kubectl("apply", "-n", "default", "-f", str(SEED))
    ws = wait_for(release.workspace_ready, "WORKSPACEREADY for the README's Workspace", 300)
    release.timings["seed_apply_to_ready_s"] = round(time.monotonic() - started, 1)
    assert ws["metadata"].get("finalizers"), ws["metadata"]
    release.claims = release.claims_for(NAME)
    assert len(release.claims) == 1, release.claims
    claim = c.json("get", "nodeclaims.karpenter.sh", next(iter(release.claims)))
    node = c.json("get", "node", claim["status"]["nodeName"])
    assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"
    assert node["metadata"]["labels"]["apps"] == "phi-3"
    sts = c.json("get", "statefulset", NAME, "-n", "default")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    # the chart's default inference image: beside the controller's, with its tag
    assert container["image"] == f"{c.pull_registry}/kaito/inference:{TAG}"
    table = c.kubectl("get", "workspace", NAME, "-n", "default").stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "WORKSPACEREADY",
        "AGE",
    ]
    assert table[1].split()[:5] == [NAME, "Standard_NC6s_v3", "True", "True", "True"], table
    svc = c.kubectl("get", "svc", NAME, "-n", "default").stdout
    assert "80/TCP" in svc, svc


def test_a_tuning_workspace_runs_the_charts_tuning_image(release: Release) -> None:
    c = release.c
    c.kubectl("create", "namespace", TUNING_NS)
    c.kubectl("apply", "-n", TUNING_NS, "-f", str(TUNING))

    def job() -> dict[str, Any] | None:
        jobs = c.json("get", "jobs", "-n", TUNING_NS, "-l", f"kaito.sh/workspace={NAME}")["items"]
        return jobs[0] if jobs else None

    found = wait_for(job, "the tuning Job", 240)
    images = [k["image"] for k in found["spec"]["template"]["spec"]["containers"]]
    assert f"{c.pull_registry}/kaito/tuning:{TAG}" in images, images
    # its own GPU node, apart from the inference Workspace of the same name in another namespace
    assert len(release.claims_for(NAME, TUNING_NS)) == 1


def test_the_readmes_adapter_workspace_loads_its_adapter_image(release: Release) -> None:
    """The README's second Workspace: an adapter image copied in by an init container before the
    server starts (kwok fakes the pod, so the image itself is never pulled here)."""
    c = release.c
    c.kubectl("apply", "-n", "default", "-f", str(ADAPTERS))
    wait_for(lambda: release.workspace_ready("default", ADAPTER_NAME), "the adapter Workspace Ready", 300)
    spec = c.json("get", "statefulset", ADAPTER_NAME, "-n", "default")["spec"]["template"]["spec"]
    inits = {i["name"]: i["image"] for i in spec.get("initContainers") or []}
    assert inits.get("adapter-phi-3-adapter") == "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1", inits
    server = spec["containers"][0]
    assert any(m["mountPath"] == "/mnt/adapter" for m in server["volumeMounts"]), server["volumeMounts"]
    assert len(release.claims_for(ADAPTER_NAME)) == 1


def test_a_pod_reaches_the_controllers_service_by_cluster_ip(release: Release) -> None:
    c = release.c
    curl = c.image("curl", TAG) + f":{TAG}"
    ip = c.json("get", "svc", "kaito-controller-metrics", "-n", NS)["spec"]["clusterIP"]
    started = time.monotonic()
    out = release.run_pod("e2e-curl", curl, "-sS", "--max-time", "20", f"http://{ip}:8080/metrics")
    release.timings["curl_pod_s"] = round(time.monotonic() - started, 1)
    # the controller's own series: kaito's reconciles of the README's Workspace were counted
    assert 'controller_runtime_reconcile_total{controller="workspace"' in out, out[-2000:]


def test_helm_upgrade_rolls_controller_and_servers_without_a_second_gpu_node(
    release: Release,
) -> None:
    c = release.c
    started = time.monotonic()
    c.helm("upgrade", "kaito", *install_args(c, UPGRADE_TAG), "--wait", "--timeout", "300s")
    pods = wait_for(
        lambda: release.ready_pods("controller", 2, UPGRADE_TAG), "both replicas on the new tag", 300
    )
    wait_for(
        lambda: release.ready_pods("node-provisioner", 1, UPGRADE_TAG), "node-provisioner on the new tag", 300
    )
    release.timings["upgrade_s"] = round(time.monotonic() - started, 1)
    release.leader = wait_for(lambda: release.holder(pods), "a new-tag replica holding the Lease", 180)

    def rolled() -> dict[str, Any] | None:
        sts = c.json("get", "statefulset", NAME, "-n", "default")
        image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
        return sts if image.endswith(f"/kaito/inference:{UPGRADE_TAG}") else None

    wait_for(rolled, "the inference StatefulSet on the upgraded controller's inference image", 180)
    wait_for(release.workspace_ready, "the README's Workspace Ready again after the upgrade", 300)
    # the same GPU node serves it: an upgrade must not provision (and pay for) another
    assert release.claims_for(NAME) == release.claims
    wait_for(release.refuses_bad_workspace, "the upgraded webhook refusing a bad Workspace")


def test_the_lease_moves_when_the_leader_goes(release: Release) -> None:
    c = release.c
    old = release.leader
    c.kubectl("delete", "pod", "-n", NS, old, "--wait=false")

    def new_leader() -> str | None:
        pods = c.json("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=controller")["items"]
        holder = release.holder(pods)
        return holder if holder and holder != old else None

    release.leader = wait_for(new_leader, "a new leader", 180)


def test_uninstall_leaves_nothing_behind(release: Release) -> None:
    c = release.c
    nodes = {c.json("get", "nodeclaims.karpenter.sh", n)["status"]["nodeName"] for n in release.claims}
    for ns, name in (("default", NAME), ("default", ADAPTER_NAME), (TUNING_NS, NAME)):
        c.kubectl("delete", "workspace", name, "-n", ns, "--timeout=180s")
    # the GPU nodes go with their Workspaces, before the operator does
    wait_for(lambda: not c.json("get", "nodeclaims.karpenter.sh")["items"] or None, "no NodeClaim left", 180)
    left = {n["metadata"]["name"] for n in c.json("get", "nodes")["items"]}
    assert not nodes & left, nodes & left
    c.helm("uninstall", "kaito", "-n", NS, "--wait", "--timeout", "180s")
    release.installed = False

    def nothing_left() -> bool:
        pods = c.json("get", "pods", "-n", NS)["items"]
        hooks = [
            h["metadata"]["name"]
            for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
            for h in c.json("get", kind)["items"]
            if "kaito" in h["metadata"]["name"]
        ]
        rbac = [
            r["metadata"]["name"]
            for kind in ("clusterroles", "clusterrolebindings")
            for r in c.json("get", kind)["items"]
            if r["metadata"]["name"].startswith("kaito")
        ]
        return not pods and not hooks and not rbac

    wait_for(nothing_left, "no kaito pod, webhook configuration, ClusterRole or binding after uninstall", 180)
    print(f"e2e timings: {json.dumps(release.timings)}")
