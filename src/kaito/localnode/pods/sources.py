"""What a pod reads from the apiserver on the local node: its namespace's ConfigMaps and Secrets.

Volumes, env and image-pull credentials all take their bytes from here, uncached (as the kubelet
reads a just-created Secret), and all fail the same way: :class:`ConfigError`, which the pod
shows as CreateContainerConfigError or a MountVolume message.
"""

from __future__ import annotations

import base64
from typing import Any

from kaito.runtime import CONFIGMAP, SECRET, Client, NotFoundError

Obj = dict[str, Any]


class ConfigError(Exception):
    """CreateContainerConfigError: a referenced Secret/ConfigMap/key is missing, or the
    securityContext asks for what the local node refuses."""


class ObjectSource:
    """The ConfigMaps and Secrets of one namespace, each as ``key -> bytes``."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    async def get(self, kind: str, name: str) -> Obj | None:
        gvk = CONFIGMAP if kind == "ConfigMap" else SECRET
        try:
            return await self.client.get(gvk, name, self.namespace, cached=False)
        except NotFoundError:
            return None

    async def data(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        """``kind``'s data (ConfigMap text and binaryData, Secret data decoded); None when an
        ``optional`` reference is missing, ConfigError when a required one is."""
        obj = await self.get(kind, name)
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind.lower()} "{name}" not found')
        out = (
            {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            if kind == "ConfigMap"
            else {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        )
        if kind == "ConfigMap":
            out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out
