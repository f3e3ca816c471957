"""Settings reach the backend that uses them (issue 20, bug 10).

``CLOUD_PROVIDER`` as the chart sets it reaches the gpu-provisioner backend (flag > env >
default), and ``--karpenter-node-class`` reaches the karpenter backend. The controller's container is
read from config/manager/manager.yaml, which the chart renders identically (test_chart.py
checks that with the real helm), and run through the real ``kaito controller`` command line; only
the final "connect and run" step is replaced by capturing the options it would run with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controller_backend import backend_of
from kaito.cli.main import app

MANAGER_YAML = Path(__file__).resolve().parents[3] / "config" / "manager" / "manager.yaml"


def controller_container() -> dict[str, Any]:
    (dep,) = [d for d in yaml.safe_load_all(MANAGER_YAML.read_text()) if d and d["kind"] == "Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(c)


def deployed_args(node_provisioner: str) -> list[str]:
    """The container's args with the chart's ``nodeProvisioner`` value; the webhook and leader
    election flags stay as deployed (they only matter once the process runs)."""
    args = [a for a in controller_container()["args"] if not a.startswith("--node-provisioner=")]
    return [*args, f"--node-provisioner={node_provisioner}"]


def deployed_env(cloud_provider: str) -> dict[str, str]:
    """The container's plain env with the chart's ``cloudProvider`` value."""
    env = {e["name"]: e["value"] for e in controller_container()["env"] if "value" in e}
    assert "CLOUD_PROVIDER" in env, "the deployment no longer sets CLOUD_PROVIDER"
    env["CLOUD_PROVIDER"] = cloud_provider
    return env


def test_chart_cloud_provider_aws_reaches_the_gpu_provisioner() -> None:
    backend = backend_of(deployed_args("gpu-provisioner"), deployed_env("aws"))
    assert backend["name"] == "gpu-provisioner"
    assert backend["cloud"] == "aws"


@pytest.mark.parametrize(
    ("flag", "env", "want"),
    [
        (["--cloud-provider", "azure"], "aws", "azure"),  # the explicit flag wins over the env
        (["--cloud-provider", "aws"], None, "aws"),
        ([], "AWS", "aws"),  # the env wins over the default
        ([], None, "azure"),  # the default
        ([], "", "azure"),  # an empty value counts as unset
    ],
)
def test_cloud_provider_precedence_flag_env_default(flag: list[str], env: str | None, want: str) -> None:
    backend = backend_of(["--node-provisioner", "gpu-provisioner", *flag], {"CLOUD_PROVIDER": env})
    assert backend["cloud"] == want


def test_bad_cloud_provider_is_refused_at_start_naming_its_source() -> None:
    runner = CliRunner()
    bad_env = runner.invoke(
        app, ["controller", "--node-provisioner", "gpu-provisioner"], env={"CLOUD_PROVIDER": "gcp"}
    )
    assert bad_env.exit_code == 2 and "CLOUD_PROVIDER='gcp' is not supported" in bad_env.output
    bad_flag = runner.invoke(app, ["controller", "--cloud-provider", "gcp"])
    assert bad_flag.exit_code == 2 and "--cloud-provider='gcp' is not supported" in bad_flag.output


def test_karpenter_node_class_flag_reaches_the_karpenter_backend() -> None:
    backend = backend_of(
        ["--node-provisioner", "karpenter", "--karpenter-node-class", "karpenter.azure.com/AKSNodeClass/gpu"],
        {},
    )
    assert backend["node_class"] == {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "gpu"}
    bad = CliRunner().invoke(app, ["controller", "--karpenter-node-class", "AKSNodeClass"])
    assert bad.exit_code == 2 and "is not group/Kind/name" in bad.output


def test_dry_run_reports_and_connects_to_nothing(tmp_path: Path) -> None:
    """--dry-run never reads the kubeconfig nor dials an apiserver: a missing file is fine, and
    the report says what a real start would use."""
    from controller_backend import dry_run

    missing = tmp_path / "no-such-kubeconfig"
    report = dry_run(
        ["--kubeconfig", str(missing), "--max-concurrent-reconciles", "7"], {"CLOUD_PROVIDER": None}
    )
    assert report["options"]["kubeconfig"] == str(missing)
    assert report["options"]["max_concurrent_reconciles"] == 7
    assert report["backend"] == {"name": "byo", "type": "BYOProvisioner"}
    bad = CliRunner().invoke(app, ["controller", "--dry-run", "--node-provisioner", "nope"])
    assert bad.exit_code == 2 and "is not available; choose one of" in bad.output
