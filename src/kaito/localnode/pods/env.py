"""A container's environment as the kubelet builds it: the image's env, envFrom, then env in
order with ``$(VAR)`` expansion, fieldRef (the downward API) and resourceFieldRef."""

from __future__ import annotations

import math
import os
import re
from typing import Any

from kaito.localnode.pods.sources import ConfigError, ObjectSource
from kaito.localnode.sandbox import GATEWAY

Obj = dict[str, Any]
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, others stay as is."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR_REF.sub(sub, text)


def field_value(path: str, meta: Obj, spec: Obj, ip: str) -> str:
    """A downward-API ``fieldPath`` of the pod (``meta`` as last read, ``ip`` its pod IP)."""
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": ip,
        "status.hostIP": GATEWAY,
    }
    if path not in simple:
        raise ConfigError(f"fieldRef {path!r} is not supported on the local node")
    return str(simple[path])


def resource_value(c: Obj, ref: Obj) -> str:
    """A resourceFieldRef: the container's request or limit, CPU rounded up to whole cores."""
    res = ref["resource"]
    kind, _, what = res.partition(".")
    raw = str(((c.get("resources") or {}).get(kind) or {}).get(what) or "")
    if what == "cpu":
        cores = float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw or os.cpu_count() or 1)
        return str(math.ceil(cores))
    return raw or "0"


async def container_env(
    c: Obj, image_env: dict[str, str], standin: str, source: ObjectSource, meta: Obj, spec: Obj, ip: str
) -> dict[str, str]:
    """Container ``c``'s environment over the image's; ``standin`` is the random-weight note
    (``KAITO_STANDIN``) when the pod runs a stand-in, else empty."""
    env = dict(image_env)
    if standin:
        env["KAITO_STANDIN"] = standin
    for src in c.get("envFrom") or []:
        kind = "ConfigMap" if "configMapRef" in src else "Secret"
        ref = src.get("configMapRef") or src.get("secretRef") or {}
        data = await source.data(kind, ref["name"], bool(ref.get("optional")))
        for k, v in (data or {}).items():
            env[src.get("prefix", "") + k] = v.decode(errors="replace")
    for e in c.get("env") or []:
        if "valueFrom" not in e:
            env[e["name"]] = expand(str(e.get("value", "")), env)
            continue
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            env[e["name"]] = field_value(vf["fieldRef"]["fieldPath"], meta, spec, ip)
        elif "resourceFieldRef" in vf:
            env[e["name"]] = resource_value(c, vf["resourceFieldRef"])
        else:
            kind = "ConfigMap" if "configMapKeyRef" in vf else "Secret"
            ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef") or {}
            data = await source.data(kind, ref["name"], bool(ref.get("optional")))
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref["name"]}": key "{ref["key"]}" not found')
            env[e["name"]] = data[ref["key"]].decode(errors="replace")
    return env
