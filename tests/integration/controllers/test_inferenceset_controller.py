"""The InferenceSet controller on the real control plane (apiserver + kcm + scheduler + kwok),
beside the workspace controller, in one operator, on BYO kwok GPU nodes.

Everything is driven the way a user would (kubectl apply / scale / delete, an HPA object) and
observed through the API with deadlines; the rolling-update test watches every Workspace event
and checks the unavailable count at each one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from workspace_helpers import POD, Running, apply_text, gpu_nodes, uniq, wait_for

from kaito.api.inferenceset import CONDITION_READY, LABEL_CREATED_BY
from kaito.controllers.inferenceset import INFERENCESET
from kaito.controllers.inferenceset.plan import workspace_ready
from kaito.controllers.workspace import WORKSPACE
from kaito.envtest import Cluster
from kaito.runtime import GVK, Client, FuncHandler, Informer, NotFoundError

pytestmark = pytest.mark.cluster

HPA = GVK("autoscaling", "v2", "HorizontalPodAutoscaler")
PRESET = "phi-3-mini-4k-instruct"
OTHER_PRESET = "phi-3-mini-128k-instruct"


def set_yaml(name: str, replicas: int, labels: dict[str, str], **inference: Any) -> str:
    body = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "InferenceSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "labelSelector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {"team": "search"}},
                "resource": {"instanceType": "Standard_NC6s_v3"},
                "inference": inference or {"preset": {"name": PRESET}},
            },
        },
    }
    return yaml.safe_dump(body)


@pytest.fixture
async def sets(operator: Running, crds: Cluster, namespace: str) -> AsyncIterator[Running]:
    """The operator, and afterwards this test's InferenceSets deleted first (else the set would
    recreate the Workspaces the operator fixture deletes on its way out)."""
    try:
        yield operator
    finally:
        crds.kubectl("delete", "inferencesets", "--all", "-n", namespace, "--wait=false", check=False)
        assert operator.op is not None
        client = operator.op.manager.client

        async def none_left() -> bool:
            return not await client.list(INFERENCESET, namespace, cached=False)

        with contextlib.suppress(AssertionError):
            await wait_for(none_left, "the test's InferenceSets to be deleted", timeout=30)


async def get_set(client: Client, ns: str, name: str) -> dict[str, Any]:
    return await client.get(INFERENCESET, name, ns, cached=False)


def set_cond(obj: dict[str, Any]) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c["type"] == CONDITION_READY:
            return dict(c)
    return {}


async def children(client: Client, ns: str, name: str) -> dict[str, dict[str, Any]]:
    items = await client.list(WORKSPACE, ns, label_selector={LABEL_CREATED_BY: name}, cached=False)
    return {w["metadata"]["name"]: w for w in items}


async def wait_set_ready(client: Client, ns: str, name: str, replicas: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        obj = await get_set(client, ns, name)
        st = obj.get("status") or {}
        kids = await children(client, ns, name)
        live = sorted(n for n, w in kids.items() if not w["metadata"].get("deletionTimestamp"))
        if (
            st.get("readyReplicas") == replicas
            and st.get("replicas") == replicas
            and set_cond(obj).get("status") == "True"
            and live == sorted(f"{name}-{i}" for i in range(replicas))
            and st.get("observedGeneration") == obj["metadata"]["generation"]
        ):
            return obj
        return None

    return await wait_for(check, f"InferenceSet {ns}/{name} Ready with {replicas} Workspaces", timeout=180)


def table(out: str) -> list[dict[str, str]]:
    import re

    lines = [ln for ln in out.splitlines() if ln.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(header, re.split(r"\s{2,}", ln.strip()), strict=False)) for ln in lines[1:]]


async def test_replicas_scale_and_cascade(
    sets: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    labels = {"apps": uniq("iset")}
    async with gpu_nodes(kclient, 3, labels):
        apply_text(crds, namespace, set_yaml("chat", 2, labels))
        obj = await wait_set_ready(kclient, namespace, "chat", 2)
        assert obj["status"]["selector"] == f"{LABEL_CREATED_BY}=chat"
        assert obj["status"]["updatedReplicas"] == 2
        kids = await children(kclient, namespace, "chat")
        for ws in kids.values():
            ref = ws["metadata"]["ownerReferences"][0]
            assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
                "InferenceSet",
                "chat",
                obj["metadata"]["uid"],
                True,
            )
            assert ws["metadata"]["labels"]["team"] == "search"  # the template's labels
            assert ws["resource"]["labelSelector"] == {"matchLabels": labels}
        # status.selector selects the children's pods too (an HPA reads their metrics).
        pods = await kclient.list(POD, namespace, label_selector=obj["status"]["selector"], cached=False)
        assert sorted(p["metadata"]["labels"]["kaito.sh/workspace"] for p in pods) == ["chat-0", "chat-1"]

        row = table(crds.kubectl("get", "inferenceset", "chat", "-n", namespace).stdout)[0]
        assert (row["NAME"], row["REPLICAS"], row["READYREPLICAS"]) == ("chat", "2", "2"), row
        assert crds.kubectl("get", "isets", "-n", namespace, "-o", "name").stdout.strip() == (
            "inferenceset.kaito.sh/chat"
        )

        # kubectl scale goes through the scale subresource.
        crds.kubectl("scale", "inferenceset/chat", "--replicas=3", "-n", namespace)
        await wait_set_ready(kclient, namespace, "chat", 3)
        scale = json.loads(
            crds.kubectl(
                "get", "--raw", f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/inferencesets/chat/scale"
            ).stdout
        )
        assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
        assert scale["status"]["selector"] == f"{LABEL_CREATED_BY}=chat"

        # Down to one: the two highest indexes go, chat-0 stays (the same object).
        uid0 = (await children(kclient, namespace, "chat"))["chat-0"]["metadata"]["uid"]
        crds.kubectl("scale", "inferenceset/chat", "--replicas=1", "-n", namespace)

        async def scaled_down() -> bool:
            kids = await children(kclient, namespace, "chat")
            return sorted(kids) == ["chat-0"]

        await wait_for(scaled_down, "chat-1 and chat-2 deleted", timeout=120)
        await wait_set_ready(kclient, namespace, "chat", 1)
        assert (await children(kclient, namespace, "chat"))["chat-0"]["metadata"]["uid"] == uid0

        # Deleting the set deletes its Workspaces (owner references, the garbage collector).
        crds.kubectl("delete", "inferenceset", "chat", "-n", namespace, "--wait=false")

        async def cascaded() -> bool:
            return not await children(kclient, namespace, "chat")

        await wait_for(cascaded, "the set's Workspaces garbage-collected", timeout=120)


async def test_template_change_rolls_one_workspace_at_a_time(
    sets: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    labels = {"apps": uniq("roll")}
    seen: list[tuple[int, list[str]]] = []
    async with gpu_nodes(kclient, 3, labels):
        apply_text(crds, namespace, set_yaml("roll", 2, labels))
        await wait_set_ready(kclient, namespace, "roll", 2)

        # Watch every Workspace event from here on: after each one, how many of roll-0 / roll-1
        # are not WorkspaceReady (missing, deleting, or not ready for their current spec)?
        inf = Informer(kclient, WORKSPACE, namespace=namespace)

        def record(*_: Any) -> None:
            unready = []
            for i in range(2):
                ws = inf.store.get_by(namespace, f"roll-{i}")
                if ws is None or not workspace_ready(ws)[0]:
                    unready.append(f"roll-{i}")
            seen.append((len(unready), unready))

        inf.add_handler(FuncHandler(add=record, update=record, delete=record))
        await inf.start()
        try:
            assert await inf.wait_for_sync(30)
            uids = {n: w["metadata"]["uid"] for n, w in (await children(kclient, namespace, "roll")).items()}

            # 1. Another preset: a field the Workspace freezes, so each child is replaced.
            apply_text(crds, namespace, set_yaml("roll", 2, labels, preset={"name": OTHER_PRESET}))
            await wait_set_ready(kclient, namespace, "roll", 2)
            kids = await children(kclient, namespace, "roll")
            assert all(w["inference"]["preset"]["name"] == OTHER_PRESET for w in kids.values())
            assert all(uids[n] != w["metadata"]["uid"] for n, w in kids.items()), "not replaced"
            replaced = len(seen)

            # 2. An adapter: updated in place (same objects), the StatefulSet rolls its pod.
            uids = {n: w["metadata"]["uid"] for n, w in kids.items()}
            adapter = [{"source": {"name": "tone", "image": "registry.example/adapters/tone:1"}}]
            apply_text(
                crds, namespace, set_yaml("roll", 2, labels, preset={"name": OTHER_PRESET}, adapters=adapter)
            )

            async def updated_in_place() -> bool:
                kids = await children(kclient, namespace, "roll")
                return all(w.get("inference", {}).get("adapters") for w in kids.values())

            await wait_for(updated_in_place, "both Workspaces carry the adapter")
            await wait_set_ready(kclient, namespace, "roll", 2)
            kids = await children(kclient, namespace, "roll")
            assert {n: w["metadata"]["uid"] for n, w in kids.items()} == uids, "replaced, not updated"
        finally:
            await inf.stop()
    worst = max(n for n, _ in seen)
    assert worst <= 1, [s for s in seen if s[0] > 1][:5]
    # Both rolls really took each Workspace out of service once (the watch saw it).
    assert any(n == 1 for n, _ in seen[:replaced]) and any(n == 1 for n, _ in seen[replaced:]), seen


async def test_hpa_resolves_the_scale_subresource(
    sets: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    """An HPA targeting the set is admitted and kcm's HPA controller reads its scale (AbleToScale
    True, SucceededGetScale: no FailedGetScale). No metrics API runs in the test cluster, so the
    HPA cannot compute a recommendation (ScalingActive False); that part is not tested here."""
    labels = {"apps": uniq("hpa")}
    async with gpu_nodes(kclient, 1, labels):
        apply_text(crds, namespace, set_yaml("auto", 1, labels))
        await wait_set_ready(kclient, namespace, "auto", 1)
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "auto", "namespace": namespace},
            "spec": {
                "scaleTargetRef": {"apiVersion": "kaito.sh/v1beta1", "kind": "InferenceSet", "name": "auto"},
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            },
        }
        await kclient.create(hpa)

        async def able() -> dict[str, Any] | None:
            got = await kclient.get(HPA, "auto", namespace, cached=False)
            for c in (got.get("status") or {}).get("conditions") or ():
                if c["type"] == "AbleToScale" and c["status"] == "True":
                    return got
            return None

        got = await wait_for(able, "the HPA's AbleToScale=True", timeout=120)
        conds = {c["type"]: c for c in got["status"]["conditions"]}
        assert conds["AbleToScale"]["reason"] == "SucceededGetScale", conds
        events = crds.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=auto"
        ).stdout
        assert "FailedGetScale" not in events, events
        with contextlib.suppress(NotFoundError):
            await kclient.delete(HPA, "auto", namespace)


async def test_set_status_is_silent_when_converged(
    sets: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    labels = {"apps": uniq("quiet")}
    async with gpu_nodes(kclient, 1, labels):
        apply_text(crds, namespace, set_yaml("quiet", 1, labels))
        first = await wait_set_ready(kclient, namespace, "quiet", 1)
        # A no-op re-apply changes nothing: no new generation, no status write.
        apply_text(crds, namespace, set_yaml("quiet", 1, labels))
        ws = (await children(kclient, namespace, "quiet"))["quiet-0"]
        assert sets.op is not None and sets.op.inferenceset is not None
        assert sets.op.inferenceset.controller is not None
        from kaito.runtime import Request

        await sets.op.inferenceset.reconcile(Request(namespace, "quiet"))
        again = await get_set(kclient, namespace, "quiet")
        assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        ws_again = (await children(kclient, namespace, "quiet"))["quiet-0"]
        assert ws_again["metadata"]["resourceVersion"] == ws["metadata"]["resourceVersion"]
