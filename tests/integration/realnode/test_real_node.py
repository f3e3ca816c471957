"""A real node (issue 19): containerd, kubelet, kube-proxy and the CNI bridge in a network
namespace of their own, joined to the local control plane (``kaito.envtest.realnode``).

Nothing is faked: pods are containers run by runc from OCI images, a Service's ClusterIP is
kube-proxy's iptables rules, ``kubectl logs`` goes through the apiserver to the kubelet. The
workload is ``hello`` (a static HTTP peer built here), so no image download is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from kaito.envtest import Cluster
from kaito.envtest.cluster import ClusterOptions
from kaito.envtest.realnode import (
    HELLO_IMAGE,
    KUBELET_SYSCTLS,
    NodeNetwork,
    RealNode,
    RealNodeOptions,
    cluster_options,
    missing_requirements,
)
from kaito.envtest.waiting import eventually_blocking

pytestmark = [pytest.mark.cluster]

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 90.0) -> T:
    return eventually_blocking(probe, what, timeout=timeout)  # type: ignore[return-value]


def _sysctls() -> dict[str, str]:
    return {
        k: Path(f"/proc/sys/{k}").read_text().strip()
        for k in KUBELET_SYSCTLS
        if Path(f"/proc/sys/{k}").exists()
    }


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Cluster, RealNode, NodeNetwork]]:
    missing = missing_requirements()
    # Root and the node's packages are the project's own set-up (make test installs them); a
    # machine without them fails here with what to install, it does not skip.
    assert not missing, "a real node needs: " + "; ".join(missing)
    network = NodeNetwork.create()
    try:
        with (
            Cluster(cluster_options(network, ClusterOptions())) as cluster,
            RealNode(
                cluster, network, RealNodeOptions(name="real-0", labels={"kaito.sh/test": "real"})
            ) as real,
        ):
            yield cluster, real, network
    finally:
        network.delete()


def kubectl(cluster: Cluster, *args: str, input: str | None = None) -> str:
    return cluster.kubectl(*args, input=input).stdout


def test_pods_answer_on_their_services_clusterip_from_another_pod(
    node: tuple[Cluster, RealNode, NodeNetwork],
) -> None:
    """Two replicas behind a ClusterIP Service; a third pod GETs the ClusterIP until both
    replicas have answered (kube-proxy balances over both endpoints); ``kubectl logs`` reads the
    answers through the kubelet."""
    cluster, real, _ = node
    ns = "svc-test"
    kubectl(cluster, "create", "namespace", ns)
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "hello", "namespace": ns},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": {"app": "hello"}},
                "spec": {
                    "containers": [
                        {
                            "name": "hello",
                            "image": HELLO_IMAGE,
                            "imagePullPolicy": "Never",
                            "args": ["serve", "8080"],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "hello", "namespace": ns},
        "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kubectl(
        cluster,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [manifest, service]}),
    )

    def ready_pods() -> list[str] | None:
        pods = json.loads(kubectl(cluster, "get", "pods", "-n", ns, "-l", "app=hello", "-o", "json"))["items"]
        ready = [
            p["metadata"]["name"]
            for p in pods
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        return ready if len(ready) == 2 else None

    replicas = wait_for(ready_pods, "both hello replicas Ready on the real node", timeout=120)
    pods = json.loads(kubectl(cluster, "get", "pods", "-n", ns, "-o", "json"))["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {real.name}
    assert all(p["status"]["podIP"].startswith("10.244.") for p in pods)
    cluster_ip = kubectl(cluster, "get", "svc", "hello", "-n", ns, "-o", "jsonpath={.spec.clusterIP}")

    answered: set[str] = set()
    for i in range(12):
        name = f"client-{i}"
        kubectl(
            cluster,
            "run",
            name,
            "-n",
            ns,
            "--restart=Never",
            f"--image={HELLO_IMAGE}",
            "--image-pull-policy=Never",
            "--",
            "get",
            cluster_ip,
            "80",
            "/",
        )

        def done(name: str = name) -> str | None:
            phase = kubectl(cluster, "get", "pod", name, "-n", ns, "-o", "jsonpath={.status.phase}")
            return phase if phase in ("Succeeded", "Failed") else None

        phase = wait_for(done, f"client pod {name} finished", timeout=60)
        log = kubectl(cluster, "logs", name, "-n", ns)
        assert phase == "Succeeded", f"GET http://{cluster_ip}/ from a pod failed: {log}"
        assert log.startswith("hello from "), log
        answered.add(log.split()[-1])
        if answered == set(replicas):
            break
    assert answered == set(replicas), f"only {answered} of {replicas} answered on the ClusterIP"


def test_pods_reach_the_apiserver_through_the_kubernetes_service(
    node: tuple[Cluster, RealNode, NodeNetwork],
) -> None:
    """The in-cluster path an operator Deployment takes: the ``kubernetes`` Service's ClusterIP,
    DNAT-ed to the apiserver on the host's end of the node's link."""
    cluster, _, network = node
    endpoints = kubectl(
        cluster, "get", "endpoints", "kubernetes", "-o", "jsonpath={.subsets[0].addresses[0].ip}"
    )
    assert endpoints == network.host_ip
    kubectl(
        cluster,
        "run",
        "apiclient",
        "--restart=Never",
        f"--image={HELLO_IMAGE}",
        "--image-pull-policy=Never",
        "--",
        "get",
        "10.96.0.1",
        "443",
        "/",
    )

    def finished() -> str | None:
        phase = kubectl(cluster, "get", "pod", "apiclient", "-o", "jsonpath={.status.phase}")
        return phase if phase in ("Succeeded", "Failed") else None

    wait_for(finished, "the apiserver client pod finished", timeout=60)
    # hello speaks plain HTTP to a TLS port: the apiserver answers "Client sent an HTTP request
    # to an HTTPS server" with 400, which proves the connection went through.
    log = kubectl(cluster, "logs", "apiclient")
    assert "HTTPS server" in log, log


def test_the_kubelet_leaves_the_hosts_kernel_tunables_alone(
    node: tuple[Cluster, RealNode, NodeNetwork],
) -> None:
    """The kubelet runs (its node is Ready, its pods ran above) and the host's tunables are what
    they were before any node started, although the kubelet wants others for most of them."""
    assert _sysctls() == BEFORE
    assert any(BEFORE[k] != v for k, v in KUBELET_SYSCTLS.items() if k in BEFORE), "nothing to protect"


#: Read at import, before the module's node starts.
BEFORE = _sysctls()


def test_stop_leaves_nothing_behind() -> None:
    """A node of its own, with a pod running, stopped: no process, mount, network namespace,
    link or cgroup of it is left."""
    network = NodeNetwork.create()
    try:
        with Cluster(cluster_options(network, ClusterOptions())) as cluster:
            real = RealNode(cluster, network, RealNodeOptions(name="real-stop"))
            real.start()
            try:
                cluster.kubectl(
                    "run",
                    "sleeper",
                    "--restart=Never",
                    f"--image={HELLO_IMAGE}",
                    "--image-pull-policy=Never",
                    "--",
                    "serve",
                    "8080",
                )
                wait_for(
                    lambda: (
                        cluster.kubectl("get", "pod", "sleeper", "-o", "jsonpath={.status.phase}").stdout
                        == "Running"
                    ),
                    "the pod running",
                )
                workdir, cgroup, short = real.workdir, real.cgroup_root, real.short_dir
                shim_pids = _shims(workdir)
                assert shim_pids, "no containerd shim ran the pod"
            finally:
                real.stop()
    finally:
        network.delete()
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    assert not [line for line in mounts if str(workdir) in line or str(short) in line]
    assert not short.exists()
    assert not _shims(workdir), "a containerd shim outlived the node"
    assert not network.netns_path.exists()
    assert network.host_link not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert not Path(f"/sys/fs/cgroup/memory{cgroup}").exists()
    assert not workdir.exists()


def _shims(workdir: Path) -> list[int]:
    """containerd shims working in a bundle under ``workdir``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if b"containerd-shim" in (proc / "cmdline").read_bytes() and str(workdir) in os.readlink(
                proc / "cwd"
            ):
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found
