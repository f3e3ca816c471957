"""Shared pytest set-up. kaito.envtest's fixtures (kube_cluster, kube_client, namespace, api_client)
come from its pytest11 entry point, as in any suite that installs kaito; pyproject.toml asks the
session cluster for the controller-manager, scheduler and kwok."""
