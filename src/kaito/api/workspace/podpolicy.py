"""The operator's Workspace pod policy: what a Workspace may not ask of the node it runs on.

A Workspace author can write ``inference.template`` (a whole pod template) and tuning volumes. The
operator turns those into pods in the author's namespace, so without a policy a Workspace is a way
to run an arbitrary pod: privileged, in the node's network/PID/IPC namespaces, with the node's
disk mounted (hostPath), with extra kernel capabilities or as another ServiceAccount of the
namespace. Anyone who may create a Workspace could then take the node, and through it the
cluster. Upstream Kaito (v0.12) admits templates as written; kaito refuses these fields by default
(``ValidationOptions.refuse_privileged_pods``, the controller's ``--allow-privileged-pods`` flag
and the chart's ``refusePrivilegedPods`` value turn it off for clusters that need them).

Each refusal names the field and says both ways out: remove it, or have the cluster admin allow
privileged Workspace pods.

The rules are a pure function of the parsed Workspace so that the webhook, ``kaito validate`` and
unit tests judge identically.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kaito.api.workspace.types import Workspace

#: How the cluster admin lifts the policy, quoted in every refusal.
HOW_TO_ALLOW = (
    "remove it, or ask the cluster admin to allow privileged Workspace pods "
    "(kaito controller --allow-privileged-pods; chart value refusePrivilegedPods=false)"
)
#: The pod-level switches that put a pod in one of the node's namespaces.
HOST_NAMESPACES = {
    "hostNetwork": "the node's network (every other pod's traffic, the node's loopback services)",
    "hostPID": "the node's process table (every process on the node)",
    "hostIPC": "the node's IPC namespace (shared memory of other pods)",
}
CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")
#: The ServiceAccount a pod gets when it names none; naming it is harmless.
DEFAULT_SERVICE_ACCOUNT = "default"


def pod_policy_problems(ws: Workspace) -> list[tuple[str, str]]:
    """``(field, message)`` for every field the pod policy refuses in ``ws``."""
    problems: list[tuple[str, str]] = []
    template = ws.inference.template if ws.inference is not None else None
    if isinstance(template, dict):
        problems += _template_problems(template)
    adapters = (ws.inference.adapters if ws.inference is not None else None) or []
    for i, adapter in enumerate(adapters):
        source = adapter.source.volume_source
        if isinstance(source, dict) and "hostPath" in source:
            problems.append(
                (
                    f"inference.adapters[{i}].source.volumeSource.hostPath",
                    _refused("a hostPath volume", "the node's own files"),
                )
            )
    if ws.tuning is not None:
        for path, source in (
            ("tuning.input.volumeSource", ws.tuning.input.volume_source),
            ("tuning.output.volumeSource", ws.tuning.output.volume_source),
        ):
            if isinstance(source, dict) and "hostPath" in source:
                problems.append((f"{path}.hostPath", _refused("a hostPath volume", "the node's own files")))
    return problems


def _refused(what: str, gives: str) -> str:
    return (
        f"{what} is refused by the operator's Workspace pod policy (it gives the pod {gives}); {HOW_TO_ALLOW}"
    )


def _template_problems(template: dict[str, Any]) -> Iterator[tuple[str, str]]:
    spec = template.get("spec")
    if not isinstance(spec, dict):
        return
    base = "inference.template.spec"
    for key, gives in HOST_NAMESPACES.items():
        if spec.get(key) is True:
            yield f"{base}.{key}", _refused(f"{key}: true", gives)
    for key in ("serviceAccountName", "serviceAccount"):
        account = spec.get(key)
        if isinstance(account, str) and account not in ("", DEFAULT_SERVICE_ACCOUNT):
            yield (
                f"{base}.{key}",
                _refused(
                    f"ServiceAccount {account!r}",
                    "that account's API rights instead of the namespace's default account",
                ),
            )
    volumes = spec.get("volumes")
    for i, volume in enumerate(volumes if isinstance(volumes, list) else []):
        if isinstance(volume, dict) and "hostPath" in volume:
            yield f"{base}.volumes[{i}].hostPath", _refused("a hostPath volume", "the node's own files")
    for kind in CONTAINER_KINDS:
        containers = spec.get(kind)
        for i, container in enumerate(containers if isinstance(containers, list) else []):
            sc = container.get("securityContext") if isinstance(container, dict) else None
            if not isinstance(sc, dict):
                continue
            path = f"{base}.{kind}[{i}].securityContext"
            if sc.get("privileged") is True:
                yield (
                    f"{path}.privileged",
                    _refused("privileged: true", "every device and capability of the node"),
                )
            caps = sc.get("capabilities")
            added = caps.get("add") if isinstance(caps, dict) else None
            if isinstance(added, list) and added:
                names = ", ".join(str(a) for a in added)
                yield (
                    f"{path}.capabilities.add",
                    _refused(f"adding capabilities ({names})", "kernel privileges"),
                )
