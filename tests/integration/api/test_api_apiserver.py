"""The generated CRDs against a real kube-apiserver: the seed applies unchanged, kubectl shows
the documented columns, CEL rules hold without the webhook, and versions convert both ways."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "config" / "crd"
SEED = ROOT / "tests" / "unit" / "api" / "seed"


def kubectl(cluster: Any, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    res: subprocess.CompletedProcess[str] = cluster.kubectl(*args, check=False)
    if ok:
        assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
    return res


@pytest.fixture(scope="module")
def crds(kube_cluster: Any) -> Any:
    for f in sorted(CRDS.glob("*.yaml")):
        kubectl(kube_cluster, "apply", "--server-side", "--force-conflicts", "-f", str(f))
    kubectl(
        kube_cluster,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/workspaces.kaito.sh",
        "crd/nodeclaims.karpenter.sh",
        "crd/nodepools.karpenter.sh",
    )
    return kube_cluster


def test_seed_applies_unchanged_and_kubectl_shows_the_columns(crds: Any, namespace: str) -> None:
    for name in ("phi3_inference.yaml", "phi3_adapters_inference.yaml"):
        kubectl(crds, "apply", "-n", namespace, "-f", str(SEED / name))
    out = kubectl(crds, "get", "workspace", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert set(rows) == {"workspace-phi-3-mini", "workspace-phi-3-mini-adapter"}
    assert rows["workspace-phi-3-mini"][1] == "Standard_NC6s_v3"

    status = {
        "status": {
            "conditions": [
                {"type": t, "status": "True"} for t in ("ResourceReady", "InferenceReady", "WorkspaceReady")
            ],
            "state": "Ready",
            "targetNodeCount": 1,
        }
    }
    kubectl(
        crds,
        "patch",
        "workspace",
        "workspace-phi-3-mini",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    row = kubectl(crds, "get", "wk", "workspace-phi-3-mini", "-n", namespace, "--no-headers").stdout.split()
    assert row[:5] == ["workspace-phi-3-mini", "Standard_NC6s_v3", "True", "True", "True"]
    wide = kubectl(crds, "get", "wks", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == [
        "NAME",
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "JOBSTARTED",
        "WORKSPACESUCCEEDED",
        "WORKSPACEREADY",
        "STATE",
        "TARGETNODES",
        "AGE",
    ]
    assert "Ready" in next(line for line in wide if line.startswith("workspace-phi-3-mini ")).split()
    assert "workspace-phi-3-mini" in kubectl(crds, "get", "kaito", "-n", namespace).stdout

    # The seed's tuning Workspaces reuse the names: switching inference -> tuning is refused.
    res = kubectl(crds, "apply", "-n", namespace, "-f", str(SEED / "phi3_tuning.yaml"), ok=False)
    assert res.returncode != 0 and "inference and tuning cannot be swapped" in res.stderr
    for name in ("phi3_inference.yaml", "phi3_adapters_inference.yaml"):
        kubectl(crds, "delete", "-n", namespace, "-f", str(SEED / name), "--wait=true")
    for name in ("phi3_tuning.yaml", "phi3_adapters_tuning.yaml"):
        kubectl(crds, "apply", "-n", namespace, "-f", str(SEED / name))
    got = json.loads(
        kubectl(crds, "get", "workspace", "workspace-phi-3-mini", "-n", namespace, "-o", "json").stdout
    )
    assert got["tuning"]["method"] == "qlora" and got["tuning"]["preset"]["accessMode"] == "public"


def _ws(name: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": f"kaito.sh/{version}",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": name}},
        },
        "inference": {
            "preset": {"name": "phi-4"},
            "adapters": [{"source": {"name": "a", "image": "r.io/a:1"}, "strength": "0.5"}],
        },
    }


@pytest.mark.parametrize(("write", "read"), [("v1alpha1", "v1beta1"), ("v1beta1", "v1alpha1")])
async def test_version_round_trip(crds: Any, api_client: Any, namespace: str, write: str, read: str) -> None:
    from kubernetes_asyncio.client import CustomObjectsApi

    api = CustomObjectsApi(api_client)
    name = f"conv-{write}"
    body = _ws(name, write)
    await api.create_namespaced_custom_object("kaito.sh", write, namespace, "workspaces", body)
    got = await api.get_namespaced_custom_object("kaito.sh", read, namespace, "workspaces", name)
    assert got["apiVersion"] == f"kaito.sh/{read}"
    assert got["resource"] == body["resource"]
    assert got["inference"]["adapters"] == body["inference"]["adapters"]
    assert got["inference"]["preset"] == {"name": "phi-4", "accessMode": "public"}
    # An update through the other version keeps the object intact.
    got["metadata"].setdefault("labels", {})["touched"] = "yes"
    await api.replace_namespaced_custom_object("kaito.sh", read, namespace, "workspaces", name, got)
    back = await api.get_namespaced_custom_object("kaito.sh", write, namespace, "workspaces", name)
    assert back["metadata"]["labels"]["touched"] == "yes" and back["resource"] == body["resource"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"tuning": {"input": {"image": "x"}, "output": {"volumeSource": {}}}},
            "exactly one of inference or tuning",
        ),
        (
            {"inference": {"preset": {"name": "phi-4"}, "template": {"spec": {}}}},
            "exactly one of preset or template",
        ),
        (
            {
                "inference": {
                    "preset": {"name": "phi-4"},
                    "adapters": [
                        {"source": {"name": "a", "image": "i"}},
                        {"source": {"name": "a", "image": "j"}},
                    ],
                }
            },
            "adapter source names must be unique",
        ),
        (
            {
                "inference": {
                    "preset": {"name": "phi-4"},
                    "adapters": [{"source": {"name": "a", "image": "i"}, "strength": "1.5"}],
                }
            },
            "strength",
        ),
        ({"resource": {"labelSelector": {}}}, "needs at least one label"),
    ],
)
def test_cel_rules_hold_without_the_webhook(
    crds: Any, namespace: str, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    body = {**_ws("cel", "v1beta1"), **change}
    f = tmp_path / "ws.json"
    f.write_text(json.dumps(body))
    res = kubectl(crds, "create", "-n", namespace, "-f", str(f), ok=False)
    assert res.returncode != 0 and message in res.stderr, res.stderr


def test_tuning_rules_and_immutability(crds: Any, namespace: str, tmp_path: Path) -> None:
    base = {k: v for k, v in _ws("tune", "v1beta1").items() if k != "inference"}
    base["tuning"] = {
        "preset": {"name": "phi-4"},
        "method": "lora",
        "input": {"urls": ["https://example.com/d.parquet"]},
        "output": {"image": "r.io/out:1", "imagePushSecret": "s"},
    }
    f = tmp_path / "ws.json"
    for bad, message in (
        ({"urls": ["http://169.254.169.254/x"]}, "must not point at loopback"),
        ({"urls": ["ftp://e.com/x"]}, "should match"),
        ({"urls": ["https://e.com/x"], "image": "i"}, "exactly one of urls, image or volumeSource"),
    ):
        f.write_text(json.dumps({**base, "tuning": {**base["tuning"], "input": bad}}))
        res = kubectl(crds, "create", "-n", namespace, "-f", str(f), ok=False)
        assert res.returncode != 0 and message in res.stderr, res.stderr
    f.write_text(json.dumps({**base, "tuning": {**base["tuning"], "output": {"image": "r.io/o:1"}}}))
    res = kubectl(crds, "create", "-n", namespace, "-f", str(f), ok=False)
    assert "needs imagePushSecret" in res.stderr

    f.write_text(json.dumps(base))
    kubectl(crds, "create", "-n", namespace, "-f", str(f))
    for patch, message in (
        ({"resource": {"instanceType": "Standard_NC48ads_A100_v4"}}, "instanceType is immutable"),
        ({"resource": {"labelSelector": {"matchLabels": {"apps": "other"}}}}, "labelSelector is immutable"),
        ({"tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}}}, "preset.name is immutable"),
    ):
        res = kubectl(
            crds,
            "patch",
            "workspace",
            "tune",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps(patch),
            ok=False,
        )
        assert res.returncode != 0 and message in res.stderr, res.stderr
    kubectl(
        crds,
        "patch",
        "workspace",
        "tune",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"resource": {"count": 2}}),
    )
