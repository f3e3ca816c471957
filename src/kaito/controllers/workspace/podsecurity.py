"""The security settings of the pods kaito itself writes (preset inference pods, tuning Job pods).

Those pods need no Kubernetes API access and no kernel privileges, so they get none (issue 21):

* ``automountServiceAccountToken: false``: a compromised model server or a malicious dataset
  cannot use the namespace's ServiceAccount token against the API.
* pod ``seccompProfile: RuntimeDefault``, and per container ``allowPrivilegeEscalation: false``
  and ``capabilities.drop: [ALL]``, the Pod Security "restricted" profile's container rules.

``runAsNonRoot`` is not set: kaito's inference image (vLLM's) and tuning image (PyTorch's) run as
root with their caches under ``/root`` (docker/*.Dockerfile set no ``USER``), and the kubelet
refuses to start a root-user image under ``runAsNonRoot`` (CreateContainerConfigError). Without
capabilities that root is the container's only, not the node's.

User pod templates (``inference.template``) are left as written; the operator's pod policy
(:mod:`kaito.api.workspace.podpolicy`) decides what they may ask for.
"""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]

#: Every container kaito writes gets this securityContext.
CONTAINER_SECURITY_CONTEXT: Obj = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
#: The pod-level securityContext of kaito's pods.
POD_SECURITY_CONTEXT: Obj = {"seccompProfile": {"type": "RuntimeDefault"}}


def restrict_pod(spec: Obj) -> Obj:
    """Add the restricted settings to a pod spec kaito built (in place; returned for chaining)."""
    spec["automountServiceAccountToken"] = False
    spec["securityContext"] = copy.deepcopy(POD_SECURITY_CONTEXT)
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            container["securityContext"] = copy.deepcopy(CONTAINER_SECURITY_CONTEXT)
    return spec
