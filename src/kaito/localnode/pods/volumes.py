"""A pod's volumes as host folders: emptyDir, ConfigMap, Secret, projected (the service-account
token, CA and namespace) and hostPath, owned by the user the pod's containers run as.

Secret files stay owner-only unless an fsGroup or several container users need more (see
:func:`secret_file_mode`); ``subPath`` binds are refused when they resolve outside their volume.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kaito.localnode.pods.identity import run_as
from kaito.localnode.pods.sources import ConfigError, ObjectSource
from kaito.localnode.sandbox import write_private
from kaito.runtime import Client

Obj = dict[str, Any]


def subpath(volume: str, sub: str) -> str:
    """``volume``/``sub`` on the host, refused when it resolves outside the volume: a container
    can plant a symlink in an emptyDir (``ln -s / x``) and a second container's ``subPath: x``
    would otherwise bind the host's root."""
    base = os.path.realpath(volume)
    full = os.path.realpath(os.path.join(base, sub))
    if full != base and not full.startswith(base + os.sep):
        raise ConfigError(f'subPath "{sub}" resolves outside its volume')
    return full


def secret_file_mode(requested: int, *, group: bool = False, shared: bool = False) -> int:
    """A Secret volume file's mode on the local node: owner read (and execute, if asked), never
    write. The apiserver stores ``defaultMode: 0644`` on every pod that does not set one, so the
    requested mode cannot say whether the author wanted others to read; the file is owned by the
    user the pod's containers run as, so owner-only takes nothing from them. The default becomes
    0400, as a Secret should be on a machine shared with other users. ``group``: the pod's fsGroup
    owns it and may read (the kubelet's fsGroup); ``shared``: containers of several users without
    an fsGroup, so the requested read bits stay, as on a real node."""
    mode = (requested & 0o500) or 0o400
    if group:
        mode |= 0o040
    if shared:
        mode |= requested & 0o044
    return mode


def mkdir(path: Path, mode: int | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if mode is not None:
        path.chmod(mode)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """Give a volume the pod's user and group (see PodVolumes.owner); symlinks untouched."""
    if (uid, gid) == (0, 0):
        return
    for dirpath, _dirs, files in os.walk(top):
        os.chown(dirpath, uid, gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


class PodVolumes:
    """Builds one pod's volumes under its folder (``pod_dir``) and memory folder (``shm``).

    ``field`` answers a downward-API fieldPath for the pod (its IP is known by then)."""

    def __init__(
        self,
        client: Client,
        source: ObjectSource,
        spec: Obj,
        *,
        name: str,
        namespace: str,
        uid: str,
        pod_dir: Path,
        shm: Path,
        field: Callable[[str], str],
    ) -> None:
        self.client = client
        self.source = source
        self.name = name
        self.namespace = namespace
        self.uid = uid
        self.spec = spec
        self.dir = pod_dir
        self.shm = shm
        self.field = field

    def owner(self) -> tuple[int, int, bool, bool]:
        """Who owns the pod's Secret, ConfigMap, projected and emptyDir folders: (uid, gid, the
        group may read, others may read). The uid every container runs as (so a runAsUser
        container reads its Secret and token, still owner-only), the pod's fsGroup as group (as
        the kubelet does); when the containers run as several users and no fsGroup joins them,
        the files keep the requested mode's read bits, as on a real node (the pod's own 0700
        folder keeps the host's other users out)."""
        users, gids = set(), set()
        where = f"{self.name}_{self.namespace}({self.uid})"
        for c in [*(self.spec.get("initContainers") or []), *(self.spec.get("containers") or [])]:
            with contextlib.suppress(ConfigError):  # refused later, by name, when it starts
                ident = run_as(self.spec, c, where)
                users.add(ident.user)
                gids.add(ident.group)
        fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
        uid = next(iter(users)) if len(users) == 1 else 0
        gid = int(fs_group) if fs_group is not None else (next(iter(gids)) if len(gids) == 1 else 0)
        return uid, gid, fs_group is not None, len(users) > 1 and fs_group is None

    async def build(self) -> dict[str, str]:
        """Each volume as a host folder (or file); returns name -> host path."""
        paths: dict[str, str] = {}
        uid, gid, group_read, shared = self.owner()
        dir_mode = 0o700 | (0o050 if group_read else 0) | (0o055 if shared else 0)
        for vol in self.spec.get("volumes") or []:
            name = vol["name"]
            target = self.dir / "volumes" / name
            if "emptyDir" in vol:
                if (vol["emptyDir"] or {}).get("medium") == "Memory":
                    target = self.shm / name  # /dev/shm is memory already: no mount to undo
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o1777)
            elif "configMap" in vol or "secret" in vol:
                kind = "ConfigMap" if "configMap" in vol else "Secret"
                src = vol.get("configMap") or vol.get("secret") or {}
                ref = src.get("name") if kind == "ConfigMap" else src.get("secretName")
                data = await self.source.data(kind, str(ref), bool(src.get("optional")))
                secret = kind == "Secret"
                target.mkdir(parents=True, exist_ok=True)
                if secret:
                    target.chmod(dir_mode)
                items = src.get("items") or [{"key": k, "path": k} for k in (data or {})]
                for item in items:
                    if data is None:
                        break
                    if item["key"] not in data:
                        if src.get("optional"):
                            continue
                        raise ConfigError(f'{kind.lower()} "{ref}": key "{item["key"]}" not found')
                    f = target / item["path"]
                    f.parent.mkdir(parents=True, exist_ok=True)
                    mode = int(item.get("mode") or src.get("defaultMode") or 0o644)
                    if secret:
                        f.parent.chmod(dir_mode)
                        file_mode = secret_file_mode(mode, group=group_read, shared=shared)
                        write_private(f, data[item["key"]], file_mode)
                    else:
                        f.write_bytes(data[item["key"]])
                        f.chmod(mode)
            elif "projected" in vol:
                await self._projected(vol["projected"], target, dir_mode, group_read, shared)
            elif "hostPath" in vol:
                paths[name] = str(Path(vol["hostPath"]["path"]))
                continue
            else:
                raise ConfigError(
                    f'volume "{name}": only emptyDir, configMap, secret and hostPath run locally'
                )
            _chown_tree(target, uid, gid)
            paths[name] = str(target)
        return paths

    async def _projected(self, src: Obj, target: Path, dir_mode: int, group: bool, shared: bool) -> None:
        """The service-account volume every pod gets: a token from the TokenRequest API, the
        cluster CA (kube-root-ca.crt) and the namespace."""
        private = secret_file_mode(0o400, group=group, shared=shared)
        mkdir(target, dir_mode)  # a service-account token and Secret items: the pod's user only
        for source in src.get("sources") or []:
            if "serviceAccountToken" in source:
                sat = source["serviceAccountToken"]
                sa = self.spec.get("serviceAccountName") or "default"
                body = {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {
                        "expirationSeconds": int(sat.get("expirationSeconds", 3607)),
                        "boundObjectRef": {
                            "kind": "Pod",
                            "apiVersion": "v1",
                            "name": self.name,
                            "uid": self.uid,
                        },
                    },
                }
                token = ""
                with contextlib.suppress(Exception):
                    got = await self.client.raw_request(
                        "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token", body=body
                    )
                    token = str(got["status"]["token"])
                write_private(target / sat.get("path", "token"), token.encode(), private)
            for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if key in source:
                    ref = source[key]
                    data = await self.source.data(kind, ref["name"], bool(ref.get("optional")))
                    for item in ref.get("items") or [{"key": k, "path": k} for k in (data or {})]:
                        if data is not None and item["key"] in data:
                            f = target / item["path"]
                            f.parent.mkdir(parents=True, exist_ok=True)
                            if kind == "Secret":
                                write_private(f, data[item["key"]], private)
                            else:
                                f.write_bytes(data[item["key"]])
            if "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    if "fieldRef" in item:
                        (target / item["path"]).write_text(self.field(item["fieldRef"]["fieldPath"]))
