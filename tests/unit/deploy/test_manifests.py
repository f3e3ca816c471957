"""config/ as written: hardening of both Deployments, names the controller's defaults rely on,
and the controller's --feature-gates parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito.cli.controller import FeatureGates, parse_feature_gates
from kaito.operator import OperatorOptions
from kaito.operator.certs import CertOptions

CONFIG = Path(__file__).resolve().parents[3] / "config"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", ["manager/manager.yaml", "node-provisioner/node_provisioner.yaml"])
def test_deployments_are_hardened(path: str) -> None:
    (dep,) = [d for d in docs(CONFIG / path) if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert set(c["resources"]) == {"requests", "limits"}
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_controller_probes_on_8081_and_its_grace_period_covers_the_shutdown_budget() -> None:
    (dep,) = [d for d in docs(CONFIG / "manager" / "manager.yaml") if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"]["port"] == c["readinessProbe"]["httpGet"]["port"] == 8081
    assert pod["terminationGracePeriodSeconds"] > 30  # the manager's graceful-shutdown budget


def test_names_match_the_certificate_controller_defaults() -> None:
    """kustomize prefixes names with kaito-; the controller's defaults must be those names."""
    opts, certs = OperatorOptions(), CertOptions()
    assert opts.webhook.service_name == certs.service_name == "kaito-webhook-service"
    assert opts.webhook.secret_name == certs.secret_name == "kaito-webhook-server-cert"
    hooks = {d["kind"]: "kaito-" + d["metadata"]["name"] for d in docs(CONFIG / "webhook" / "manifests.yaml")}
    assert hooks["ValidatingWebhookConfiguration"] == certs.validating_configurations[0]
    assert hooks["MutatingWebhookConfiguration"] == certs.mutating_configurations[0]
    rbac = docs(CONFIG / "rbac" / "webhook_certs_role.yaml")
    names = {n for d in rbac for r in d.get("rules") or () for n in r.get("resourceNames") or ()}
    assert names == {certs.secret_name, *certs.validating_configurations, *certs.mutating_configurations}


def test_feature_gates() -> None:
    assert parse_feature_gates("") == FeatureGates(vllm=True)
    assert parse_feature_gates("vLLM=true") == FeatureGates(vllm=True)
    with pytest.raises(ValueError, match="unknown gate 'nope'"):
        parse_feature_gates("nope=true")
    with pytest.raises(ValueError, match="is not gate=true"):
        parse_feature_gates("vLLM")
    with pytest.raises(ValueError, match="vLLM=false is not supported"):
        parse_feature_gates("vLLM=false")
