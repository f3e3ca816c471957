"""Shared pytest set-up: the real local control plane fixtures (kube_cluster, api_client, namespace)."""

pytest_plugins = ["kaito.envtest.pytest_plugin"]
