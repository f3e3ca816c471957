"""The tuning Job builder and the status read back from a Job: pure, no cluster."""

from __future__ import annotations

import copy
import http.server
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito.api import names
from kaito.contract.tuning import DEFAULT_TEMPLATES, ENV_DATA_URLS
from kaito.controllers.workspace.status import Check
from kaito.controllers.workspace.tuning import (
    DEFAULT_DATA_SIZE_LIMIT,
    DOWNLOADER,
    PULLER,
    PUSHER,
    TuningJobOptions,
    build_tuning_job,
    desired_tuning_status,
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


def test_workspace_ready_follows_the_tuning_outcome_for_the_default_table() -> None:
    """The seed's default columns end in WORKSPACEREADY: a tuning Workspace fills it too."""
    from kaito.controllers.workspace.status import Check

    def conds(outcome_job: Obj | None) -> dict[str, tuple[str, str]]:
        outcome = job_status_to_conditions(outcome_job)
        ws = desired_tuning_status(seed_ws(), Check(True, "NodesReady", "1/1"), outcome)
        return {c["type"]: (c["status"], c["reason"]) for c in ws["status"]["conditions"]}

    done = conds(job([{"type": "Complete", "status": "True"}]))
    assert done[names.WORKSPACE_READY] == done[names.WORKSPACE_SUCCEEDED] == ("True", "TuningSucceeded")
    running = conds(job())
    assert running[names.WORKSPACE_READY] == ("False", "TuningRunning")
    failed = conds(job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]))
    assert failed[names.WORKSPACE_READY] == ("False", "BackoffLimitExceeded")
    assert names.INFERENCE_READY not in done  # a tuning Workspace serves nothing


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


SIGNATURE = "sig=Pl4nted%2BSAS%2Fsignature%3D"
SAS = f"sv=2024-11-04&se=2030-01-01T00%3A00%3A00Z&sr=b&sp=r&{SIGNATURE}"


class _Storage(http.server.BaseHTTPRequestHandler):
    """Blob storage as a presigned URL meets it: ``ok.jsonl`` is served, anything else is
    refused with 403 as Azure refuses an expired SAS. Every request line is kept."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.path.startswith("/data/ok.jsonl?"):
            body = b'{"messages": []}\n'
            self.send_response(200)
            self.send_header("Content-Type", "application/jsonl")
        else:
            body = b"<Error><Code>AuthenticationFailed</Code></Error>"
            self.send_response(403, "Server failed to authenticate the request")
            self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def storage() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Storage", (_Storage,), {"seen": seen})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_presigned_url_reaches_the_downloader_but_not_its_output_or_the_workspace_status(
    storage: tuple[str, list[str]], tmp_path: Path
) -> None:
    """Issue 21 hole 8: a SAS URL's signature used to be echoed in the downloader's progress and
    error lines, and from its termination message into the Workspace's status. The Job's
    downloader runs for real (its own command and env, against a real HTTP server that serves
    one file and refuses the other with 403); the server must get the signature, nothing the
    run prints and nothing the controller writes to status may hold it."""
    base, seen = storage
    urls = [f"{base}/data/ok.jsonl?{SAS}", f"{base}/data/expired.jsonl?{SAS}"]
    ws = seed_ws(input={"urls": urls})
    built, _ = build_tuning_job(ws)
    downloader = containers(built)[DOWNLOADER]
    env = {e["name"]: e["value"] for e in downloader["env"]}
    assert env[ENV_DATA_URLS] == " ".join(urls)  # the Job still gets the real URLs
    argv = [sys.executable, *downloader["command"][1:]]
    argv += ["--dest", str(tmp_path / "data"), "--insecure-allow-address", "127.0.0.1"]
    run = subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 1, run.stderr
    assert seen == [f"/data/ok.jsonl?{SAS}", f"/data/expired.jsonl?{SAS}"]  # used for real
    assert f"fetched {base}/data/ok.jsonl?REDACTED" in run.stdout, run.stdout
    line = run.stderr.strip().splitlines()[-1]
    refused = f"{base}/data/expired.jsonl?REDACTED: HTTP 403 Server failed to authenticate the request"
    assert line == f"kaito-tuning: {refused}"
    assert "Pl4nted" not in run.stdout + run.stderr and "sv=2024" not in run.stdout + run.stderr

    # The kubelet copies the failed container's last lines into its termination message
    # (FallbackToLogsOnError); the Job controller fails the Job; the controller writes status.
    failed_pod = pod()
    terminated = {"exitCode": 1, "reason": "Error", "message": run.stderr}
    failed_pod["status"]["initContainerStatuses"] = [
        {"name": DOWNLOADER, "state": {"terminated": terminated}}
    ]
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": urls[1]}
    failed_job = job([failed])
    outcome = job_status_to_conditions(failed_job, [failed_pod])
    resource = Check(True, "NodesReady", f"nodes ready; data from {urls[1]}")
    status = desired_tuning_status(ws, resource, outcome)["status"]
    text = json.dumps(status)
    assert "Pl4nted" not in text and "sv=2024" not in text, text
    assert f"container {DOWNLOADER}: kaito-tuning: {refused}" in text
    assert status["state"] == names.STATE_FAILED


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
