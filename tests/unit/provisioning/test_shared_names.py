"""The names every side of provisioning must spell alike have one owner (kaito.nodes, kaito.api).

A second spelling of ``nvidia.com/gpu`` or of the ``sku=gpu`` taint, or a second NodeClaim kind,
is how a node nobody's pods can use gets made; so the source is searched for them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kaito.api.nodeclaim import GPU_TAINT_KEY, GPU_TAINT_VALUE
from kaito.nodes import (
    GPU_RESOURCE,
    NodeRequest,
    gpu_taint,
    gpu_tolerations,
    is_node_ready,
    node_gpus,
    node_shape,
)
from kaito.provisioners.byo import BYOProvisioner, assess
from kaito.provisioners.gpu_provisioner import nodeclaim_manifest

SRC = Path(__file__).resolve().parents[3] / "src" / "kaito"
#: Where the literals may be written: their owners, and the two packages that may not import them
#: (the runtime knows nothing of kaito; envtest is a standalone control plane).
OWNERS = {"nodes/node.py", "api/nodeclaim/types.py"}
STANDALONE = ("runtime/", "envtest/")


@pytest.mark.parametrize(
    "pattern",
    [
        r'"nvidia\.com/gpu"',
        r'"key":\s*"sku"',
        r'GVK\(\s*"karpenter\.sh"',
        r'GVK\(\s*""\s*,\s*"v1"\s*,\s*"Node"\s*\)',
    ],
)
def test_each_shared_name_is_written_once(pattern: str) -> None:
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel in OWNERS or rel.startswith(STANDALONE):
            continue
        if re.search(pattern, path.read_text()):
            found.append(rel)
    assert not found, f"{pattern} written outside its owner (import it from kaito.nodes): {found}"


def test_the_toleration_tolerates_the_taint_every_backend_writes() -> None:
    taint = gpu_taint()
    assert (taint["key"], taint["value"]) == (GPU_TAINT_KEY, GPU_TAINT_VALUE)
    assert any(
        t["key"] == taint["key"] and t.get("value") == taint["value"] and t["effect"] == taint["effect"]
        for t in gpu_tolerations()
    )
    assert any(t["key"] == GPU_RESOURCE and t["operator"] == "Exists" for t in gpu_tolerations())
    request = NodeRequest("ws", "default", "uid", "Standard_NC6s_v3", 1)
    assert nodeclaim_manifest(request)["spec"]["taints"] == [taint]
    placement = BYOProvisioner.placement(None, request, assess(request, []))  # type: ignore[arg-type]
    assert placement.tolerations == gpu_tolerations()
    placement.tolerations[0]["key"] = "mutated"  # a fresh copy each time
    assert gpu_tolerations()[0]["key"] == GPU_RESOURCE


def test_the_instance_type_is_resolved_once_per_request_and_shape() -> None:
    request = NodeRequest("ws", "default", "uid", "standard_nc6s_v3", 1)
    assert request.sku is not None and request.sku.name == "Standard_NC6s_v3" and request.sku.gpu_count == 1
    assert NodeRequest("ws", "default", "uid", None, 1).sku is None
    shape = node_shape("Standard_NC6s_v3")
    assert shape.sku == request.sku and shape.capacity()[GPU_RESOURCE] == "1"
    assert node_shape("Standard_D4s_v3").sku is None


def test_node_readiness_and_gpus() -> None:
    node = {
        "metadata": {"labels": {"nvidia.com/gpu.count": "2"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert is_node_ready(node) and node_gpus(node) == 2
    node["status"]["allocatable"] = {GPU_RESOURCE: "4"}
    assert node_gpus(node) == 4
    assert not is_node_ready({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}})
    assert not is_node_ready({})
