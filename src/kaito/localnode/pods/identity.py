"""Who a container's process is on the local node: the securityContext resolved as the kubelet
does, and refused where the local node cannot honour it without giving the pod this machine."""

from __future__ import annotations

import pwd
from dataclasses import dataclass
from typing import Any

from kaito.localnode.pods.sources import ConfigError
from kaito.localnode.sandbox import GRANTABLE_CAPABILITIES

Obj = dict[str, Any]


@dataclass(frozen=True)
class RunAs:
    """Who a container's process is: user, group, supplementary groups, kept capabilities."""

    user: int
    group: int
    groups: list[int]
    capabilities: list[int]
    read_only_root: bool = False


def _primary_group(uid: int) -> int:
    """The user's group in the image's /etc/passwd (this host's), else 0, as container runtimes
    choose a group for a runAsUser without runAsGroup."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return 0


def run_as(pod_spec: Obj, c: Obj, pod: str) -> RunAs:
    """The container's user from its and the pod's securityContext, as the kubelet resolves it.

    The images here are this host's files, whose user is root, so without runAsUser a container
    runs as uid 0 (with no capability). Refused, naming the field: runAsNonRoot with no non-zero
    runAsUser (the kubelet refuses an image whose user is root the same way), ``privileged``
    (here it would be root on this machine with its devices: no isolation left) and any added
    capability but NET_BIND_SERVICE (the others reach past the pod: mounts, the host's files,
    modules). ``pod`` is the kubelet's ``name_namespace(uid)``."""
    psc: Obj = pod_spec.get("securityContext") or {}
    csc: Obj = c.get("securityContext") or {}
    name = c.get("name", "")

    def pick(key: str) -> Any:
        return csc[key] if csc.get(key) is not None else psc.get(key)

    if csc.get("privileged"):
        raise ConfigError(
            f"securityContext.privileged is true (pod: {pod!r}, container: {name}): the local node runs "
            "containers as host processes, where privileged would mean root on this machine; "
            "run the pod on a real node"
        )
    caps = []
    for cap in (csc.get("capabilities") or {}).get("add") or []:
        key = str(cap).upper().removeprefix("CAP_")
        if key not in GRANTABLE_CAPABILITIES:
            raise ConfigError(
                f"securityContext.capabilities.add: {cap} is refused (pod: {pod!r}, container: {name}): "
                f"the local node grants only {', '.join(GRANTABLE_CAPABILITIES)}"
            )
        caps.append(GRANTABLE_CAPABILITIES[key])
    user = pick("runAsUser")
    uid = int(user) if user is not None else 0
    if pick("runAsNonRoot") and uid == 0:
        if user is None:
            raise ConfigError(
                f"container has runAsNonRoot and image will run as root (pod: {pod!r}, container: {name}): "
                "securityContext.runAsNonRoot is true and no securityContext.runAsUser is set; the "
                "local node's images are this host's files, whose user is root: set runAsUser"
            )
        raise ConfigError(
            f"container's runAsUser breaks non-root policy (pod: {pod!r}, container: {name}): "
            "securityContext.runAsNonRoot is true and securityContext.runAsUser is 0"
        )
    group = pick("runAsGroup")
    gid = int(group) if group is not None else _primary_group(uid)
    extra = [*(psc.get("supplementalGroups") or [])]
    if psc.get("fsGroup") is not None:
        extra.append(psc["fsGroup"])  # the kubelet adds the volumes' group to every container
    groups = list(dict.fromkeys([gid, *(int(g) for g in extra)]))
    return RunAs(uid, gid, groups, caps, bool(csc.get("readOnlyRootFilesystem")))
