"""The labels, annotations and providerID prefixes of the Nodes the ``kwok`` cloud makes or adopts."""

#: Marks the Nodes this cloud owns; ``list`` (garbage collection) sees only these.
LABEL_KWOK_CLOUD = "kaito.sh/kwok-cloud"
PROVIDER_PREFIX = "kwok://"
#: The label that hands a Node to kaito's local node agent (``kaito.localnode`` owns these names;
#: a cloud may not import it, so they are repeated here, as ``kaito.envtest`` repeats them for kwok).
AGENT_NODE_LABEL = "kaito.sh/node-agent"
AGENT_NODE_VALUE = "local"
#: The label a real kubelet registers its Node with (``kaito.envtest.realnode``, ``kaito local up
#: --node real``); repeated here for the same reason, and a test keeps the two equal.
REAL_NODE_LABEL = "kaito.sh/kubelet"
REAL_NODE_VALUE = "real"
REAL_PROVIDER_PREFIX = "kaito-real://"
#: On a Node held for a claim: what adoption changed (JSON: labels' previous values, taints added,
#: the GPU count written, when), so that release restores exactly that. Gone once released.
ANNOTATION_ADOPTION = "kaito.sh/adoption"
#: Labels the NodeClaim controller adds on registration; release removes them as well.
REGISTRATION_LABELS = ("karpenter.sh/registered", "karpenter.sh/initialized")

__all__ = [
    "AGENT_NODE_LABEL",
    "AGENT_NODE_VALUE",
    "ANNOTATION_ADOPTION",
    "LABEL_KWOK_CLOUD",
    "PROVIDER_PREFIX",
    "REAL_NODE_LABEL",
    "REAL_NODE_VALUE",
    "REAL_PROVIDER_PREFIX",
    "REGISTRATION_LABELS",
]
