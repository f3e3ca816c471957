"""The e2e suite's cluster fixture; what it can be is described in ``e2e_cluster``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cluster import REPO, E2ECluster, start_registry

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


@pytest.fixture(scope="session")
def e2e_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    helm = str(ensure_helm())
    given = os.environ.get("KAITO_E2E_KUBECONFIG")
    if given:
        push = os.environ.get("KAITO_E2E_REGISTRY", "")
        assert push, "KAITO_E2E_KUBECONFIG needs KAITO_E2E_REGISTRY (host:port the images are pushed to)"
        yield E2ECluster(
            kubeconfig=Path(given),
            kubectl_bin=os.environ.get("KUBECTL", "kubectl"),
            helm_bin=helm,
            push_registry=push,
            pull_registry=os.environ.get("KAITO_E2E_REGISTRY_PULL") or push,
            registry_ca=os.environ.get("KAITO_E2E_REGISTRY_CA") or None,
            registry_insecure=os.environ.get("KAITO_E2E_REGISTRY_INSECURE") == "1",
        )
        return
    missing = missing_requirements()
    assert not missing, "a real node needs: " + "; ".join(missing)
    work = tmp_path_factory.mktemp("e2e")
    network = NodeNetwork.create()
    registry = work / "registry"
    made: E2ECluster | None = None
    try:
        with (
            Cluster(cluster_options(network, ClusterOptions(kwok=True))) as cluster,
            RealNode(cluster, network, RealNodeOptions(name="real-e2e")) as node,
        ):
            reg = start_registry(registry, network.host_ip)
            node.add_registry(reg["REGISTRY_HOST"], reg["REGISTRY_CA"])
            made = E2ECluster(
                kubeconfig=cluster.kubeconfig,
                kubectl_bin=str(cluster.assets / "kubectl"),
                helm_bin=helm,
                push_registry=reg["REGISTRY_HOST"],
                pull_registry=reg["REGISTRY_HOST"],
                registry_ca=reg["REGISTRY_CA"],
                node=node,
            )
            yield made
    finally:
        if made is not None:
            made.untag_pushed()
        subprocess.run(["bash", str(REPO / "hack" / "registry.sh"), "stop", str(registry)], timeout=60)
        network.delete()
