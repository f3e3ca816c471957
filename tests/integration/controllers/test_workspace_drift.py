"""Level-triggered behaviour of the workspace controller on the real control plane.

- A namespace-scoped operator (``OperatorOptions.namespace``) still hears cluster-scoped Nodes:
  a Workspace short of nodes turns Ready when the missing node arrives.
- Hand edits of what the Workspace owns are reverted by the owned object's own event (no
  Workspace change needed), a deleted child is recreated, and a converged Workspace still costs
  no write.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from workspace_helpers import (
    CM,
    NODE,
    STS,
    SVC,
    Running,
    add_node,
    apply_text,
    cond,
    gpu_nodes,
    uniq,
    wait_condition,
    wait_for,
    workspace_yaml,
)

from kaito.api import names
from kaito.contract import INFERENCE_CONFIG_FILE
from kaito.controllers.workspace import WORKSPACE
from kaito.controllers.workspace.inference.configmap import DEFAULT_CONFIG_NAME
from kaito.envtest import Cluster
from kaito.operator import OperatorOptions
from kaito.runtime import Client, NotFoundError

pytestmark = pytest.mark.cluster

READY = names.WORKSPACE_READY


async def test_namespace_scoped_operator_hears_node_changes(
    crds: Cluster, kclient: Client, namespace: str
) -> None:
    running = Running(
        crds,
        OperatorOptions(metrics_bind_address="0", health_probe_bind_address="0", namespace=namespace),
    )
    await running.start()
    label = {"apps": uniq("nsscoped")}
    extra = ""
    try:
        async with gpu_nodes(kclient, 1, label):
            apply_text(
                crds,
                namespace,
                workspace_yaml("scoped", label).replace("labelSelector:", "count: 2\n  labelSelector:"),
            )
            ws = await wait_condition(kclient, namespace, "scoped", names.RESOURCE_READY, "False")
            assert "1 more node(s) needed" in cond(ws, names.RESOURCE_READY)["message"]
            # Only a Node event can bring the Workspace back: BYO asks for no periodic requeue.
            extra = await add_node(kclient, label)
            ws = await wait_condition(kclient, namespace, "scoped", READY, "True")
            assert ws["status"]["targetNodeCount"] == 2 and len(ws["status"]["workerNodes"]) == 2
            await kclient.delete(WORKSPACE, "scoped", namespace)

            async def gone() -> bool:
                try:
                    await kclient.get(WORKSPACE, "scoped", namespace, cached=False)
                except NotFoundError:
                    return True
                return False

            await wait_for(gone, "the Workspace deleted by the namespace-scoped operator")
    finally:
        await running.stop()
        if extra:
            with contextlib.suppress(NotFoundError):
                await kclient.delete(NODE, extra)


async def _settled_writes(running: Running, quiet: float = 3.0) -> float:
    """The operator's write count once it has not moved for ``quiet`` seconds (the reverts'
    own watch events and the pods' restarts come back first)."""
    state = {"value": running.writes(), "since": asyncio.get_running_loop().time()}

    def settled() -> bool:
        now, value = asyncio.get_running_loop().time(), running.writes()
        if value != state["value"]:
            state.update(value=value, since=now)
        return now - state["since"] >= quiet

    await wait_for(settled, f"no operator write for {quiet:.0f}s", interval=0.25)
    return running.writes()


def _ports(svc: dict[str, Any]) -> list[tuple[str, int, Any]]:
    return [(p.get("name"), p["port"], p.get("targetPort")) for p in svc["spec"]["ports"]]


async def test_hand_edits_of_owned_objects_are_reverted(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    label = {"apps": uniq("drift")}
    name = "drift"
    async with gpu_nodes(kclient, 1, label):
        apply_text(crds, namespace, workspace_yaml(name, label))
        ws = await wait_condition(kclient, namespace, name, READY, "True")
        generation = ws["metadata"]["generation"]
        svc = await kclient.get(SVC, name, namespace, cached=False)
        want_ports = _ports(svc)
        assert want_ports == [("http", 80, 5000)]
        sts = await kclient.get(STS, name, namespace, cached=False)
        want_image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
        want_replicas = sts["spec"]["replicas"]

        # 1. The Service's port edited by hand (a JSON patch, as `kubectl edit` would) -> reverted.
        crds.kubectl(
            "patch", "svc", name, "-n", namespace, "--type=json",
            "-p", '[{"op":"replace","path":"/spec/ports/0/port","value":8080}]',
        )  # fmt: skip

        async def svc_reverted() -> bool:
            return _ports(await kclient.get(SVC, name, namespace, cached=False)) == want_ports

        await wait_for(svc_reverted, "the Service's port reverted to 80")

        # 2. The StatefulSet's template and replicas edited by hand -> reverted.
        crds.kubectl(
            "patch", "statefulset", name, "-n", namespace, "--type=json",
            "-p", '[{"op":"replace","path":"/spec/template/spec/containers/0/image",'
            '"value":"registry.example/hand-edited:1"},{"op":"replace","path":"/spec/replicas","value":3}]',
        )  # fmt: skip

        async def sts_reverted() -> bool:
            s = await kclient.get(STS, name, namespace, cached=False)
            return bool(
                s["spec"]["template"]["spec"]["containers"][0]["image"] == want_image
                and s["spec"]["replicas"] == want_replicas
            )

        await wait_for(sts_reverted, "the StatefulSet's image and replicas reverted")

        # 3. The headless Service deleted -> recreated.
        headless = await kclient.get(SVC, f"{name}-headless", namespace, cached=False)
        await kclient.delete(SVC, f"{name}-headless", namespace)

        async def recreated() -> bool:
            try:
                s = await kclient.get(SVC, f"{name}-headless", namespace, cached=False)
            except NotFoundError:
                return False
            return bool(s["metadata"]["uid"] != headless["metadata"]["uid"])

        new_headless = await wait_for(recreated, "the headless Service recreated")
        assert new_headless
        s = await kclient.get(SVC, f"{name}-headless", namespace, cached=False)
        assert s["spec"]["clusterIP"] == "None" and s["spec"]["publishNotReadyAddresses"] is True

        # 4. The namespace's shared default ConfigMap deleted -> recreated; edited -> put back.
        shared = await kclient.get(CM, DEFAULT_CONFIG_NAME, namespace, cached=False)
        await kclient.delete(CM, DEFAULT_CONFIG_NAME, namespace)

        async def cm_recreated() -> dict[str, Any] | None:
            try:
                c = await kclient.get(CM, DEFAULT_CONFIG_NAME, namespace, cached=False)
            except NotFoundError:
                return None
            return c if c["metadata"]["uid"] != shared["metadata"]["uid"] else None

        again = await wait_for(cm_recreated, "the default inference ConfigMap recreated")
        assert again["data"] == shared["data"]
        edit = {"data": {INFERENCE_CONFIG_FILE: "vllm: {}\n"}}
        await kclient.patch(CM, DEFAULT_CONFIG_NAME, edit, namespace)

        async def cm_reverted() -> bool:
            c = await kclient.get(CM, DEFAULT_CONFIG_NAME, namespace, cached=False)
            return bool(c["data"] == shared["data"])

        await wait_for(cm_reverted, "the default inference ConfigMap's content put back")

        # None of it was a spec change: the Workspace stayed at its generation and Ready.
        ws = await wait_condition(kclient, namespace, name, READY, "True")
        assert ws["metadata"]["generation"] == generation

        # Converged again: relabelling the node provokes reconciles that write nothing.
        assert operator.op is not None
        await operator.op.workspace.events.flush()
        before = await _settled_writes(operator)
        node = ws["status"]["workerNodes"][0]
        for value in ("x", "y"):
            runs = operator.reconciles()
            await kclient.patch(NODE, node, {"metadata": {"labels": {"kaito.test/poke": value}}})
            await wait_for(lambda runs=runs: operator.reconciles() > runs, "a reconcile after the relabel")
        await asyncio.sleep(10)  # and for a while after them, not one write
        assert operator.writes() == before


async def test_annotation_change_alone_is_reconciled(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    """`kaito.sh/enablelb` steers the Service but is no spec change (the generation stays): the
    annotation's own update must bring the Workspace back to the controller."""
    label = {"apps": uniq("annot")}
    name = "annot"
    async with gpu_nodes(kclient, 1, label):
        apply_text(crds, namespace, workspace_yaml(name, label))
        ws = await wait_condition(kclient, namespace, name, READY, "True")
        generation = ws["metadata"]["generation"]
        assert (await kclient.get(SVC, name, namespace, cached=False))["spec"]["type"] == "ClusterIP"
        await kclient.patch(
            WORKSPACE, name, {"metadata": {"annotations": {names.ANNOTATION_ENABLE_LB: "True"}}}, namespace
        )

        async def load_balancer() -> bool:
            svc = await kclient.get(SVC, name, namespace, cached=False)
            return bool(svc["spec"]["type"] == "LoadBalancer")

        await wait_for(load_balancer, "the Service turned LoadBalancer by kaito.sh/enablelb")
        ws = await kclient.get(WORKSPACE, name, namespace, cached=False)
        assert ws["metadata"]["generation"] == generation


async def test_a_404_about_the_workspace_itself_is_told_apart(
    crds: Cluster, kclient: Client, namespace: str
) -> None:
    """A Workspace deleted while its reconcile runs makes that reconcile's own metadata or status
    write answer 404; that ends the reconcile quietly (its delete event cleans up). Any other
    404 is still a failure. The Status bodies are the real apiserver's."""
    from kaito.controllers.workspace.reconciler import deleted_underneath
    from kaito.runtime import Request

    req = Request(namespace, "gone")
    errors: list[NotFoundError] = []
    for write in (
        kclient.patch(WORKSPACE, "gone", {"metadata": {"finalizers": ["x"]}}, namespace, patch_type="merge"),
        kclient.update_status(
            {
                "apiVersion": "kaito.sh/v1beta1",
                "kind": "Workspace",
                "metadata": {"name": "gone", "namespace": namespace},
                "status": {},
            }
        ),
        kclient.patch(STS, "gone", {"metadata": {"labels": {"a": "b"}}}, namespace, patch_type="merge"),
        kclient.patch(
            WORKSPACE, "other", {"metadata": {"labels": {"a": "b"}}}, namespace, patch_type="merge"
        ),
    ):
        with pytest.raises(NotFoundError) as caught:
            await write
        errors.append(caught.value)
    own_patch, own_status, statefulset, other = errors
    assert deleted_underneath(own_patch, req) and deleted_underneath(own_status, req)
    assert not deleted_underneath(statefulset, req), statefulset.body
    assert not deleted_underneath(other, req), other.body
