"""CloudProvider ``kwok``: a NodeClaim becomes a GPU Node object, made on the spot.

Why: ``make run`` has no cloud, yet the seed's Workspaces (no nodes exist beforehand) must get
nodes on demand. The "instance" is the Node object itself, shaped from kaito's SKU table
(``nvidia.com/gpu`` capacity, GPU feature-discovery labels). Who plays its kubelet depends on the
claim:

- by default the cluster's kwok (it manages every Node not labelled ``kaito.sh/node-agent=local``)
  makes it Ready and fakes its pods;
- claims matching :class:`LocalNodes` (``--local-nodes SELECTOR``, a label selector over the
  claim's labels, which carry the Workspace's ``labelSelector.matchLabels``) get a Node labelled
  ``kaito.sh/node-agent=local`` and no kwok marks, so kaito's local node agent (``kaito local
  up``) owns it and runs its pods for real. A selector, not a switch, because one process serves
  every Workspace: ``make run`` hands the seed's node (``apps=phi-3``) to the agent while the
  adapter example, whose image cannot be pulled anywhere, stays on a kwok fake;
- claims matching ``--real-nodes SELECTOR`` (the same :class:`ClaimSelector`) get no Node made at
  all: a real machine registers its own Node (``kaito local up --node real``, labelled
  ``kaito.sh/kubelet=real``), so the cloud *adopts* an idle one instead (:class:`Adoption`): it
  claims it with a resourceVersion-checked patch, shapes it like the instance the claim asked for
  (labels, taints, providerID, the SKU's ``nvidia.com/gpu`` as an extended resource) and, when the
  claim goes, releases it (undoes that) rather than deleting it.

Modules: :mod:`.options` (the flags), :mod:`.selector` (``--local-nodes`` / ``--real-nodes``),
:mod:`.names` (the marks on kwok's Nodes), :mod:`.provider` (the CloudProvider) and
:mod:`.adoption` (real nodes adopted and released).
"""

from kaito.provisioners.cloud.kwok.adoption import Adoption
from kaito.provisioners.cloud.kwok.names import (
    AGENT_NODE_LABEL,
    AGENT_NODE_VALUE,
    ANNOTATION_ADOPTION,
    LABEL_KWOK_CLOUD,
    PROVIDER_PREFIX,
    REAL_NODE_LABEL,
    REAL_NODE_VALUE,
    REAL_PROVIDER_PREFIX,
)
from kaito.provisioners.cloud.kwok.options import KwokOptions
from kaito.provisioners.cloud.kwok.provider import KwokCloudProvider, new_cloud
from kaito.provisioners.cloud.kwok.selector import ClaimSelector, LocalNodes, RealNodes

__all__ = [
    "AGENT_NODE_LABEL",
    "AGENT_NODE_VALUE",
    "ANNOTATION_ADOPTION",
    "LABEL_KWOK_CLOUD",
    "PROVIDER_PREFIX",
    "REAL_NODE_LABEL",
    "REAL_NODE_VALUE",
    "REAL_PROVIDER_PREFIX",
    "Adoption",
    "ClaimSelector",
    "KwokCloudProvider",
    "KwokOptions",
    "LocalNodes",
    "RealNodes",
    "new_cloud",
]
