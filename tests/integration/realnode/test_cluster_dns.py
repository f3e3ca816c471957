"""Cluster DNS on the real node (issue 19): CoreDNS, built from its Go module, runs as
``kube-system/coredns`` behind the ``kube-dns`` Service, and the kubelet points pods at it.

The clients are ``hello`` pods: ``hello resolve NAME`` and ``hello get NAME PORT PATH`` look names
up with the C resolver, which reads the ``resolv.conf`` the kubelet wrote (nameserver, search
list, ``ndots``), so a name that resolves here resolves for any pod's program.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaito.envtest import Cluster
from kaito.envtest.assets import ALL_BINARIES, NODE_BINARIES, ensure_assets
from kaito.envtest.cluster import SERVICE_IP, ClusterOptions
from kaito.envtest.clusterdns import NAME, NAMESPACE, SERVICE
from kaito.envtest.realnode import (
    HELLO_IMAGE,
    NodeNetwork,
    RealNode,
    RealNodeOptions,
    cluster_options,
    missing_requirements,
)
from kaito.envtest.waiting import eventually_blocking

pytestmark = [pytest.mark.cluster]

DNS_IP = "10.96.0.10"


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Cluster, RealNode]]:
    missing = missing_requirements()
    assert not missing, "a real node needs: " + "; ".join(missing)
    network = NodeNetwork.create()
    try:
        with (
            Cluster(cluster_options(network, ClusterOptions())) as cluster,
            # Tainted as an adopted GPU node is: CoreDNS must run there all the same.
            RealNode(
                cluster, network, RealNodeOptions(name="real-dns", taints=["sku=gpu:NoSchedule"])
            ) as real,
        ):
            yield cluster, real
    finally:
        network.delete()


def kubectl(cluster: Cluster, *args: str, input: str | None = None) -> str:
    return cluster.kubectl(*args, input=input).stdout


def run_pod(cluster: Cluster, ns: str, name: str, *args: str) -> tuple[str, str]:
    """Run ``hello ARGS`` as a pod in ``ns`` to completion; its phase and its log."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
            "containers": [
                {"name": "hello", "image": HELLO_IMAGE, "imagePullPolicy": "Never", "args": list(args)}
            ],
        },
    }
    kubectl(cluster, "apply", "-f", "-", input=json.dumps(pod))

    def finished() -> str:
        phase = kubectl(cluster, "get", "pod", name, "-n", ns, "-o", "jsonpath={.status.phase}")
        return phase if phase in ("Succeeded", "Failed") else ""

    phase = eventually_blocking(finished, f"pod {ns}/{name} finished", timeout=90)
    log = cluster.kubectl("logs", name, "-n", ns, check=False)
    return phase, log.stdout + log.stderr


def test_coredns_runs_ready_on_the_tainted_node_behind_kube_dns(node: tuple[Cluster, RealNode]) -> None:
    """start() waited for CoreDNS: it is Ready, on the real node despite its taint, behind the
    ``kube-dns`` Service at the Service range's tenth address, and the kubelet hands that out."""
    cluster, real = node
    assert (real.dns_ip, real.dns_error) == (DNS_IP, "")
    assert real.dns_ready()
    pods = json.loads(
        kubectl(cluster, "get", "pods", "-n", NAMESPACE, "-l", "k8s-app=kube-dns", "-o", "json")
    )["items"]
    assert [p["spec"]["nodeName"] for p in pods] == [real.name]
    assert (
        kubectl(cluster, "get", "svc", SERVICE, "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}") == DNS_IP
    )
    config = json.loads((real.workdir / "kubelet-config.json").read_text())
    assert (config["clusterDNS"], config["clusterDomain"]) == ([DNS_IP], "cluster.local")


def test_a_pod_resolves_the_apiservers_service_name(node: tuple[Cluster, RealNode]) -> None:
    cluster, _ = node
    phase, log = run_pod(
        cluster, "default", "resolve-kubernetes", "resolve", "kubernetes.default.svc.cluster.local"
    )
    assert (phase, log.split()) == ("Succeeded", [SERVICE_IP]), log
    events = kubectl(
        cluster, "get", "events", "-A", "--field-selector", "reason=MissingClusterDNS", "-o", "name"
    )
    assert not events, f"the kubelet still warns about cluster DNS: {events}"


def test_a_pod_fetches_a_service_in_another_namespace_by_name(node: tuple[Cluster, RealNode]) -> None:
    """``web.dns-server`` from namespace ``dns-client`` (the search list completes it), ``web``
    from inside ``dns-server``: both give the Service's ClusterIP, and a GET by name is answered
    by the Service's pod."""
    cluster, _ = node
    for ns in ("dns-server", "dns-client"):
        kubectl(cluster, "create", "namespace", ns)
    server = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "dns-server", "labels": {"app": "web"}},
        "spec": {
            "tolerations": [{"key": "sku", "operator": "Exists"}],
            "containers": [
                {
                    "name": "hello",
                    "image": HELLO_IMAGE,
                    "imagePullPolicy": "Never",
                    "args": ["serve", "8080"],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "dns-server"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kubectl(
        cluster,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [server, service]}),
    )
    eventually_blocking(
        lambda: (
            kubectl(
                cluster,
                "get",
                "pod",
                "web",
                "-n",
                "dns-server",
                "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            )
            == "True"
        ),
        "the web pod Ready",
        timeout=90,
    )
    cluster_ip = kubectl(cluster, "get", "svc", "web", "-n", "dns-server", "-o", "jsonpath={.spec.clusterIP}")

    phase, log = run_pod(cluster, "dns-client", "resolve-qualified", "resolve", "web.dns-server")
    assert (phase, log.split()) == ("Succeeded", [cluster_ip]), log
    phase, log = run_pod(cluster, "dns-server", "resolve-short", "resolve", "web")
    assert (phase, log.split()) == ("Succeeded", [cluster_ip]), log
    phase, log = run_pod(
        cluster, "dns-client", "get-by-name", "get", "web.dns-server.svc.cluster.local", "80", "/"
    )
    assert (phase, log) == ("Succeeded", "hello from web\n"), log
    phase, log = run_pod(cluster, "dns-client", "get-by-short-name", "get", "web.dns-server", "80", "/")
    assert (phase, log) == ("Succeeded", "hello from web\n"), log


def test_names_outside_the_cluster_fail_at_once(node: tuple[Cluster, RealNode]) -> None:
    """CoreDNS answers only ``cluster.local`` (the node has no route out): another name is
    refused rather than left to time out, and a missing Service is NXDOMAIN."""
    cluster, _ = node
    started = time.monotonic()
    phase, log = run_pod(cluster, "default", "resolve-outside", "resolve", "example.com")
    assert phase == "Failed" and "example.com" in log, log
    phase, log = run_pod(
        cluster, "default", "resolve-missing", "resolve", "no-such-service.default.svc.cluster.local"
    )
    assert phase == "Failed" and "no-such-service" in log, log
    # Two pods' whole lives; a resolver timing out would take 5 s per try and server.
    assert time.monotonic() - started < 60


def test_corednss_service_account_may_only_read_what_it_serves(node: tuple[Cluster, RealNode]) -> None:
    cluster, _ = node
    who = f"--as=system:serviceaccount:{NAMESPACE}:{NAME}"

    def can(verb: str, resource: str) -> str:
        return cluster.kubectl(
            "auth", "can-i", verb, resource, "--all-namespaces", who, check=False
        ).stdout.strip()

    for resource in ("services", "namespaces", "endpointslices.discovery.k8s.io"):
        assert can("watch", resource) == "yes", resource
    for verb, resource in (
        ("list", "pods"),
        ("list", "secrets"),
        ("create", "services"),
        ("update", "configmaps"),
    ):
        assert can(verb, resource) == "no", (verb, resource)


def test_a_node_without_coredns_still_starts_and_says_why_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """KUBEBUILDER_ASSETS without ``coredns`` (a CoreDNS build that failed looks the same): the
    node is Ready, its kubelet has no ``clusterDNS``, there is no ``kube-dns`` Service, and one
    warning names the missing binary."""
    cache = ensure_assets([*ALL_BINARIES, *NODE_BINARIES], build=False)
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in (*ALL_BINARIES, *NODE_BINARIES):
        os.symlink(cache / name, assets / name)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    caplog.set_level(logging.WARNING, logger="kaito.envtest.realnode")
    network = NodeNetwork.create()
    try:
        with (
            Cluster(cluster_options(network, ClusterOptions())) as cluster,
            RealNode(cluster, network, RealNodeOptions(name="real-nodns")) as real,
        ):
            assert real.dns_ip == ""
            assert "coredns" in real.dns_error, real.dns_error
            config = json.loads((real.workdir / "kubelet-config.json").read_text())
            assert "clusterDNS" not in config
            assert cluster.kubectl("get", "svc", SERVICE, "-n", NAMESPACE, check=False).returncode != 0
    finally:
        network.delete()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [real.dns_error], warnings
