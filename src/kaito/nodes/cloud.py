"""The CloudProvider protocol: how the node-provisioner controller turns a NodeClaim into a node.

One instance per NodeClaim. ``create`` must be idempotent by claim name (the controller may crash
between the cloud call and its status write and call again), and ``list`` must return every
instance the provider made, so that instances whose claim is gone can be garbage-collected.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol


class InstanceState(enum.StrEnum):
    CREATING = "Creating"
    RUNNING = "Running"
    DELETING = "Deleting"
    FAILED = "Failed"


class CloudError(Exception):
    """A refusal from the cloud: ``code`` is the cloud's own (``QuotaExceeded``, ...).

    ``retryable`` separates capacity blips (429, 5xx) from answers that will not change by
    asking again (quota, an unknown SKU); the controller backs off on the first and records a
    condition and an event on the second.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


@dataclass
class Instance:
    """One cloud machine (or agent pool) as the provider reports it."""

    #: Provider-side name, unique per claim (an AKS agent pool name, a kwok node name).
    name: str
    #: The NodeClaim this instance was made for (a tag on the cloud object).
    nodeclaim: str
    instance_type: str
    state: InstanceState
    #: ``spec.providerID`` of the Node it becomes; empty until known.
    provider_id: str = ""
    #: Seconds since the epoch when the provider created it; GC's grace period counts from it.
    created_at: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    #: The failure, when ``state`` is FAILED.
    error: CloudError | None = None
    capacity: dict[str, str] = field(default_factory=dict)


class CloudProvider(Protocol):
    """A cloud that makes one GPU node per NodeClaim."""

    name: str

    async def create(self, nodeclaim: dict[str, Any]) -> Instance:
        """Create (or find) the instance for ``nodeclaim``; raises CloudError on refusal."""
        ...

    async def get(self, nodeclaim_name: str) -> Instance | None:
        """The instance made for that claim, or None."""
        ...

    async def list(self) -> list[Instance]:
        """Every instance this provider made (for garbage collection)."""
        ...

    async def delete(self, instance: Instance) -> bool:
        """Start deleting; True once the instance is gone."""
        ...
