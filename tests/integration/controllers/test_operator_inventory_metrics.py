"""Upstream's inventory gauges (kaito_workspace_count, kaito_workspace_preset_count,
kaito_inferenceset_count) on the operator's real /metrics endpoint, against a real apiserver.

The session cluster is shared with other tests, so every check is on what this test's own
objects add to the counts, read over HTTP from the port the operator's manager bound.
"""

from __future__ import annotations

from collections import defaultdict

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from workspace_helpers import Running, apply_text, gpu_nodes, uniq, wait_for, workspace_yaml

from kaito.controllers.inferenceset import INFERENCESET
from kaito.controllers.workspace import WORKSPACE
from kaito.envtest import Cluster
from kaito.operator import OperatorOptions
from kaito.operator.inventory import PHASES
from kaito.runtime import Client

pytestmark = pytest.mark.cluster

#: A preset no other controller test uses, so its count is this test's alone.
PRESET = "phi-3.5-mini-instruct"

Samples = dict[str, dict[str, float]]


async def scrape(operator: Running) -> Samples:
    """{metric: {label value: value}} for the three inventory gauges."""
    assert operator.op is not None and operator.op.manager.metrics_port
    url = f"http://127.0.0.1:{operator.op.manager.metrics_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    out: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        if family.name in ("kaito_workspace_count", "kaito_inferenceset_count"):
            for s in family.samples:
                out[family.name][s.labels["phase"]] = s.value
        elif family.name == "kaito_workspace_preset_count":
            for s in family.samples:
                out[family.name][s.labels["preset_name"]] = s.value
    return out


def set_yaml(name: str, labels: dict[str, str]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "InferenceSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "labelSelector": {"matchLabels": labels},
                "template": {
                    "resource": {"instanceType": "Standard_NC6s_v3"},
                    "inference": {"preset": {"name": PRESET}},
                },
            },
        }
    )


async def test_inventory_gauges_follow_the_cluster(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    # the fixture's operator serves no metrics; this one binds a free loopback port
    operator.options = OperatorOptions(metrics_bind_address="127.0.0.1:0", health_probe_bind_address="0")
    await operator.restart()
    before = await scrape(operator)
    # every phase is exported even at zero, with upstream's words
    assert set(before["kaito_workspace_count"]) == set(PHASES)
    assert set(before["kaito_inferenceset_count"]) == set(PHASES)
    total_ws = sum(before["kaito_workspace_count"].values())
    total_sets = sum(before["kaito_inferenceset_count"].values())
    preset_before = before["kaito_workspace_preset_count"].get(PRESET, 0.0)

    labels = {"apps": uniq("inv")}
    ready_name, waiting_name, set_name = uniq("ready"), uniq("waiting"), uniq("set")
    async with gpu_nodes(kclient, 1, labels):
        apply_text(crds, namespace, workspace_yaml(ready_name, labels, preset={"name": PRESET}))
        # no node carries these labels: it stays short of WorkspaceSucceeded
        apply_text(
            crds, namespace, workspace_yaml(waiting_name, {"apps": uniq("none")}, preset={"name": PRESET})
        )
        apply_text(crds, namespace, set_yaml(set_name, {"apps": uniq("none")}))

        async def counted() -> Samples | None:
            now = await scrape(operator)
            ws = now["kaito_workspace_count"]
            ok = (
                # two Workspaces of ours plus the set's child
                sum(ws.values()) == total_ws + 3
                and now["kaito_workspace_preset_count"].get(PRESET, 0.0) == preset_before + 3
                and ws["succeeded"] >= before["kaito_workspace_count"]["succeeded"] + 1
                and sum(now["kaito_inferenceset_count"].values()) == total_sets + 1
            )
            return now if ok else None

        now = await wait_for(counted, "the gauges to count this test's objects", timeout=120)
        # the phase each object is in, as the API reports it, is the phase it is counted in
        ready = await kclient.get(WORKSPACE, ready_name, namespace, cached=False)
        assert any(
            c["type"] == "WorkspaceSucceeded" and c["status"] == "True" for c in ready["status"]["conditions"]
        )
        the_set = await kclient.get(INFERENCESET, set_name, namespace, cached=False)
        assert not the_set["metadata"].get("deletionTimestamp")
        assert now["kaito_inferenceset_count"]["succeeded"] == before["kaito_inferenceset_count"]["succeeded"]

        crds.kubectl("delete", "inferenceset", set_name, "-n", namespace, "--wait=false")
        for name in (ready_name, waiting_name):
            crds.kubectl("delete", "workspace", name, "-n", namespace, "--wait=false")

        async def gone() -> bool:
            now = await scrape(operator)
            return (
                now["kaito_workspace_preset_count"].get(PRESET, 0.0) == preset_before
                and sum(now["kaito_inferenceset_count"].values()) == total_sets
            )

        await wait_for(gone, "the gauges to drop this test's objects", timeout=120)
