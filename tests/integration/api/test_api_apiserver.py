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
        if f.name == "kustomization.yaml":  # kustomize's own file, not an object
            continue
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
    # -o wide of the preferred version (v1beta1): upstream's columns, with WorkspaceReady.
    wide = kubectl(crds, "get", "wks", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == [
        "NAME",
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "JOBSTARTED",
        "WORKSPACESUCCEEDED",
        "WORKSPACEREADY",
        "TARGETNODECOUNT",
        "STATE",
        "AGE",
    ]
    beta_row = next(line for line in wide if line.startswith("workspace-phi-3-mini ")).split()
    assert beta_row[-3:-1] == ["1", "Ready"]
    # v1alpha1 keeps the seed's wide columns.
    alpha = "workspaces.v1alpha1.kaito.sh"
    wide = kubectl(crds, "get", alpha, "-n", namespace, "-o", "wide").stdout.splitlines()
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
    alpha_row = next(line for line in wide if line.startswith("workspace-phi-3-mini ")).split()
    assert alpha_row[-3:-1] == ["Ready", "1"]
    default = kubectl(crds, "get", alpha, "-n", namespace).stdout.splitlines()[0].split()
    assert default == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
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


def _full(name: str, version: str, kind: str) -> dict[str, Any]:
    """Every spec field the shape has (upstream's v1beta1 fields included) set to a non-default."""
    body: dict[str, Any] = {
        "apiVersion": f"kaito.sh/{version}",
        "kind": "Workspace",
        "metadata": {"name": name, "annotations": {"kaito.sh/enablelb": "True", "kaito.sh/runtime": "vllm"}},
        "resource": {
            "count": 2,
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {
                "matchLabels": {"apps": name},
                "matchExpressions": [{"key": "zone", "operator": "In", "values": ["1", "2"]}],
            },
            "preferredNodes": ["node-a", "node-b"],
            "partition": {"mode": "accelerator", "count": 2},
        },
    }
    if kind == "inference":
        body["inference"] = {
            "preset": {
                "name": "phi-4",
                "accessMode": "private",
                "presetOptions": {
                    "image": "r.io/phi-4:1",
                    "imagePullSecrets": ["pull"],
                    "modelAccessSecret": "hf-token",
                },
            },
            "config": "cfg",
            "adapters": [
                {"source": {"name": "a", "urls": ["https://example.com/a.safetensors"]}, "strength": "0.5"},
                {"source": {"name": "b", "image": "r.io/b:1", "imagePullSecrets": ["p2"]}},
            ],
        }
    else:
        body["tuning"] = {
            "preset": {"name": "phi-4", "accessMode": "public"},
            "method": "qlora",
            "config": "cfg",
            "input": {"name": "data", "volumeSource": {"persistentVolumeClaim": {"claimName": "data"}}},
            "output": {"volumeSource": {"emptyDir": {}}},
        }
    return body


FULL_STATUS: dict[str, Any] = {
    "workerNodes": ["node-a", "node-b"],
    "conditions": [
        {
            "type": t,
            "status": "True" if t != "WorkspaceDeleting" else "False",
            "reason": "Because",
            "message": f"{t} says so",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 1,
        }
        for t in (
            "NodeClaimReady",
            "ResourceReady",
            "InferenceReady",
            "JobStarted",
            "WorkspaceDeleting",
            "WorkspaceSucceeded",
            "WorkspaceReady",
        )
    ],
    "state": "NotReady",
    "targetNodeCount": 2,
    "observedGeneration": 1,
    "performance": {
        "metrics": {
            "peakTokensPerMinute": {
                "description": "stress/high-concurrency",
                "value": "123456",
                "unit": "tokens/min",
                "config": {"engine": "vllm"},
            },
            "ttftP50": {"description": "latency/single", "value": "0.21"},
        }
    },
}


def _without_api_version(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "apiVersion"}


@pytest.mark.parametrize("kind", ["inference", "tuning"])
@pytest.mark.parametrize(("write", "read"), [("v1alpha1", "v1beta1"), ("v1beta1", "v1alpha1")])
async def test_lossless_round_trip_with_status(
    crds: Any, api_client: Any, namespace: str, write: str, read: str, kind: str
) -> None:
    """Create in one version, read in the other, write through it, read back: nothing is lost,
    status (performance included) and every spec field alike, and the models agree with the
    apiserver on what the other version looks like."""
    from kubernetes_asyncio.client import CustomObjectsApi

    from kaito.api.workspace import Workspace

    api = CustomObjectsApi(api_client)
    group, plural = "kaito.sh", "workspaces"
    name = f"full-{kind[:3]}-{write}"
    body = _full(name, write, kind)
    await api.create_namespaced_custom_object(group, write, namespace, plural, body)
    obj = await api.get_namespaced_custom_object(group, write, namespace, plural, name)
    obj["status"] = FULL_STATUS
    await api.replace_namespaced_custom_object_status(group, write, namespace, plural, name, obj)

    a = await api.get_namespaced_custom_object(group, write, namespace, plural, name)
    b = await api.get_namespaced_custom_object(group, read, namespace, plural, name)
    assert b["apiVersion"] == f"kaito.sh/{read}"
    assert _without_api_version(a) == _without_api_version(b)
    assert b["status"] == FULL_STATUS
    for key in ("resource", kind):
        assert b[key] == body[key], key
    assert b["metadata"]["annotations"] == body["metadata"]["annotations"]
    assert Workspace.from_manifest(a).as_version(read).to_manifest() == b
    assert Workspace.from_manifest(b).as_version(write).to_manifest() == a

    # Write the spec and the status through the other version; the first one sees all of it.
    b[kind]["config"] = "other-cfg"
    b = await api.replace_namespaced_custom_object(group, read, namespace, plural, name, b)
    b["status"]["state"] = "Ready"
    b["status"]["performance"]["metrics"]["ttftP50"]["value"] = "0.19"
    b = await api.replace_namespaced_custom_object_status(group, read, namespace, plural, name, b)
    back = await api.get_namespaced_custom_object(group, write, namespace, plural, name)
    assert back["apiVersion"] == f"kaito.sh/{write}"
    assert _without_api_version(back) == _without_api_version(
        await api.get_namespaced_custom_object(group, read, namespace, plural, name)
    )
    assert back[kind]["config"] == "other-cfg"
    assert {k: v for k, v in back[kind].items() if k != "config"} == {
        k: v for k, v in body[kind].items() if k != "config"
    }
    assert back["resource"] == body["resource"]
    want = {**FULL_STATUS, "state": "Ready"}
    want["performance"] = {
        "metrics": {
            **FULL_STATUS["performance"]["metrics"],
            "ttftP50": {"description": "latency/single", "value": "0.19"},
        }
    }
    assert back["status"] == want


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
