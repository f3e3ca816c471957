"""The tuning Job builder and the status read back from a Job: pure, no cluster."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito.api import names
from kaito.contract.tuning import DEFAULT_TEMPLATES
from kaito.controllers.workspace.tuning import (
    DEFAULT_DATA_SIZE_LIMIT,
    DOWNLOADER,
    PULLER,
    PUSHER,
    TuningJobOptions,
    build_tuning_job,
    job_status_to_conditions,
)
from kaito.tuning.main import build_parser

SEED = Path(__file__).resolve().parents[2] / "unit" / "api" / "seed" / "phi3_tuning.yaml"
Obj = dict[str, Any]


def seed_ws(**changes: Any) -> Obj:
    ws: Obj = yaml.safe_load(SEED.read_text())
    ws["metadata"].update(namespace="team-a", uid="1234-abcd", generation=1)
    ws["tuning"]["output"]["image"] = "registry.local:5000/adapters/phi-3:0.0.1"
    ws["tuning"]["output"]["imagePushSecret"] = "push-secret"
    for key, value in changes.items():
        ws["tuning"][key] = value
    return ws


def containers(job: Obj) -> dict[str, Obj]:
    spec = job["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def mounts(c: Obj) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in c["volumeMounts"]}


def volumes(job: Obj) -> dict[str, Obj]:
    return {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}


def runtime_args(command: list[str]) -> Any:
    """Parse a container's command with the tuning runtime's own parser (the contract holds)."""
    if command[:2] == ["/bin/sh", "-c"]:
        command = shlex.split(command[2].split(";", 1)[0])
    assert command[:3] == ["python", "-m", "kaito.tuning"], command
    return build_parser().parse_args(command[3:])


def test_seed_workspace_becomes_upstreams_job_shape() -> None:
    ws = seed_ws()
    job, cm = build_tuning_job(ws, TuningJobOptions(image="kaito/tuning:test"))
    assert job["kind"] == "Job" and job["metadata"]["name"] == "workspace-phi-3-mini"
    assert job["metadata"]["namespace"] == "team-a"
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Workspace" and owner["uid"] == "1234-abcd" and owner["controller"] is True
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and "activeDeadlineSeconds" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert spec["template"]["metadata"]["labels"][names.LABEL_WORKSPACE] == "workspace-phi-3-mini"
    assert [c["name"] for c in pod["initContainers"]] == [DOWNLOADER]
    assert [c["name"] for c in pod["containers"]] == ["workspace-phi-3-mini", PUSHER]
    assert pod["imagePullSecrets"] == [{"name": "push-secret"}]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms[0]["matchExpressions"] == [{"key": "app", "operator": "In", "values": ["phi-3-adapter"]}]

    c = containers(job)
    down = c[DOWNLOADER]
    assert down["env"] == [{"name": "DATA_URLS", "value": ws["tuning"]["input"]["urls"][0]}]
    assert mounts(down) == {"/mnt/data": "data"}
    assert runtime_args(down["command"]).cmd == "fetch"

    trainer = c["workspace-phi-3-mini"]
    assert mounts(trainer) == {
        "/dev/shm": "dshm",
        "/mnt/config": "config",
        "/mnt/data": "data",
        "/mnt/results": "results",
    }
    assert trainer["resources"] == {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}
    assert {"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"} in trainer["env"]
    assert trainer["terminationMessagePolicy"] == "FallbackToLogsOnError"
    args = runtime_args(trainer["command"])
    assert (args.cmd, args.method, str(args.config)) == ("train", "qlora", "/mnt/config/training_config.yaml")
    assert str(args.data) == "/mnt/data" and str(args.output) == "/mnt/results" and args.metrics_port == 5000
    assert "fine_tuning_failed.txt" in trainer["command"][2]

    pusher = c[PUSHER]
    assert mounts(pusher) == {"/mnt/results": "results", "/mnt/push-secret": "push-secret"}
    pargs = runtime_args(pusher["command"])
    assert pargs.image == "registry.local:5000/adapters/phi-3:0.0.1" and pargs.wait
    assert str(pargs.docker_config) == "/mnt/push-secret/.dockerconfigjson"
    assert pargs.model_name == "phi-3-mini-4k-instruct"

    vols = volumes(job)
    assert vols["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory"}}
    assert vols["results"] == {"name": "results", "emptyDir": {}}
    assert vols["data"] == {"name": "data", "emptyDir": {"sizeLimit": DEFAULT_DATA_SIZE_LIMIT}}
    assert vols["config"]["configMap"]["name"] == "workspace-phi-3-mini-tuning-config"
    assert vols["push-secret"]["secret"] == {
        "secretName": "push-secret",
        "items": [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}],
    }
    assert all(c["image"] == "kaito/tuning:test" for c in c.values())

    assert cm is not None and cm["metadata"]["name"] == "workspace-phi-3-mini-tuning-config"
    assert cm["data"]["training_config.yaml"].endswith(DEFAULT_TEMPLATES["qlora"])
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "1234-abcd"


def test_user_config_image_input_and_volume_output() -> None:
    ws = seed_ws(
        config="my-tuning",
        method="lora",
        input={"image": "registry.local:5000/data/dolly:1", "imagePullSecrets": ["pull-a", "pull-b"]},
        output={"volumeSource": {"persistentVolumeClaim": {"claimName": "adapters"}}},
    )
    job, cm = build_tuning_job(ws, TuningJobOptions(active_deadline_seconds=3600, fetch_max_bytes=10))
    assert cm is None
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    c = containers(job)
    assert set(c) == {PULLER, "workspace-phi-3-mini"}
    pull = runtime_args(c[PULLER]["command"])
    assert pull.image == "registry.local:5000/data/dolly:1"
    assert str(pull.docker_config) == "/mnt/pull-secret/.dockerconfigjson"
    vols = volumes(job)
    assert vols["config"]["configMap"]["name"] == "my-tuning"
    assert vols["results"] == {"name": "results", "persistentVolumeClaim": {"claimName": "adapters"}}
    assert vols["pull-secret"]["secret"]["secretName"] == "pull-a"
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "pull-a"}, {"name": "pull-b"}]
    assert runtime_args(c["workspace-phi-3-mini"]["command"]).method == "lora"


def test_volume_input_has_no_init_container_and_url_cap_is_passed() -> None:
    ws = seed_ws(input={"volumeSource": {"hostPath": {"path": "/data/dolly"}}})
    job, _ = build_tuning_job(ws)
    assert "initContainers" not in job["spec"]["template"]["spec"]
    assert volumes(job)["data"] == {"name": "data", "hostPath": {"path": "/data/dolly"}}
    job, _ = build_tuning_job(seed_ws(), TuningJobOptions(fetch_max_bytes=1024))
    assert runtime_args(containers(job)[DOWNLOADER]["command"]).max_bytes == 1024


def test_builder_is_deterministic_and_does_not_touch_its_input() -> None:
    ws = seed_ws()
    before = copy.deepcopy(ws)
    assert build_tuning_job(ws) == build_tuning_job(ws)
    assert ws == before


def job(conditions: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": "w"}, "status": {"conditions": conditions or []}}


def pod(terminated: Obj | None = None, waiting: Obj | None = None) -> Obj:
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {"running": {}}
    return {
        "metadata": {"name": "w-abc"},
        "spec": {"nodeName": "gpu-1"},
        "status": {"containerStatuses": [{"name": "w", "state": state}]},
    }


def test_status_from_job_lifecycle() -> None:
    pending = job_status_to_conditions(None)
    assert (pending.started.ok, pending.succeeded.ok, pending.state) == (False, False, names.STATE_PENDING)

    running = job_status_to_conditions(job(), [pod()])
    assert running.started.ok and running.started.reason == "JobStarted"
    assert (running.succeeded.ok, running.state, running.worker_nodes) == (
        False,
        names.STATE_RUNNING,
        ["gpu-1"],
    )

    done = job_status_to_conditions(job([{"type": "Complete", "status": "True"}]))
    assert (
        done.succeeded.ok
        and done.succeeded.reason == "TuningSucceeded"
        and done.state == names.STATE_SUCCEEDED
    )


def test_failed_job_reports_its_reason_and_the_runtimes_line() -> None:
    line = "kaito-tuning: registry r.io refused the credentials (HTTP 401); check the registry secret"
    failed = job_status_to_conditions(
        job(
            [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ]
        ),
        [pod(terminated={"exitCode": 1, "reason": "Error", "message": line + "\n"})],
    )
    assert failed.state == names.STATE_FAILED
    assert failed.succeeded.reason == "BackoffLimitExceeded" and failed.succeeded.failed
    assert line in failed.succeeded.message
    deadline = job_status_to_conditions(
        job(
            [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                }
            ]
        )
    )
    assert (
        deadline.succeeded.reason == "DeadlineExceeded"
        and "longer than specified deadline" in deadline.succeeded.message
    )


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull"])
def test_pod_that_cannot_start_is_a_failure(reason: str) -> None:
    out = job_status_to_conditions(job(), [pod(waiting={"reason": reason, "message": "no such image"})])
    assert out.state == names.STATE_FAILED and out.succeeded.reason == reason


def test_pull_caps_and_data_size_limit_reach_the_job() -> None:
    """Issue 21: the input image's caps go to the puller and the data emptyDir is bounded."""
    ws = seed_ws(input={"image": "registry.local:5000/data/dolly:1"})
    job, _ = build_tuning_job(ws)
    assert volumes(job)["data"]["emptyDir"] == {"sizeLimit": DEFAULT_DATA_SIZE_LIMIT}
    pull = runtime_args(containers(job)[PULLER]["command"])
    assert pull.max_layer_bytes is None and pull.max_data_bytes is None  # the runtime's defaults
    options = TuningJobOptions(
        pull_max_layer_bytes=1 << 20, pull_max_data_bytes=1 << 30, data_size_limit="2Gi"
    )
    job, _ = build_tuning_job(ws, options)
    assert volumes(job)["data"]["emptyDir"] == {"sizeLimit": "2Gi"}
    pull = runtime_args(containers(job)[PULLER]["command"])
    assert (pull.max_layer_bytes, pull.max_data_bytes) == (1 << 20, 1 << 30)
