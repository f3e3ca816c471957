"""The workspace controller on the real control plane (apiserver + kcm + scheduler + kwok).

The seed's YAML is applied byte for byte with the real kubectl; pods run on kwok GPU nodes
labelled like AKS ones; everything is observed through the API or kubectl, with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import pytest
from workspace_helpers import (
    CM,
    NODE,
    POD,
    REV,
    STS,
    SVC,
    Running,
    add_node,
    apply_text,
    cond,
    get_ws,
    gpu_nodes,
    kubectl_apply,
    seed_path,
    uniq,
    wait_condition,
    wait_for,
    workspace_yaml,
)

from kaito.api import names
from kaito.controllers.workspace import WORKSPACE
from kaito.controllers.workspace.inference.configmap import DEFAULT_CONFIG_NAME
from kaito.envtest import Cluster, eventually
from kaito.nodes import NodeRequest, NodeStatus, Placement
from kaito.operator import BACKENDS, OperatorOptions
from kaito.operator.options import ProvisionerOptions
from kaito.provisioners import BackendSpec
from kaito.provisioners.byo import gpu_node_manifest
from kaito.provisioners.options import BYOOptions
from kaito.runtime import GVK, Client, Manager, NotFoundError

pytestmark = pytest.mark.cluster

READY = names.WORKSPACE_READY


def table(out: str) -> list[dict[str, str]]:
    """kubectl's table output as dicts keyed by the header (columns split on 2+ spaces)."""
    import re

    lines = [ln for ln in out.splitlines() if ln.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(header, re.split(r"\s{2,}", ln.strip()), strict=False)) for ln in lines[1:]]


async def pods_of(client: Client, ns: str, ws: str) -> list[dict[str, Any]]:
    return await client.list(POD, ns, label_selector={names.LABEL_WORKSPACE: ws}, cached=False)


async def test_seed_workspace_ready_in_kubectl_and_silent_when_converged(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    async with gpu_nodes(kclient, 1, {"apps": "phi-3"}) as nodes:
        kubectl_apply(crds, namespace, seed_path("phi3_inference.yaml"))
        ws = await wait_condition(kclient, namespace, "workspace-phi-3-mini", READY, "True")
        st = ws["status"]
        assert st["state"] == names.STATE_READY
        assert st["targetNodeCount"] == 1 and st["observedGeneration"] == ws["metadata"]["generation"]
        assert len(st["workerNodes"]) == 1
        for type_ in (
            names.RESOURCE_READY,
            names.NODE_CLAIM_READY,
            names.INFERENCE_READY,
            names.WORKSPACE_SUCCEEDED,
        ):
            assert cond(ws, type_)["status"] == "True", type_
        assert names.FINALIZER in ws["metadata"]["finalizers"]
        assert ws["metadata"]["annotations"][names.ANNOTATION_REVISION] == "1"

        rows = table(crds.kubectl("get", "workspace", "-n", namespace).stdout)
        assert list(rows[0])[:5] == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY"]
        row = rows[0]
        assert row["NAME"] == "workspace-phi-3-mini" and row["INSTANCE"] == "Standard_NC6s_v3"
        assert row["RESOURCEREADY"] == row["INFERENCEREADY"] == row["WORKSPACEREADY"] == "True"
        svc = table(crds.kubectl("get", "svc", "workspace-phi-3-mini", "-n", namespace).stdout)[0]
        assert svc["TYPE"] == "ClusterIP" and svc["PORT(S)"] == "80/TCP"

        pods = await pods_of(kclient, namespace, "workspace-phi-3-mini")
        assert [p["spec"]["nodeName"] for p in pods] == st["workerNodes"]
        assert pods[0]["spec"]["nodeName"] in nodes

        async def ready_event() -> bool:
            # Events are sent after the status write, in the background: poll for it
            events = await kclient.list(GVK("", "v1", "Event"), namespace, cached=False)
            mine = (e for e in events if e["involvedObject"].get("kind") == "Workspace")
            return any(e["reason"] == "WorkspaceReady" for e in mine)

        await eventually(ready_event, "the WorkspaceReady Event", timeout=30)

        # Converged: 30 s with reconciles provoked (a node's unrelated label changes twice),
        # and not one write request.
        assert operator.op is not None
        await operator.op.workspace.events.flush()  # the Ready event's own write lands first
        before_writes, before_runs = running_writes(operator), operator.reconciles()
        for value in ("a", "b"):
            await kclient.patch(NODE, nodes[0], {"metadata": {"labels": {"kaito.test/poke": value}}})
            await wait_for(lambda b=before_runs: _more(operator, b), "a reconcile after the node change")
            before_runs = operator.reconciles()
        await asyncio.sleep(30)
        assert running_writes(operator) == before_writes
        assert operator.reconciles() >= 2


def running_writes(running: Running) -> float:
    return running.writes()


async def _more(running: Running, before: float) -> bool:
    return running.reconciles() > before


async def test_adapters_then_a_spec_change_rolls_a_new_revision(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    name = "workspace-phi-3-mini-adapter"
    async with gpu_nodes(kclient, 1, {"apps": "phi-3-adapter"}):
        kubectl_apply(crds, namespace, seed_path("phi3_adapters_inference.yaml"))
        await wait_condition(kclient, namespace, name, READY, "True")
        sts = await kclient.get(STS, name, namespace, cached=False)
        pod = sts["spec"]["template"]["spec"]
        assert [c["image"] for c in pod["initContainers"]] == ["ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["phi-3-adapter"] == "1.0"
        (old_pod,) = await pods_of(kclient, namespace, name)

        adapters = [
            {
                "source": {"name": "phi-3-adapter", "image": "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1"},
                "strength": "1.0",
            },
            {"source": {"name": "second", "image": "registry.example/second:1"}, "strength": "0.5"},
            # upstream's other source: a volume holding the adapter, mounted in place
            {"source": {"name": "third", "volumeSource": {"configMap": {"name": "third-adapter"}}}},
        ]
        await kclient.patch(WORKSPACE, name, {"inference": {"adapters": adapters}}, namespace)

        async def rolled() -> bool:
            ws = await get_ws(kclient, namespace, name)
            pods = await pods_of(kclient, namespace, name)
            return bool(
                ws
                and cond(ws, READY).get("status") == "True"
                and ws["status"].get("observedGeneration") == ws["metadata"]["generation"]
                and pods
                and all(p["metadata"]["annotations"][names.ANNOTATION_REVISION] == "2" for p in pods)
            )

        await wait_for(rolled, "the new revision's pods Ready")
        ws = await get_ws(kclient, namespace, name)
        assert ws is not None and ws["metadata"]["annotations"][names.ANNOTATION_REVISION] == "2"
        pods = await pods_of(kclient, namespace, name)
        assert old_pod["metadata"]["uid"] not in {p["metadata"]["uid"] for p in pods}
        sts = await kclient.get(STS, name, namespace, cached=False)
        inits = sts["spec"]["template"]["spec"]["initContainers"]
        assert [c["name"] for c in inits] == ["adapter-phi-3-adapter", "adapter-second"]
        spec = sts["spec"]["template"]["spec"]
        volumes = {vol["name"]: vol for vol in spec["volumes"]}
        assert volumes["adapter-volume-third"]["configMap"]["name"] == "third-adapter"
        mounts = spec["containers"][0]["volumeMounts"]
        assert {"name": "adapter-volume-third", "mountPath": "/mnt/adapter/third", "readOnly": True} in mounts
        revs = await owned(kclient, REV, namespace, ws)
        assert sorted(r["revision"] for r in revs) == [1, 2]


async def owned(client: Client, gvk: GVK, ns: str, ws: dict[str, Any]) -> list[dict[str, Any]]:
    objs = await client.list(gvk, ns, cached=False)
    uid = ws["metadata"]["uid"]
    return [o for o in objs if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]


async def test_not_enough_nodes_then_a_node_arrives(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    label = {"apps": uniq("scarce")}
    async with gpu_nodes(kclient, 1, label):
        apply_text(
            crds,
            namespace,
            workspace_yaml("scarce", label).replace("labelSelector:", "count: 2\n  labelSelector:"),
        )
        ws = await wait_condition(kclient, namespace, "scarce", names.RESOURCE_READY, "False")
        message = cond(ws, names.RESOURCE_READY)["message"]
        assert "1 more node(s) needed" in message and "1 of 2" in message, message
        assert ws["status"]["state"] == names.STATE_PENDING
        assert cond(ws, READY)["status"] == "False"
        extra = await add_node(kclient, label)
        try:
            ws = await wait_condition(kclient, namespace, "scarce", READY, "True")
            assert ws["status"]["targetNodeCount"] == 2 and len(ws["status"]["workerNodes"]) == 2
            svc = table(crds.kubectl("get", "svc", "scarce", "-n", namespace).stdout)[0]
            assert svc["PORT(S)"] == "80/TCP,29500/TCP"
        finally:
            await kclient.delete(NODE, extra)


async def test_image_pull_error_and_crash_loop_are_the_reason(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    label = {"apps": uniq("broken")}
    async with gpu_nodes(kclient, 2, label):
        private = {
            "preset": {
                "name": "phi-3-mini-4k-instruct",
                "accessMode": "private",
                "presetOptions": {"image": "registry.invalid/private/phi-3:1"},
            }
        }
        apply_text(crds, namespace, workspace_yaml("pull", label, **private))
        crash_template = {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "registry.example/server:1",
                            "command": ["false"],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ]
                }
            }
        }
        apply_text(crds, namespace, workspace_yaml("crash", label, **crash_template))
        ws = await wait_condition(
            kclient, namespace, "pull", names.INFERENCE_READY, "False", reason="ImagePullBackOff"
        )
        assert "registry.invalid/private/phi-3:1" in cond(ws, names.INFERENCE_READY)["message"]
        assert ws["status"]["state"] == names.STATE_FAILED
        assert cond(ws, READY)["reason"] == "ImagePullBackOff"
        ws = await wait_condition(
            kclient, namespace, "crash", names.INFERENCE_READY, "False", reason="CrashLoopBackOff"
        )
        assert "server" in cond(ws, names.INFERENCE_READY)["message"]
        wanted = {("pull", "ImagePullBackOff"), ("crash", "CrashLoopBackOff")}

        async def warnings() -> set[tuple[str, str]] | None:
            # Events are sent after the status write, in the background: poll for them
            events = await kclient.list(GVK("", "v1", "Event"), namespace, cached=False)
            seen = {(e["involvedObject"]["name"], e["reason"]) for e in events if e["type"] == "Warning"}
            return seen if wanted <= seen else None

        await eventually(warnings, "the ImagePullBackOff and CrashLoopBackOff Warning events", timeout=30)


async def test_delete_removes_everything_then_the_finalizer(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    async with gpu_nodes(kclient, 1, {"apps": "phi-3"}):
        kubectl_apply(crds, namespace, seed_path("phi3_inference.yaml"))
        ws = await wait_condition(kclient, namespace, "workspace-phi-3-mini", READY, "True")
        for gvk in (STS, SVC, REV):
            assert await owned(kclient, gvk, namespace, ws), gvk
        # The default inference ConfigMap is the namespace's, shared and unowned (as upstream's).
        shared = await kclient.get(CM, DEFAULT_CONFIG_NAME, namespace, cached=False)
        assert not shared["metadata"].get("ownerReferences")
        crds.kubectl("delete", "workspace", "workspace-phi-3-mini", "-n", namespace, "--wait=false")
        await wait_for(lambda: _gone(kclient, namespace, "workspace-phi-3-mini"), "the Workspace gone")
        for gvk in (STS, SVC, CM, REV, POD):
            assert not await owned(kclient, gvk, namespace, ws), gvk
        assert not await pods_of(kclient, namespace, "workspace-phi-3-mini")


async def _gone(client: Client, ns: str, name: str) -> bool:
    return await get_ws(client, ns, name) is None


class HeldNodes:
    """A provisioner for this test: one kwok Node per Workspace, labelled with the Workspace's
    labels; deleting it can be held up by a finalizer, as a cloud VM that will not go away."""

    name = "held-nodes"

    def __init__(self, manager: Manager, options: Any) -> None:
        self.client = manager.client
        self.asked_to_delete: list[str] = []

    def watched_kinds(self) -> Sequence[GVK]:
        return ()

    def _mine(self, request: NodeRequest) -> list[dict[str, Any]]:
        assert self.client.cache is not None
        return self.client.cache.list(
            NODE,
            None,
            {names.LABEL_WORKSPACE: request.workspace, names.LABEL_WORKSPACE_NAMESPACE: request.namespace},
        )

    async def provision_nodes(self, request: NodeRequest) -> None:
        if not self._mine(request):
            labels = {
                names.LABEL_WORKSPACE: request.workspace,
                names.LABEL_WORKSPACE_NAMESPACE: request.namespace,
            }
            node = gpu_node_manifest(
                f"held-{request.uid[:8]}", request.instance_type or "Standard_NC6s_v3", labels
            )
            node["metadata"]["finalizers"] = ["kaito.test/hold"]
            with contextlib.suppress(Exception):
                await self.client.create(node)

    async def ensure_nodes_ready(self, request: NodeRequest) -> NodeStatus:
        ready = [
            n["metadata"]["name"] for n in self._mine(request) if not n["metadata"].get("deletionTimestamp")
        ]
        return NodeStatus(ready=bool(ready), nodes=ready, reason="HeldNodes", message=f"{len(ready)} node(s)")

    async def delete_nodes(self, request: NodeRequest) -> bool:
        self.asked_to_delete.append(request.workspace)
        mine = self._mine(request)
        for node in mine:
            if not node["metadata"].get("deletionTimestamp"):
                await self.client.delete(NODE, node["metadata"]["name"])
        return not mine

    def placement(self, request: NodeRequest, status: NodeStatus) -> Placement:
        exprs = [{"key": names.LABEL_WORKSPACE, "operator": "In", "values": [request.workspace]}]
        return Placement(
            {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": exprs}]
                    }
                }
            }
        )


async def test_stuck_nodes_keep_the_workspace_deleting_with_a_reason(
    crds: Cluster, kclient: Client, namespace: str
) -> None:
    BACKENDS["held-nodes"] = BackendSpec(BYOOptions, HeldNodes)
    running = Running(
        crds,
        OperatorOptions(
            metrics_bind_address="0",
            health_probe_bind_address="0",
            provisioner=ProvisionerOptions(name="held-nodes"),
        ),
    )
    op = await running.start()
    label = {"apps": uniq("held")}
    node_name = ""
    try:
        apply_text(crds, namespace, workspace_yaml("held", label))
        ws = await wait_condition(kclient, namespace, "held", READY, "True")
        node_name = f"held-{ws['metadata']['uid'][:8]}"
        crds.kubectl("delete", "workspace", "held", "-n", namespace, "--wait=false")

        async def deleting() -> dict[str, Any] | None:
            w = await get_ws(kclient, namespace, "held")
            c = cond(w, READY)
            return w if c.get("reason") == "Deleting" and "held-nodes" in c.get("message", "") else None

        ws = await wait_for(deleting, "Deleting, waiting for the provisioner")
        assert ws["status"]["state"] == names.STATE_DELETING
        assert names.FINALIZER in ws["metadata"]["finalizers"]
        # The workload went first: nothing of the Workspace's is left but its nodes.
        for gvk in (STS, SVC, CM, REV):
            assert not await owned(kclient, gvk, namespace, ws), gvk
        assert "held" in op.provisioner.asked_to_delete  # type: ignore[attr-defined]
        await kclient.patch(NODE, node_name, {"metadata": {"finalizers": None}})
        await wait_for(lambda: _gone(kclient, namespace, "held"), "the Workspace gone once its node is")
    finally:
        await running.stop()
        BACKENDS.pop("held-nodes", None)
        if node_name:
            with contextlib.suppress(NotFoundError):
                await kclient.patch(NODE, node_name, {"metadata": {"finalizers": None}})
                await kclient.delete(NODE, node_name)


async def test_restart_mid_rollout_picks_up_without_duplicates(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    name = "workspace-phi-3-mini-adapter"
    async with gpu_nodes(kclient, 1, {"apps": "phi-3-adapter"}):
        kubectl_apply(crds, namespace, seed_path("phi3_adapters_inference.yaml"))
        await wait_condition(kclient, namespace, name, READY, "True")
        image = "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1"
        change = {
            "inference": {
                "adapters": [{"source": {"name": "phi-3-adapter", "image": image}, "strength": "0.3"}]
            }
        }
        await kclient.patch(WORKSPACE, name, change, namespace)

        async def rollout_started() -> bool:
            with contextlib.suppress(NotFoundError):
                sts = await kclient.get(STS, name, namespace, cached=False)
                return bool(sts["metadata"]["annotations"].get(names.ANNOTATION_REVISION) == "2")
            return False

        await wait_for(rollout_started, "revision 2 applied to the StatefulSet", interval=0.05)
        await operator.restart()

        async def done() -> bool:
            ws = await get_ws(kclient, namespace, name)
            pods = await pods_of(kclient, namespace, name)
            return bool(
                ws
                and cond(ws, READY).get("status") == "True"
                and ws["status"].get("observedGeneration") == ws["metadata"]["generation"]
                and pods
                and all(p["metadata"]["annotations"][names.ANNOTATION_REVISION] == "2" for p in pods)
            )

        await wait_for(done, "the rollout finished by the restarted controller")
        ws = await get_ws(kclient, namespace, name)
        assert ws is not None
        assert len(await owned(kclient, STS, namespace, ws)) == 1
        assert sorted(s["metadata"]["name"] for s in await owned(kclient, SVC, namespace, ws)) == [
            name,
            f"{name}-headless",
        ]
        assert not await owned(kclient, CM, namespace, ws)
        cms = await kclient.list(CM, namespace, cached=False)
        assert [c["metadata"]["name"] for c in cms].count(DEFAULT_CONFIG_NAME) == 1
        assert sorted(r["revision"] for r in await owned(kclient, REV, namespace, ws)) == [1, 2]
        assert len(await pods_of(kclient, namespace, name)) == 1


SECRET = GVK("", "v1", "Secret")


async def test_api_key_from_a_secret_and_an_open_load_balancer_is_flagged(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    """Issue 21 (4). A LoadBalancer Workspace without an API key carries
    InferenceEndpointSecured=False (and a Warning Event) while it serves; naming a Secret with
    ``kaito.sh/api-key-secret`` gives the pod ``KAITO_API_KEY`` through ``secretKeyRef`` - the
    key's value is nowhere in the StatefulSet, its pods or the ControllerRevisions - and turns
    the condition True."""
    label = {"apps": uniq("apikey")}
    name = "apikey"
    value = "kaito-" + uniq("sekret")
    await kclient.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "llm-key", "namespace": namespace},
            "stringData": {"token": value},
        }
    )
    async with gpu_nodes(kclient, 1, label):
        text = workspace_yaml(name, label).replace(
            f"name: {name}\n", f"annotations:\n    kaito.sh/enablelb: 'True'\n  name: {name}\n"
        )
        apply_text(crds, namespace, text)
        ws = await wait_condition(
            kclient,
            namespace,
            name,
            names.INFERENCE_ENDPOINT_SECURED,
            "False",
            reason="UnauthenticatedLoadBalancer",
        )
        assert names.ANNOTATION_API_KEY_SECRET in cond(ws, names.INFERENCE_ENDPOINT_SECURED)["message"]
        ws = await wait_condition(kclient, namespace, name, READY, "True")  # a warning, not a failure
        assert (await kclient.get(SVC, name, namespace, cached=False))["spec"]["type"] == "LoadBalancer"

        async def warned() -> bool:
            events = await kclient.list(GVK("", "v1", "Event"), namespace, cached=False)
            return any(
                e["involvedObject"].get("name") == name
                and e["type"] == "Warning"
                and e["reason"] == "UnauthenticatedLoadBalancer"
                for e in events
            )

        await wait_for(warned, "a Warning Event about the open LoadBalancer")
        sts = await kclient.get(STS, name, namespace, cached=False)
        assert all(
            e["name"] != "KAITO_API_KEY"
            for e in sts["spec"]["template"]["spec"]["containers"][0].get("env") or ()
        )

        await kclient.patch(
            WORKSPACE,
            name,
            {"metadata": {"annotations": {names.ANNOTATION_API_KEY_SECRET: "llm-key/token"}}},
            namespace,
        )
        ws = await wait_condition(
            kclient, namespace, name, names.INFERENCE_ENDPOINT_SECURED, "True", reason="APIKeyRequired"
        )

        async def keyed_pods() -> list[dict[str, Any]]:
            pods = await pods_of(kclient, namespace, name)
            return [
                p
                for p in pods
                if any(e["name"] == "KAITO_API_KEY" for e in p["spec"]["containers"][0].get("env") or ())
            ]

        pods = await wait_for(keyed_pods, "a pod with KAITO_API_KEY")
        want = {"name": "KAITO_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-key", "key": "token"}}}
        sts = await kclient.get(STS, name, namespace, cached=False)
        env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
        assert want in env
        assert want in pods[0]["spec"]["containers"][0]["env"]
        revisions = await owned(kclient, REV, namespace, ws)
        for obj in (sts, *pods, *revisions, ws):
            assert value not in json.dumps(obj), obj["metadata"]["name"]
        assert (await kclient.get(SECRET, "llm-key", namespace, cached=False))["data"]["token"]
