"""One audited control plane for the install tests (the session's ``kube_cluster`` has no audit
log): controller-manager (garbage collection), scheduler and kwok, so the seed Workspace really
gets Pods on a kwok GPU node, and OwnerReferencesPermissionEnforcement, so the
``workspaces/finalizers`` grant is exercised as on hardened clusters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from deploy_helpers import AUDIT_POLICY

from kaito.envtest import Cluster, ClusterOptions


@pytest.fixture(scope="session")
def audited_cluster() -> Iterator[Cluster]:
    cluster = Cluster(
        ClusterOptions(
            controller_manager=True,
            scheduler=True,
            kwok=True,
            audit_policy=AUDIT_POLICY,
            extra_apiserver_args=["--enable-admission-plugins=OwnerReferencesPermissionEnforcement"],
        )
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
