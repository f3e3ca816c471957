"""kaito installed the way users install it (issue 19 item 3): its controller image, built here
without Docker, pushed to a registry, pulled by a real kubelet node, and ``helm install`` of
charts/kaito. Nothing runs out of cluster: the controller Deployment reaches the apiserver through
the ``kubernetes`` Service, the apiserver calls the admission webhook through the chart's
Service, two replicas elect a leader through a Lease, and ``helm uninstall`` leaves nothing.

Costs: the controller image builds in about 100 s cold (0.1 s when its inputs are unchanged),
the node pulls it in seconds; the rest is about a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from kaito.envtest import Cluster
from kaito.envtest.cluster import ClusterOptions
from kaito.envtest.helm import ensure_helm
from kaito.envtest.realnode import (
    NodeNetwork,
    RealNode,
    RealNodeOptions,
    cluster_options,
    missing_requirements,
)
from kaito.envtest.waiting import eventually_blocking

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "examples" / "inference" / "kaito_workspace_phi_3.yaml"
NS = "kaito-system"
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 120.0) -> T:
    return eventually_blocking(probe, what, timeout=timeout, interval=0.5)  # type: ignore[return-value]


@dataclass
class Installed:
    cluster: Cluster
    node: RealNode
    helm: str
    image: str
    registry: Path

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, check=check, input=input)

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def helm_run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(self.cluster.kubeconfig))
        proc = subprocess.run([self.helm, *args], capture_output=True, text=True, env=env, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc


def _registry(folder: Path, address: str) -> dict[str, str]:
    env = dict(os.environ, REGISTRY_ADDRESS=address, REGISTRY_AUTH="none")
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "registry.sh"), "start", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    assert not missing_requirements(), "a real node needs: " + "; ".join(missing_requirements())
    helm = str(ensure_helm())
    work = tmp_path_factory.mktemp("incluster")
    network = NodeNetwork.create()
    registry = work / "registry"
    try:
        with (
            Cluster(cluster_options(network, ClusterOptions(kwok=True))) as cluster,
            RealNode(cluster, network, RealNodeOptions(name="real-ctl")) as node,
        ):
            reg = _registry(registry, network.host_ip)
            node.add_registry(reg["REGISTRY_HOST"], reg["REGISTRY_CA"])
            build = subprocess.run(
                ["bash", str(REPO / "hack" / "images.sh"), "controller"],
                cwd=REPO,
                env=dict(
                    os.environ,
                    REGISTRY=f"{reg['REGISTRY_HOST']}/kaito",
                    TAG="e2e",
                    PUSH="1",
                    REGISTRY_CA=reg["REGISTRY_CA"],
                ),
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert build.returncode == 0, build.stderr[-2000:]
            image = f"{reg['REGISTRY_HOST']}/kaito/workspace"
            yield Installed(cluster, node, helm, image, registry)
    finally:
        subprocess.run(["bash", str(REPO / "hack" / "registry.sh"), "stop", str(registry)], timeout=60)
        network.delete()


def _ready_pods(inst: Installed) -> list[dict[str, Any]] | None:
    pods = inst.json("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=controller")["items"]
    ready = [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]
    return ready if len(ready) == 2 else None


def test_helm_install_runs_the_operator_in_cluster_and_uninstall_leaves_nothing(installed: Installed) -> None:
    inst = installed
    started = time.monotonic()
    inst.helm_run(
        "install",
        "kaito",
        str(REPO / "charts" / "kaito"),
        "-n",
        NS,
        "--create-namespace",
        "--set",
        f"image.repository={inst.image}",
        "--set",
        "image.tag=e2e",
        "--set",
        "image.pullPolicy=Always",
    )
    pods = wait_for(lambda: _ready_pods(inst), "both controller replicas Ready on the real node", timeout=240)
    ready_after = time.monotonic() - started
    assert {p["spec"]["nodeName"] for p in pods} == {inst.node.name}
    # The image was pulled from the registry by the node's containerd, not imported.
    assert all(s["imageID"].startswith(inst.image) for p in pods for s in p["status"]["containerStatuses"])

    # Leader election: one of the two holds the Lease.
    def holder() -> str | None:
        leases = inst.json("get", "leases", "-n", NS)["items"]
        held = [lease["spec"].get("holderIdentity") or "" for lease in leases]
        names = {p["metadata"]["name"] for p in pods}
        return next((h for h in held if any(h.startswith(n) for n in names)), None)

    leader = wait_for(holder, "a controller replica holding the leader Lease", timeout=120)

    # The webhook, called by the apiserver through the chart's Service: a bad Workspace is refused
    # with the field named; the seed's Workspace is admitted (caBundle injected by the controller).
    bad = yaml.safe_load(SEED.read_text())
    bad["metadata"] = {"name": "bad", "namespace": "default"}
    bad["resource"]["instanceType"] = "Standard_NOPE"

    def refused() -> str | None:
        got = inst.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
        # Only kaito's webhook knows SKUs (the CRD's schema cannot): this answer is the webhook's.
        if got.returncode != 0 and "is not a known GPU SKU" in got.stderr:
            return got.stderr
        if got.returncode == 0:
            inst.kubectl("delete", "workspace", "bad", "-n", "default", "--wait=false", check=False)
        return None

    message = wait_for(refused, "the in-cluster webhook refusing a bad Workspace", timeout=120)
    assert "resource.instanceType" in message, message
    inst.kubectl("apply", "-n", "default", "-f", str(SEED))

    # The in-cluster leader reconciles it: its finalizer and first status conditions.
    def reconciled() -> dict[str, Any] | None:
        ws = inst.json("get", "workspace", "workspace-phi-3-mini", "-n", "default")
        conds = {c["type"] for c in (ws.get("status") or {}).get("conditions") or []}
        return ws if ws["metadata"].get("finalizers") and "ResourceReady" in conds else None

    # (No controller runs anywhere else: only the in-cluster leader can have written these.)
    wait_for(reconciled, "the seed's Workspace reconciled by the in-cluster controller", timeout=120)
    log = inst.kubectl("logs", "-n", NS, leader.split("_")[0]).stdout  # through the real kubelet
    assert "became leader" in log, log[-2000:]

    # The leader goes away: the other replica takes the Lease.
    inst.kubectl("delete", "pod", "-n", NS, leader.split("_")[0], "--wait=false")
    wait_for(
        lambda: (h := holder()) and not h.startswith(leader.split("_")[0]) and h, "a new leader", timeout=180
    )

    inst.kubectl("delete", "workspace", "workspace-phi-3-mini", "-n", "default", "--timeout=120s")
    inst.helm_run("uninstall", "kaito", "-n", NS, "--wait", "--timeout", "180s")

    def nothing_left() -> bool:
        pods = inst.json("get", "pods", "-n", NS)["items"]
        hooks = [
            h["metadata"]["name"]
            for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
            for h in inst.json("get", kind)["items"]
            if "kaito" in h["metadata"]["name"]
        ]
        roles = [
            r["metadata"]["name"]
            for r in inst.json("get", "clusterroles")["items"]
            if "kaito" in r["metadata"]["name"]
        ]
        return not pods and not hooks and not roles

    wait_for(nothing_left, "no kaito pod, webhook configuration or ClusterRole after uninstall", timeout=180)
    print(f"in-cluster install: both replicas Ready {ready_after:.1f}s after helm install")
