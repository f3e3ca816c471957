"""The chart's values as Helm users expect them, checked with the real helm: every scheduling and
metadata value reaches the Pods it names, the schema refuses typos and wrong types with the key's
name, several values files lint and render, and the kustomize cert-manager overlay and samples
render what the chart and the README say."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import CHART, LOCAL_IMAGE, REPO, helm_render, kubectl_binary, kustomize
from test_chart import normalized

from kaito.envtest import Cluster
from kaito.envtest.helm import ensure_helm

EVERYTHING: dict[str, Any] = {
    "replicaCount": 3,
    "imagePullSecrets": [{"name": "regcred"}],
    "podAnnotations": {"example.com/scrape": "yes"},
    "podLabels": {"team": "ml", "app.kubernetes.io/component": "hijack"},
    "nodeSelector": {"kubernetes.io/os": "linux", "pool": "system"},
    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "controller"}},
                    },
                }
            ]
        }
    },
    "priorityClassName": "system-cluster-critical",
    "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
    "nodeProvisionerController": {
        "enabled": True,
        "replicaCount": 2,
        "podAnnotations": {"np": "1"},
        "podLabels": {"np-team": "infra"},
        "nodeSelector": {"pool": "infra"},
        "tolerations": [{"key": "infra", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "priorityClassName": "np-priority",
        "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"cpu": "250m", "memory": "256Mi"},
        },
    },
}


@pytest.fixture(scope="module")
def helm() -> str:
    return str(ensure_helm())


def write(tmp_path: Path, name: str, values: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def pod_spec(objs: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
    return dep, dep["spec"]["template"]


def test_every_value_reaches_the_pods_it_names(helm: str, tmp_path: Path) -> None:
    objs = helm_render(helm, values=[write(tmp_path, "all.yaml", EVERYTHING)])
    dep, tpl = pod_spec(objs, "kaito-controller")
    spec = tpl["spec"]
    assert dep["spec"]["replicas"] == 3
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert tpl["metadata"]["annotations"] == {"example.com/scrape": "yes"}
    # the selector's label cannot be replaced by podLabels
    assert tpl["metadata"]["labels"] == {"team": "ml", "app.kubernetes.io/component": "controller"}
    assert spec["nodeSelector"] == EVERYTHING["nodeSelector"]
    assert spec["tolerations"] == EVERYTHING["tolerations"]
    assert spec["affinity"] == EVERYTHING["affinity"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["containers"][0]["resources"] == EVERYTHING["resources"]

    np = EVERYTHING["nodeProvisionerController"]
    dep, tpl = pod_spec(objs, "kaito-node-provisioner")
    spec = tpl["spec"]
    assert dep["spec"]["replicas"] == 2
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert tpl["metadata"]["annotations"] == {"np": "1"}
    assert tpl["metadata"]["labels"] == {
        "np-team": "infra",
        "app.kubernetes.io/component": "node-provisioner",
    }
    for key in ("nodeSelector", "tolerations", "priorityClassName"):
        assert spec[key] == np[key], key
    assert spec["containers"][0]["resources"] == np["resources"]


def test_workload_images_sit_beside_the_controller_image_unless_named(helm: str) -> None:
    """kaito publishes no images, so the inference and tuning images the controller writes into
    pods must come from the user's registry too: by default beside image.repository."""

    def args(*sets: str) -> tuple[list[str], list[str]]:
        objs = helm_render(helm, "nodeProvisionerController.enabled=true", *sets)
        ctl = pod_spec(objs, "kaito-controller")[1]["spec"]["containers"][0]["args"]
        np = pod_spec(objs, "kaito-node-provisioner")[1]["spec"]["containers"][0]["args"]
        return ctl, np

    ctl, np = args("image.repository=reg.example:5000/team/kaito/workspace", "image.tag=1.2.3")
    assert "--inference-image=reg.example:5000/team/kaito/inference:1.2.3" in ctl
    assert "--tuning-image=reg.example:5000/team/kaito/tuning:1.2.3" in ctl
    assert not [a for a in np if a.startswith("--real-nodes")]
    ctl, np = args("inferenceImage=mirror.example/vllm:7", "tuningImage=mirror.example/peft:7")
    assert "--inference-image=mirror.example/vllm:7" in ctl and "--tuning-image=mirror.example/peft:7" in ctl
    _, np = args("nodeProvisionerController.realNodes=apps=phi-3")
    assert "--real-nodes=apps=phi-3" in np


def test_several_values_files_lint_and_layer_in_order(helm: str, tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", {"nodeSelector": {"pool": "a"}, "logLevel": "debug"})
    prod = write(tmp_path, "prod.yaml", {"nodeSelector": {"pool": "b"}, "replicaCount": 4})
    for files in ([base], [base, prod], [write(tmp_path, "all.yaml", EVERYTHING), prod]):
        args = [a for f in files for a in ("-f", str(f))]
        image = ["--set", f"image.repository={LOCAL_IMAGE}"]
        lint = subprocess.run(
            [helm, "lint", "--strict", str(CHART), *image, *args], capture_output=True, text=True
        )
        assert lint.returncode == 0 and "[WARNING]" not in lint.stdout, lint.stdout + lint.stderr
    dep, tpl = pod_spec(helm_render(helm, values=[base, prod]), "kaito-controller")
    assert tpl["spec"]["nodeSelector"] == {"pool": "b"} and dep["spec"]["replicas"] == 4
    assert "--log-level=debug" in tpl["spec"]["containers"][0]["args"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCont": 2}, "replicaCont"),  # a typo is named, not ignored
        ({"replicaCount": "two"}, "replicaCount"),
        ({"tolerations": {"key": "x"}}, "tolerations"),
        ({"imagePullSecrets": ["regcred"]}, "imagePullSecrets"),
        ({"nodeProvisioner": "gpu-provisoner"}, "nodeProvisioner"),
        ({"nodeProvisionerController": {"replicas": 2}}, "replicas"),
        ({"podLabels": {"team": 7}}, "podLabels"),
    ],
    ids=["typo", "int", "list", "secret-objects", "enum", "nested-typo", "label-string"],
)
def test_the_schema_refuses_a_bad_value_naming_it(
    helm: str, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    bad = write(tmp_path, "bad.yaml", values)
    for cmd in (
        ["lint", "--strict", str(CHART), "-f", str(bad)],
        ["template", "kaito", str(CHART), "-f", str(bad)],
    ):
        proc = subprocess.run([helm, *cmd], capture_output=True, text=True)
        assert proc.returncode != 0, f"helm {cmd[0]} accepted {values}"
        assert "values don't meet the specifications of the schema" in proc.stdout + proc.stderr
        assert message in proc.stdout + proc.stderr


@pytest.mark.cluster
def test_notes_tell_how_to_check_and_apply_a_first_workspace(helm: str, kube_cluster: Cluster) -> None:
    """NOTES.txt as `helm install` prints it, from a server-side dry run on the real apiserver
    (`helm template` does not render NOTES; a client dry run assumes Kubernetes 1.20, which the
    chart's kubeVersion refuses). Nothing is installed."""
    for byo, sets in ((True, []), (False, ["--set", "nodeProvisioner=gpu-provisioner"])):
        out = subprocess.run(
            [
                helm,
                "install",
                "kaito",
                str(CHART),
                "--set",
                f"image.repository={LOCAL_IMAGE}",
                "-n",
                "kaito-system",
                "--dry-run=server",
                "--kubeconfig",
                str(kube_cluster.kubeconfig),
                *sets,
            ],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        notes = out.stdout.split("NOTES:", 1)[1]
        for line in (
            "kubectl -n kaito-system rollout status deployment/kaito-controller",
            "kind: Workspace",
            "name: phi-3-mini-4k-instruct",
            "kubectl get svc workspace-phi-3-mini",
            "curl -X POST http://workspace-phi-3-mini/chat",
        ):
            assert line in notes, line
        assert ("kubectl label node <gpu-node> apps=phi-3" in notes) is byo


def test_cert_manager_overlay_renders_what_the_chart_does(helm: str) -> None:
    kubectl = kubectl_binary()
    kust = normalized(
        [
            o
            for o in kustomize(REPO / "config" / "cert-manager", kubectl)
            if o["kind"] != "CustomResourceDefinition"
        ]
    )
    chart = normalized(helm_render(helm, "createNamespace=true", "webhook.certs=cert-manager"))
    assert sorted(chart) == sorted(kust)
    for key, obj in kust.items():
        assert chart[key] == obj, key


def test_samples_are_the_readmes_workspace() -> None:
    (sample,) = kustomize(REPO / "config" / "samples", kubectl_binary())
    seed = yaml.safe_load((REPO / "examples" / "inference" / "kaito_workspace_phi_3.yaml").read_text())
    assert sample == seed
