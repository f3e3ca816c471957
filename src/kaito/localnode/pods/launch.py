"""What one container start is: argv, env, mounts, user and the folders bound into it, as the
:class:`~kaito.localnode.sandbox.ContainerSpec` the sandbox launches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kaito.localnode.images import ImagePlan
from kaito.localnode.pods.env import expand
from kaito.localnode.pods.identity import RunAs
from kaito.localnode.pods.sources import ConfigError
from kaito.localnode.pods.volumes import subpath
from kaito.localnode.sandbox import ContainerSpec

Obj = dict[str, Any]

#: Host folders bound read-write into every container at the same path: model and compile
#: caches stay warm across restarts as a node's image cache would. Only these caches, not all of
#: ~/.cache: kaito's own cache there holds the control-plane binaries the host runs as root.
SHARED_CACHES = tuple(
    str(Path(os.environ.get("HOME", "/root")) / ".cache" / name) for name in ("huggingface", "vllm", "torch")
)
#: the checkout whose kaito the images' interpreter imports (an editable install points here);
#: bound into every container like the venv, since a checkout under /tmp would otherwise vanish
#: behind the container's own empty /tmp and the image's command would not be found (exit 127)
KAITO_SOURCE = str(Path(__file__).resolve().parents[3])


def container_spec(
    c: Obj,
    plan: ImagePlan,
    volumes: dict[str, str],
    env: dict[str, str],
    ident: RunAs,
    *,
    pod_spec: Obj,
    pod_name: str,
    pod_dir: Path,
    shm_root: Path,
) -> ContainerSpec:
    """Container ``c`` of the pod as the sandbox runs it: ``env`` already built, ``ident`` its
    user, ``volumes`` name -> host path, ``shm_root`` the pod's memory folder (see :func:`pod_shm`)."""
    command = c.get("command") or plan.entrypoint
    argv = [expand(a, env) for a in [*command, *(c.get("args") or [])]]
    mounts = list(plan.mounts)
    for m in c.get("volumeMounts") or []:
        if m["name"] not in volumes:
            raise ConfigError(f'volumeMount "{m["name"]}": no volume of that name in the pod')
        src = volumes[m["name"]]
        if m.get("subPath"):
            src = subpath(src, m["subPath"])
        mounts.append((src, m["mountPath"], bool(m.get("readOnly"))))
    return ContainerSpec(
        argv=argv,
        env=env,
        scratch=str(pod_dir / "rootfs" / c["name"]),
        hostname=pod_spec.get("hostname") or pod_name,
        workdir=c.get("workingDir") or "/",
        mounts=mounts,
        shared=_shared_caches(),
        image_paths=list(dict.fromkeys([*plan.paths, KAITO_SOURCE])),
        shm=str(pod_shm(shm_root)),
        user=ident.user,
        group=ident.group,
        groups=ident.groups,
        capabilities=ident.capabilities,
        read_only_root=ident.read_only_root,
    )


def pod_shm(shm_root: Path) -> Path:
    """The pod's /dev/shm, one folder its containers share (a volume name cannot hold "_")."""
    shm: Path = shm_root / "_dev_shm"
    shm.mkdir(parents=True, exist_ok=True)
    shm_root.chmod(0o700)  # the pod's memory volumes: not for the host's other users
    shm.chmod(0o1777)
    return shm


def _shared_caches() -> list[str]:
    """SHARED_CACHES, made if missing (a bind needs its source)."""
    for cache in SHARED_CACHES:
        Path(cache).mkdir(parents=True, exist_ok=True)
    return list(SHARED_CACHES)
