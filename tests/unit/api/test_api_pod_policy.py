"""The operator's Workspace pod policy (issue 21, hole 7): each field that would make a Workspace
an arbitrary pod on the node is refused by default, by name, with the way to allow it; with the
policy off the same Workspaces pass, as upstream Kaito admits them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kaito.api.validation import ValidationOptions
from kaito.api.workspace.podpolicy import HOW_TO_ALLOW
from kaito.api.workspace.validation import validate_workspace

CONTAINER: dict[str, Any] = {"name": "server", "image": "mcr.microsoft.com/aks/kaito/server:0.1"}


def templated(**spec: Any) -> dict[str, Any]:
    """An inference Workspace with a pod template whose spec has ``spec`` added."""
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "team"},
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"a": "b"}},
        },
        "inference": {"template": {"spec": {"containers": [copy.deepcopy(CONTAINER)], **spec}}},
    }


def with_container_sc(sc: dict[str, Any], kind: str = "containers") -> dict[str, Any]:
    ws = templated()
    spec = ws["inference"]["template"]["spec"]
    spec.setdefault(kind, [copy.deepcopy(CONTAINER)])[0]["securityContext"] = sc
    return ws


def tuning_with(**volumes: Any) -> dict[str, Any]:
    ws = templated()
    del ws["inference"]
    ws["tuning"] = {
        "preset": {"name": "phi-3-mini-4k-instruct"},
        "method": "lora",
        "input": {"urls": ["https://example.com/data.parquet"]},
        "output": {"image": "registry.example.com/adapter:1", "imagePushSecret": "push"},
    }
    for where, source in volumes.items():
        ws["tuning"][where] = {"volumeSource": source}
    return ws


HOST_PATH = {"hostPath": {"path": "/", "type": "Directory"}}
REFUSED = [
    ("hostNetwork", templated(hostNetwork=True), "inference.template.spec.hostNetwork"),
    ("hostPID", templated(hostPID=True), "inference.template.spec.hostPID"),
    ("hostIPC", templated(hostIPC=True), "inference.template.spec.hostIPC"),
    (
        "hostPath volume",
        templated(volumes=[{"name": "cache", "emptyDir": {}}, {"name": "root", **HOST_PATH}]),
        "inference.template.spec.volumes[1].hostPath",
    ),
    (
        "serviceAccountName",
        templated(serviceAccountName="kaito-controller"),
        "inference.template.spec.serviceAccountName",
    ),
    ("serviceAccount", templated(serviceAccount="admin"), "inference.template.spec.serviceAccount"),
    (
        "privileged",
        with_container_sc({"privileged": True}),
        "inference.template.spec.containers[0].securityContext.privileged",
    ),
    (
        "privileged init container",
        with_container_sc({"privileged": True}, kind="initContainers"),
        "inference.template.spec.initContainers[0].securityContext.privileged",
    ),
    (
        "added capabilities",
        with_container_sc({"capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]}}),
        "inference.template.spec.containers[0].securityContext.capabilities.add",
    ),
    (
        "adapter hostPath",
        {
            **templated(),
            "inference": {
                "preset": {"name": "phi-3-mini-4k-instruct"},
                "adapters": [
                    {"source": {"name": "ok", "volumeSource": {"configMap": {"name": "a"}}}},
                    {"source": {"name": "root", "volumeSource": HOST_PATH}},
                ],
            },
        },
        "inference.adapters[1].source.volumeSource.hostPath",
    ),
    ("tuning input hostPath", tuning_with(input=HOST_PATH), "tuning.input.volumeSource.hostPath"),
    ("tuning output hostPath", tuning_with(output=HOST_PATH), "tuning.output.volumeSource.hostPath"),
]


def errors(obj: Any, old: Any = None, **opts: Any) -> list[str]:
    return [str(e) for e in validate_workspace(obj, old, ValidationOptions(**opts)).errors]


@pytest.mark.parametrize(("what", "ws", "field"), REFUSED, ids=[r[0] for r in REFUSED])
def test_each_privileged_field_is_refused_by_name_with_the_way_to_allow_it(
    what: str, ws: dict[str, Any], field: str
) -> None:
    got = errors(ws)
    assert len(got) == 1, got
    assert got[0].startswith(f"{field}: ")
    assert "refused by the operator's Workspace pod policy" in got[0]
    assert got[0].endswith(HOW_TO_ALLOW)
    assert "--allow-privileged-pods" in got[0] and "refusePrivilegedPods=false" in got[0]


@pytest.mark.parametrize(("what", "ws", "field"), REFUSED, ids=[r[0] for r in REFUSED])
def test_the_same_fields_pass_when_the_policy_allows_them(what: str, ws: dict[str, Any], field: str) -> None:
    assert errors(ws, refuse_privileged_pods=False) == []


def test_harmless_templates_pass_the_policy() -> None:
    ws = templated(
        serviceAccountName="default",
        hostNetwork=False,
        volumes=[{"name": "cache", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "x"}}],
    )
    ws["inference"]["template"]["spec"]["containers"][0]["securityContext"] = {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": []},
    }
    assert errors(ws) == []
    assert errors(tuning_with(input={"persistentVolumeClaim": {"claimName": "data"}})) == []


def test_update_adding_a_privileged_field_is_refused_but_an_old_one_does_not_wedge() -> None:
    old = templated()
    assert errors(templated(hostPID=True), old=old) != []
    # Admitted while the policy was off: its finalizers and labels must still be writable.
    stored = templated(hostNetwork=True)
    relabelled = copy.deepcopy(stored)
    relabelled["metadata"]["labels"] = {"team": "a"}
    assert errors(relabelled, old=stored) == []


def test_the_operator_flag_reaches_the_webhooks_options() -> None:
    from kaito.cli.main import load_command
    from kaito.operator import OperatorOptions
    from kaito.operator.options import WebhookOptions
    from kaito.operator.wiring import webhook_validation_options

    command = load_command("controller")
    flags = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    assert {"--refuse-privileged-pods", "--allow-privileged-pods"} <= flags
    assert OperatorOptions().webhook.refuse_privileged_pods is True
    assert webhook_validation_options(OperatorOptions()).refuse_privileged_pods is True
    allowing = webhook_validation_options(
        OperatorOptions(webhook=WebhookOptions(refuse_privileged_pods=False))
    )
    assert allowing.refuse_privileged_pods is False
    # The cloud stays the API's default; auto_provisioning follows the backend (byo by default:
    # kaito provisions nothing), see test_api_partition.
    assert (allowing.cloud, allowing.auto_provisioning) == (ValidationOptions().cloud, False)


def test_kaito_validate_applies_the_policy_unless_allowed(tmp_path: Any) -> None:
    import json

    from typer.testing import CliRunner

    from kaito.cli.main import app

    path = tmp_path / "ws.yaml"
    path.write_text(json.dumps(templated(hostNetwork=True)))
    refused = CliRunner().invoke(app, ["validate", "-f", str(path)])
    assert refused.exit_code != 0 and "inference.template.spec.hostNetwork" in refused.output
    allowed = CliRunner().invoke(app, ["validate", "--allow-privileged-pods", "-f", str(path)])
    assert allowed.exit_code == 0, allowed.output
