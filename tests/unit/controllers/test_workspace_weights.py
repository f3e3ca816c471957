"""The weights source of the inference pod (kaito.controllers.workspace.inference.weights): the
``kaito.sh/weights-image`` init container and cache volume, ``kaito.sh/use-local-weights``, and
the webhook's refusals of a source that cannot work."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_workspace_builders import seed, workload

from kaito.api import names
from kaito.api.workspace.validation import validate_workspace
from kaito.contract.weights import CACHE_MARKER, WEIGHTS_DIR
from kaito.controllers.workspace import inference
from kaito.controllers.workspace.inference.weights import (
    INIT_CONTAINER,
    VOLUME,
    local_weights_path,
    puller_script,
)

Obj = dict[str, Any]
IMAGE = "registry.example.com/weights/phi-3-mini:v1"


def _with(
    annotations: dict[str, str], instance_type: str | None = None, secrets: list[str] | None = None
) -> Obj:
    obj = seed("phi3_inference.yaml")
    obj["metadata"]["annotations"] = annotations
    if instance_type:
        obj["resource"]["instanceType"] = instance_type
    if secrets:
        obj["inference"]["preset"]["presetOptions"] = {"imagePullSecrets": secrets}
    return obj


def _model_arg(container: Obj) -> str:
    cmd = container["command"]
    return str(cmd[cmd.index("--model") + 1])


def test_no_annotation_leaves_the_statefulset_as_it_was() -> None:
    plain, _ = workload(seed("phi3_inference.yaml"))
    assert "--model" not in plain["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "volumeClaimTemplates" not in plain["spec"]


def test_weights_image_gets_an_oras_init_container_and_an_empty_dir_without_nvme() -> None:
    sts, _ = workload(_with({names.ANNOTATION_WEIGHTS_IMAGE: IMAGE}))
    spec = sts["spec"]["template"]["spec"]
    init = spec["initContainers"][0]
    assert init["name"] == INIT_CONTAINER
    assert init["image"] == "ghcr.io/oras-project/oras:v1.3.6"
    assert init["volumeMounts"] == [{"name": VOLUME, "mountPath": WEIGHTS_DIR}]
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    script = init["command"][2]
    assert f"oras resolve '{IMAGE}'" in script or f"oras resolve {IMAGE}" in script
    assert 'registry.example.com/weights/phi-3-mini@"$digest"' in script
    assert {"name": VOLUME, "emptyDir": {}} in spec["volumes"]
    main = spec["containers"][0]
    assert _model_arg(main) == WEIGHTS_DIR
    assert {"name": VOLUME, "mountPath": WEIGHTS_DIR, "readOnly": True} in main["volumeMounts"]
    assert "volumeClaimTemplates" not in sts["spec"]


def test_nvme_sku_gets_a_claim_template_on_the_local_nvme_class() -> None:
    sts, plan = workload(
        _with({names.ANNOTATION_WEIGHTS_IMAGE: IMAGE}, instance_type="Standard_NC24ads_A100_v4")
    )
    claims = sts["spec"]["volumeClaimTemplates"]
    assert claims[0]["metadata"]["name"] == VOLUME
    assert claims[0]["spec"]["storageClassName"] == "kaito-local-nvme-disk"
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == f"{plan.storage_gib}Gi"
    assert all(v["name"] != VOLUME for v in sts["spec"]["template"]["spec"]["volumes"])


def test_first_pull_secret_is_the_pullers_registry_config() -> None:
    sts, _ = workload(_with({names.ANNOTATION_WEIGHTS_IMAGE: IMAGE}, secrets=["regcred", "other"]))
    spec = sts["spec"]["template"]["spec"]
    assert "--registry-config /mnt/weights-pull-secret/config.json" in spec["initContainers"][0]["command"][2]
    vol = next(v for v in spec["volumes"] if v["name"] == "weights-pull-secret")
    assert vol["secret"]["secretName"] == "regcred"
    assert {"name": "regcred"} in spec["imagePullSecrets"]


def test_use_local_weights_mounts_the_node_folder_read_only() -> None:
    sts, _ = workload(_with({names.ANNOTATION_USE_LOCAL_WEIGHTS: "true"}))
    spec = sts["spec"]["template"]["spec"]
    path = "/opt/kaito/models/phi-3-mini-4k-instruct"
    assert _model_arg(spec["containers"][0]) == path
    assert {"name": "model-weights-hostpath", "hostPath": {"path": path, "type": "Directory"}} in spec[
        "volumes"
    ]
    assert "initContainers" not in spec
    assert (
        local_weights_path("deepseek-ai/DeepSeek-V4-Flash")
        == "/opt/kaito/models/deepseek-ai-deepseek-v4-flash"
    )


def test_both_sources_is_a_plan_error_and_a_webhook_refusal() -> None:
    obj = _with({names.ANNOTATION_WEIGHTS_IMAGE: IMAGE, names.ANNOTATION_USE_LOCAL_WEIGHTS: "true"})
    with pytest.raises(inference.PlanError, match="remove one"):
        workload(obj)
    assert "not both" in validate_workspace(obj).message()


@pytest.mark.parametrize(
    ("annotations", "words"),
    [
        ({names.ANNOTATION_WEIGHTS_IMAGE: "weights:v1"}, "names no registry"),
        ({names.ANNOTATION_WEIGHTS_IMAGE: "127.0.0.1:5000/w:v1"}, "kaito.sh/weights-image"),
        ({names.ANNOTATION_USE_LOCAL_WEIGHTS: "yes"}, 'set "true"'),
    ],
)
def test_webhook_refuses_unusable_sources(annotations: dict[str, str], words: str) -> None:
    res = validate_workspace(_with(annotations))
    assert words in res.message()


def test_webhook_accepts_a_good_weights_image() -> None:
    res = validate_workspace(_with({names.ANNOTATION_WEIGHTS_IMAGE: IMAGE}))
    assert not res.errors, res.message()


def test_puller_script_skips_when_the_marker_names_the_digest(tmp_path: Path) -> None:
    """The init container's shell run for real by sh, with a stand-in ``oras`` on PATH that
    records its calls: the second start on the same folder resolves only, pulls nothing."""
    bin_dir, weights = tmp_path / "bin", tmp_path / "weights"
    bin_dir.mkdir()
    weights.mkdir()
    log = tmp_path / "calls"
    fake = bin_dir / "oras"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        'case "$1" in resolve) echo sha256:abc;; pull) echo w > "$5/model.safetensors";; esac\n'
    )
    fake.chmod(0o755)
    script = puller_script(IMAGE, None).replace(WEIGHTS_DIR, str(weights))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    for _ in range(2):
        out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True)
    assert "already in the cache" in out.stdout
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["resolve", "pull", "resolve"]
    assert (weights / CACHE_MARKER).read_text().strip() == "sha256:abc"
    assert (weights / "model.safetensors").read_text() == "w\n"


def test_a_hub_model_keeps_its_id_as_the_served_name() -> None:
    from kaito.controllers.workspace.inference.weights import _set_model

    argv = [
        "python",
        "-m",
        "kaito.inference",
        "--model",
        "acme/phi3-copy",
        "--revision",
        "v1",
        "--port",
        "5000",
    ]
    assert _set_model(argv, WEIGHTS_DIR) == [
        "python", "-m", "kaito.inference", "--model", WEIGHTS_DIR, "--port", "5000",
        "--served-model-name", "acme/phi3-copy",
    ]  # fmt: skip
    preset = ["python", "-m", "kaito.inference", "--preset", "phi-3-mini-4k-instruct"]
    assert _set_model(preset, WEIGHTS_DIR) == [*preset, "--model", WEIGHTS_DIR]
