"""The agent pool a NodeClaim becomes: its name, tags and body (one pool of count 1 per claim)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kaito.nodes import claim_instance_type, claim_node_labels, claim_taints

if TYPE_CHECKING:
    from azure.mgmt.containerservice.models import AgentPool

LABEL_AGENTPOOL = "kubernetes.azure.com/agentpool"
#: Tags on every pool kaito makes: its claim (``list`` sees only pools that carry it) and when.
TAG_NODECLAIM = "kaito-nodeclaim"
TAG_CREATED = "kaito-created"
_POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
#: Label prefixes AKS refuses in an agent pool's nodeLabels; the controller sets those on the Node.
_RESERVED = ("kubernetes.io/", "k8s.io/", "kubernetes.azure.com/", "node.kubernetes.io/")


def pool_name(nodeclaim: str) -> str:
    """The claim's name when AKS accepts it (``ws`` + 9 hex does), else a stable hash of it."""
    if _POOL_NAME.match(nodeclaim):
        return nodeclaim
    return "k" + hashlib.sha256(nodeclaim.encode()).hexdigest()[:11]


def agent_pool(claim: dict[str, Any], os_sku: str) -> AgentPool:
    """The pool body for ``claim``: its VM size, labels AKS accepts, its taints, kaito's tags."""
    from azure.mgmt.containerservice.models import (
        AgentPool,
        AgentPoolManagedClusterAgentPoolProfileProperties,
    )

    instance_type = claim_instance_type(claim)
    labels = {k: v for k, v in claim_node_labels(claim).items() if not k.startswith(_RESERVED)}
    labels = {k: v for k, v in labels.items() if not k.startswith("karpenter.azure.com/")}
    taints = [f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in claim_taints(claim)]
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return AgentPool(
        properties=AgentPoolManagedClusterAgentPoolProfileProperties(
            count=1,
            vm_size=instance_type,
            os_type="Linux",
            os_sku=os_sku,
            mode="User",
            node_labels=labels,
            node_taints=taints,
            tags={TAG_NODECLAIM: claim["metadata"]["name"], TAG_CREATED: created},
        )
    )


__all__ = ["LABEL_AGENTPOOL", "TAG_CREATED", "TAG_NODECLAIM", "agent_pool", "pool_name"]
