"""The Helm chart, checked with a real helm (built from its Go module into kaito's asset cache):
lint clean, CRDs identical to the generated ones, and the same objects as kustomize renders for
the same settings (Helm's own bookkeeping labels aside); the render is admitted by the apiserver."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import CHART, LOCAL_IMAGE, REPO, helm_render, kubectl_binary, kustomize

from kaito.envtest import Cluster
from kaito.envtest.helm import ensure_helm

HELM_LABELS = (
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
)
ALL_ON = [
    "nodeProvisionerController.enabled=true",
    "webhook.certs=cert-manager",
    "metrics.serviceMonitor.enabled=true",
    "createNamespace=true",
]


@pytest.fixture(scope="module")
def helm() -> str:
    return str(ensure_helm())


def normalized(objs: list[dict[str, Any]]) -> dict[tuple[str, str, str], Any]:
    out = {}
    for o in objs:
        labels = o["metadata"].get("labels") or {}
        for k in HELM_LABELS:
            labels.pop(k, None)
        out[(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])] = o
    return out


def test_pod_policy_value_reaches_the_controller(helm: str) -> None:
    """Issue 21: refusePrivilegedPods is on unless set to false, and false reaches the flag."""

    def args(*sets: str) -> list[str]:
        dep = normalized(helm_render(helm, *sets))[("Deployment", "kaito-system", "kaito-controller")]
        return list(dep["spec"]["template"]["spec"]["containers"][0]["args"])

    assert "--allow-privileged-pods" not in args()
    assert "--allow-privileged-pods" not in args("refusePrivilegedPods=true")
    assert "--allow-privileged-pods" in args("refusePrivilegedPods=false")


@pytest.mark.parametrize("sets", [[], ALL_ON], ids=["defaults", "all-options"])
def test_helm_lint_is_clean(helm: str, sets: list[str]) -> None:
    args = [a for s in sets for a in ("--set", s)]
    args = ["--set", f"image.repository={LOCAL_IMAGE}", *args]
    proc = subprocess.run([helm, "lint", "--strict", str(CHART), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_chart_crds_are_the_generated_ones() -> None:
    generated = sorted(p.name for p in (REPO / "config" / "crd").glob("*.sh_*.yaml"))
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == generated
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "config" / "crd" / name).read_bytes(), name


def test_chart_and_kustomize_render_the_same_objects(helm: str) -> None:
    kubectl = kubectl_binary()
    kust = normalized(
        [
            o
            for o in kustomize(REPO / "config" / "default", kubectl)
            if o["kind"] != "CustomResourceDefinition"
        ]
    )
    chart = normalized(helm_render(helm, "createNamespace=true"))
    assert sorted(chart) == sorted(kust)
    for key, obj in kust.items():
        assert chart[key] == obj, key
    # The optional node-provisioner: the chart's switch renders config/node-provisioner.
    np_kust = normalized(kustomize(REPO / "config" / "node-provisioner", kubectl))
    np_chart = {
        k: v
        for k, v in normalized(helm_render(helm, "nodeProvisionerController.enabled=true")).items()
        if "node-provisioner" in k[2]
    }
    assert sorted(np_chart) == sorted(np_kust)
    for key, obj in np_kust.items():
        assert np_chart[key] == obj, key


def test_settings_reach_the_deployment(helm: str) -> None:
    objs = normalized(
        helm_render(
            helm,
            "nodeProvisioner=gpu-provisioner",
            "cloudProvider=aws",
            "image.tag=9.9.9",
            "logLevel=debug",
            "replicaCount=3",
            *ALL_ON,
        )
    )
    dep = objs[("Deployment", "kaito-system", "kaito-controller")]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert dep["spec"]["replicas"] == 3 and c["image"].endswith(":9.9.9")
    assert {
        "--node-provisioner=gpu-provisioner",
        "--log-level=debug",
        "--webhook-certs=external",
        "--feature-gates=vLLM=true",
    } <= set(c["args"])
    assert {"name": "CLOUD_PROVIDER", "value": "aws"} in c["env"]
    assert any(
        v.get("secret", {}).get("secretName") == "kaito-webhook-server-cert"
        for v in dep["spec"]["template"]["spec"]["volumes"]
    )
    assert ("ServiceMonitor", "kaito-system", "kaito-controller-metrics") in objs
    assert ("Certificate", "kaito-system", "kaito-serving-cert") in objs
    # cert-manager owns the certificates: no Secret/caBundle rights for the controller.
    assert ("ClusterRole", "", "kaito-webhook-certs") not in objs
    hook = objs[("ValidatingWebhookConfiguration", "", "kaito-validating-webhook-configuration")]
    assert (
        hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "kaito-system/kaito-serving-cert"
    )


def test_helm_render_is_admitted_by_the_apiserver(
    helm: str, audited_cluster: Cluster, tmp_path: Path
) -> None:
    """Server-side dry run of the whole default render (CRDs first, for real)."""
    cluster = audited_cluster
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=60s")
    objs = helm_render(helm, "createNamespace=true")
    namespace = [o for o in objs if o["kind"] == "Namespace"]
    objs = [o for o in objs if o["kind"] != "Namespace"]
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(namespace)
    )
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "-f",
        "-",
        input=yaml.safe_dump_all(objs),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PodSecurity" not in proc.stderr, proc.stderr
    assert proc.stdout.count("serverside-applied (server dry run)") == len(objs), proc.stdout


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["replicaCount=2", "leaderElection=false"], "replicaCount > 1 needs leaderElection=true"),
        # the schema refuses it before the template's own check would
        (["webhook.certs=acme"], "at '/webhook/certs': value must be one of 'self-signed', 'cert-manager'"),
        # no published image to default to: the install names the value and how to fill it
        (["image.repository="], "image.repository is empty: kaito publishes no images. Build one with"),
        (
            ["nodeProvisioner=karpenter", "karpenterProvider=azure", "karpenterNodeClass=a/B/c"],
            "karpenterNodeClass and karpenterProvider are exclusive",
        ),
        (["nodeProvisioner=karpenter", "karpenterProvider=gcp"], 'karpenterProvider "gcp" has no entry'),
    ],
)
def test_bad_values_fail_with_the_fix(helm: str, sets: list[str], message: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        helm_render(helm, *sets)
    assert message in failed.value.stderr


def test_chart_settings_reach_the_backends(helm: str) -> None:
    """The rendered container's args and env, given to the real ``kaito controller`` command
    line: the chart's cloudProvider=aws (env CLOUD_PROVIDER) reaches the gpu-provisioner backend,
    karpenterNodeClass reaches the karpenter backend (issue 20, bug 10)."""
    from controller_backend import backend_of

    def backend_for(*sets: str) -> Any:
        objs = normalized(helm_render(helm, *sets))
        c = objs[("Deployment", "kaito-system", "kaito-controller")]["spec"]["template"]["spec"][
            "containers"
        ][0]
        env: dict[str, str | None] = {e["name"]: e["value"] for e in c["env"] if "value" in e}
        return backend_of(c["args"], env)

    assert backend_for("nodeProvisioner=gpu-provisioner", "cloudProvider=aws")["cloud"] == "aws"
    assert backend_for("nodeProvisioner=gpu-provisioner")["cloud"] == "azure"
    karpenter = backend_for(
        "nodeProvisioner=karpenter", "karpenterNodeClass=karpenter.k8s.aws/EC2NodeClass/gpu"
    )
    assert karpenter["node_class"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"}
    # karpenterProvider: upstream's node classes, created by kaito and chosen per Workspace
    azure = backend_for("nodeProvisioner=karpenter", "karpenterProvider=azure")
    assert azure["node_class"] == {
        "group": "karpenter.azure.com",
        "kind": "AKSNodeClass",
        "name": "image-family-ubuntu",
    }
    assert azure["node_classes"] == ["image-family-azure-linux", "image-family-ubuntu"]
    aws = backend_for("nodeProvisioner=karpenter", "karpenterProvider=aws")
    assert aws["node_class"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}
    rules = normalized(helm_render(helm, "nodeProvisioner=karpenter", "karpenterProvider=azure"))[
        ("ClusterRole", "", "kaito-controller")
    ]["rules"]
    assert {
        "apiGroups": ["karpenter.azure.com"],
        "resources": ["aksnodeclasses"],
        "verbs": ["get", "create", "patch"],
    } in rules
