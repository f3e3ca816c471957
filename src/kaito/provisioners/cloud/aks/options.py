"""Settings of the ``aks`` cloud: which AKS cluster's agent pools to manage, and how to reach ARM.

Each field is a ``kaito node-provisioner`` flag (``subscription_id`` -> ``--subscription-id``,
read from the environment variable its ``envvar`` metadata names when not given); its docstring
is that flag's help text. Imports nothing from the Azure SDK, so the CLI can build
and check these without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AksOptions:
    """Where and how the ``aks`` cloud makes one agent pool per NodeClaim."""

    subscription_id: str = field(default="", metadata={"envvar": "AZURE_SUBSCRIPTION_ID"})
    """aks: the Azure subscription of the cluster."""
    resource_group: str = field(default="", metadata={"envvar": "AZURE_RESOURCE_GROUP"})
    """aks: the resource group of the managed cluster."""
    cluster_name: str = field(default="", metadata={"envvar": "AZURE_CLUSTER_NAME"})
    """aks: the managed cluster whose agent pools to manage."""
    arm_endpoint: str = field(default="https://management.azure.com", metadata={"envvar": "ARM_ENDPOINT"})
    """aks: Azure Resource Manager URL (the AKS emulator's in tests)."""
    ca_bundle: str | None = field(default=None, metadata={"envvar": "ARM_CA_BUNDLE"})
    """aks: CA file to verify ARM and the token endpoint with (default: the system's)."""
    polling_interval: float = 5.0
    """aks: seconds between long-running-operation polls when ARM gives no Retry-After."""
    retry_total: int = 4
    """aks: retries of one ARM request (throttling, 5xx) before the SDK gives up."""
    retry_backoff: float = 0.5
    """aks: backoff factor between those retries (s)."""
    os_sku: str = "Ubuntu"
    """aks: OS SKU of the agent pools' nodes."""

    def check(self) -> None:
        """ValueError naming the missing flags (the cluster to manage) before anything starts."""
        missing = [
            flag
            for flag, value in (
                ("--subscription-id", self.subscription_id),
                ("--resource-group", self.resource_group),
                ("--cluster-name", self.cluster_name),
            )
            if not value
        ]
        if missing:
            raise ValueError(
                f"--cloud aks needs {', '.join(missing)} (the AKS cluster whose agent pools to manage)"
            )


__all__ = ["AksOptions"]
