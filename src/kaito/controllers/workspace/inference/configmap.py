"""The default inference ConfigMap, used when the Workspace names none (``inference.config``).

One per namespace, shared by every Workspace there that names no ConfigMap (upstream does the
same with its ``inference-params-template``): the content is the same for all of them, so one
object per Workspace would only cost a write and a cached object each. It has no owner, so it
outlives the Workspaces (like upstream's); kaito recreates it when it is deleted and puts its
content back when it is edited. Mounted at ``/mnt/config`` like a user's ConfigMap, so the
server always reads a file and users can start from a copy (``kubectl get cm
kaito-default-inference-config -o yaml``). It holds no settings the server would not pick
itself: the preset and the GPU decide the engine arguments.
"""

from __future__ import annotations

from typing import Any

from kaito.contract import INFERENCE_CONFIG_FILE
from kaito.controllers.workspace.labels import MANAGED_BY

Obj = dict[str, Any]

DEFAULT_CONFIG = """\
# kaito's default inference settings. To change them, copy this ConfigMap under another name,
# edit it and set the Workspace's inference.config to that name.
# vllm: any vLLM engine argument, e.g. max-model-len: 4096 (the preset and GPU set the rest)
vllm: {}
# server: kaito's server settings (max_queue, retry_after)
server:
  max_queue: 64
"""


#: Name of the shared default ConfigMap in each namespace with a Workspace that names none.
DEFAULT_CONFIG_NAME = "kaito-default-inference-config"


def build_default_config(namespace: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": DEFAULT_CONFIG_NAME, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "data": {INFERENCE_CONFIG_FILE: DEFAULT_CONFIG},
    }
