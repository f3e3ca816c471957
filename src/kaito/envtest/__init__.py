"""The Python envtest: a real etcd + kube-apiserver (and optionally controller-manager, scheduler
and kwok) for tests, benchmarks and local development.

Public on purpose: operators built on :mod:`kaito.runtime` test against the same control plane
kaito does. Binaries are found through ``KUBEBUILDER_ASSETS``, then kaito's cache, else built
from their Go modules (see :mod:`kaito.envtest.assets`).

pytest users add ``pytest_plugins = ["kaito.envtest.pytest_plugin"]`` to a conftest.py
to get the ``kube_cluster``, ``api_client`` and ``namespace`` fixtures.
"""

from kaito.envtest.assets import AssetsError, ensure_assets, find_assets
from kaito.envtest.cluster import Cluster, ClusterError, ClusterOptions
from kaito.envtest.waiting import eventually

__all__ = [
    "AssetsError",
    "Cluster",
    "ClusterError",
    "ClusterOptions",
    "ensure_assets",
    "eventually",
    "find_assets",
]
