"""Tuning Workspaces: one Job named after the Workspace, and the status read back from it.

The Job's shape follows upstream Kaito: ``restartPolicy: Never``, ``/dev/shm``, an input step into
``/mnt/data`` (an init container that downloads the URLs or unpacks an input image, or the user's
volume mounted there), the tuning container named after the Workspace with the tuning ConfigMap at
``/mnt/config`` and the results at ``/mnt/results`` (an emptyDir or the user's output volume), and,
for image output, a pusher container with the ``imagePushSecret``. Every container runs
``python -m kaito.tuning <step>``; paths, flags and file names come from :mod:`kaito.contract`.

Where we differ from upstream, and why:

* The downloader is kaito's own ``fetch`` step (not curl), so redirects and DNS answers are checked
  against the same private/metadata address rules as the webhook.
* The pusher waits for the trainer's completion (or failure) marker in the results volume instead
  of watching its process through a shared process namespace and a pause container; the trainer's
  shell wrapper writes the failure marker even when Python is killed, so the pusher never hangs.
* ``backoffLimit: 0``: a failed tuning run is reported, not silently retried on a GPU.

The Job is created once and never rewritten: its pod template is immutable, and a finished Job is
the record of the run. On controller restart an existing Job is only read.
"""

from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass, field
from typing import Any

from kaito.api import names
from kaito.api.workspace import Workspace
from kaito.contract import CONFIG_DIR, DATA_DIR, DEFAULT_MODEL_DIR, RESULTS_DIR, SHM_DIR, TUNING_CONFIG_FILE
from kaito.contract.tuning import (
    DEFAULT_TEMPLATES,
    DOCKER_CONFIG_KEY,
    ENV_DATA_URLS,
    FAILED_MARKER,
    PULL_SECRET_DIR,
    PUSH_SECRET_DIR,
    TUNING_METRICS_PORT,
    TuningCommand,
    train_command,
)
from kaito.controllers.workspace.labels import child_labels
from kaito.controllers.workspace.options import DEFAULT_TUNING_IMAGE
from kaito.controllers.workspace.podsecurity import restrict_pod
from kaito.controllers.workspace.status import Check, nodes_check, pod_failure
from kaito.nodes import GPU_RESOURCE, gpu_tolerations
from kaito.presets import get_sku
from kaito.runtime import GVK, set_condition, set_controller_reference

Obj = dict[str, Any]
JOB = GVK("batch", "v1", "Job")
CONFIGMAP = GVK("", "v1", "ConfigMap")
POD = GVK("", "v1", "Pod")
GPU = GPU_RESOURCE
#: Default ``sizeLimit`` of the data emptyDir: room for three dataset files at the downloader's
#: 20 GiB cap, or an input image's 20 GiB of data plus a 10 GiB layer being unpacked.
DEFAULT_DATA_SIZE_LIMIT = "64Gi"
DOWNLOADER = "data-downloader"
PULLER = "data-puller"
PUSHER = "pusher"
#: The GPU nodes' taints, tolerated (kaito.nodes owns both); the default where no placement is given.
TOLERATIONS: list[Obj] = gpu_tolerations()


@dataclass
class TuningJobOptions:
    #: Image holding ``python -m kaito.tuning`` (and, for presets, the base model's weights at
    #: kaito.contract.DEFAULT_MODEL_DIR).
    image: str = DEFAULT_TUNING_IMAGE
    image_pull_policy: str = "IfNotPresent"
    #: Seconds before the Job controller gives up on the run (None: no limit, as upstream).
    active_deadline_seconds: int | None = None
    #: Size cap per downloaded dataset file (None: the runtime's default).
    fetch_max_bytes: int | None = None
    #: Download cap per input-image layer, ``pull --max-layer-bytes`` (None: the runtime's
    #: default, kaito.tuning.oci.DEFAULT_MAX_LAYER_BYTES, 10 GiB).
    pull_max_layer_bytes: int | None = None
    #: Cap of an input image's unpacked data, ``pull --max-data-bytes`` (None: the runtime's
    #: default, kaito.tuning.oci.DEFAULT_MAX_DATA_BYTES, 20 GiB).
    pull_max_data_bytes: int | None = None
    #: ``sizeLimit`` of the data emptyDir (the downloaded or unpacked dataset): past it the kubelet
    #: evicts the pod instead of letting one Workspace fill the node's disk. The runtime's caps
    #: stop first with a clearer message; this is the backstop for what they do not count (many
    #: files, several URLs). A user volumeSource is the user's and gets no limit.
    data_size_limit: str = DEFAULT_DATA_SIZE_LIMIT


def tuning_config_name(ws_name: str) -> str:
    return f"{ws_name}-tuning-config"


def build_tuning_config(ws_obj: Obj, model: Workspace) -> Obj:
    """The default ConfigMap (upstream's template for the method) when ``tuning.config`` is unset."""
    assert model.tuning is not None
    meta = ws_obj["metadata"]
    header = (
        f"# kaito's default {model.tuning.method} settings (upstream's template). To change them, copy "
        "this ConfigMap under another name and set the Workspace's tuning.config to it.\n"
    )
    cm: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": tuning_config_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": child_labels(ws_obj),
        },
        "data": {TUNING_CONFIG_FILE: header + DEFAULT_TEMPLATES[model.tuning.method]},
    }
    set_controller_reference(ws_obj, cm)
    return cm


def default_affinity(model: Workspace) -> Obj:
    """Node affinity on the Workspace's matchLabels (upstream's rule for tuning pods)."""
    labels = model.resource.label_selector.match_labels or {}
    exprs = [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(labels.items())]
    for e in model.resource.label_selector.match_expressions or []:
        expr: Obj = {"key": e.key, "operator": e.operator}
        if e.values:
            expr["values"] = list(e.values)
        exprs.append(expr)
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": exprs}]
            }
        }
    }


def _container(name: str, command: list[str], options: TuningJobOptions, mounts: list[Obj]) -> Obj:
    c: Obj = {
        "name": name,
        "image": options.image,
        "command": command,
        "volumeMounts": mounts,
        # The runtime's last stderr line is the one-line reason; the kubelet copies it here.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if options.image_pull_policy:
        c["imagePullPolicy"] = options.image_pull_policy
    return c


def _secret_volume(name: str, secret: str) -> Obj:
    return {
        "name": name,
        "secret": {"secretName": secret, "items": [{"key": DOCKER_CONFIG_KEY, "path": DOCKER_CONFIG_KEY}]},
    }


def build_tuning_job(
    ws_obj: Obj,
    options: TuningJobOptions | None = None,
    *,
    affinity: Obj | None = None,
    revision: int = 1,
    tolerations: list[Obj] | None = None,
) -> tuple[Obj, Obj | None]:
    """The tuning Job for a Workspace, and the default tuning ConfigMap it mounts (None when the
    Workspace names its own ``tuning.config``)."""
    options = options or TuningJobOptions()
    model = Workspace.from_manifest(ws_obj)
    tuning = model.tuning
    assert tuning is not None and tuning.preset is not None
    meta = ws_obj["metadata"]
    name, ns = meta["name"], meta["namespace"]
    config_cm = None if tuning.config else build_tuning_config(ws_obj, model)
    sku = get_sku(model.resource.instance_type) if model.resource.instance_type else None
    gpus = str(sku.gpu_count if sku is not None else 1)

    volumes: list[Obj] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "config", "configMap": {"name": tuning.config or tuning_config_name(name)}},
        {"name": "results", **copy.deepcopy(tuning.output.volume_source or {"emptyDir": {}})},
    ]
    data_mount: Obj = {"name": "data", "mountPath": DATA_DIR}
    results_mount: Obj = {"name": "results", "mountPath": RESULTS_DIR}
    inits: list[Obj] = []
    pull_secrets: list[str] = []
    src = tuning.input
    if src.volume_source is not None:
        volumes.append({"name": "data", **copy.deepcopy(src.volume_source)})
    else:
        volumes.append({"name": "data", "emptyDir": {"sizeLimit": options.data_size_limit}})
    if src.urls:
        args: dict[str, str | int | bool | list[str]] = {"dest": DATA_DIR}
        if options.fetch_max_bytes:
            args["max_bytes"] = options.fetch_max_bytes
        init = _container(DOWNLOADER, TuningCommand("fetch", args).argv(), options, [data_mount])
        init["env"] = [{"name": ENV_DATA_URLS, "value": " ".join(src.urls)}]
        inits.append(init)
    elif src.image:
        pargs: dict[str, str | int | bool | list[str]] = {"image": src.image, "dest": DATA_DIR}
        if options.pull_max_layer_bytes:
            pargs["max_layer_bytes"] = options.pull_max_layer_bytes
        if options.pull_max_data_bytes:
            pargs["max_data_bytes"] = options.pull_max_data_bytes
        mounts: list[Obj] = [data_mount]
        if src.image_pull_secrets:
            pull_secrets += src.image_pull_secrets
            volumes.append(_secret_volume("pull-secret", src.image_pull_secrets[0]))
            mounts.append({"name": "pull-secret", "mountPath": PULL_SECRET_DIR, "readOnly": True})
            pargs["docker_config"] = f"{PULL_SECRET_DIR}/{DOCKER_CONFIG_KEY}"
        inits.append(_container(PULLER, TuningCommand("pull", pargs).argv(), options, mounts))

    train = train_command(DEFAULT_MODEL_DIR, tuning.method).argv()
    # A wrapper so that even a killed trainer (OOM) leaves the failure marker the pusher waits on.
    script = (
        f"{shlex.join(train)}; rc=$?; "
        f"if [ $rc -ne 0 ] && [ ! -e {RESULTS_DIR}/{FAILED_MARKER} ]; then "
        f'echo "trainer exited with status $rc" > {RESULTS_DIR}/{FAILED_MARKER}; fi; exit $rc'
    )
    trainer = _container(
        name,
        ["/bin/sh", "-c", script],
        options,
        [
            {"name": "dshm", "mountPath": SHM_DIR},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            data_mount,
            results_mount,
        ],
    )
    trainer["ports"] = [{"name": "metrics", "containerPort": TUNING_METRICS_PORT, "protocol": "TCP"}]
    trainer["env"] = [{"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"}]
    trainer["resources"] = {"requests": {GPU: gpus}, "limits": {GPU: gpus}}
    containers = [trainer]

    out = tuning.output
    if out.image and out.volume_source is None:
        assert out.image_push_secret is not None
        pull_secrets.insert(0, out.image_push_secret)
        volumes.append(_secret_volume("push-secret", out.image_push_secret))
        push = TuningCommand(
            "push",
            {
                "image": out.image,
                "results": RESULTS_DIR,
                "docker_config": f"{PUSH_SECRET_DIR}/{DOCKER_CONFIG_KEY}",
                "model_name": tuning.preset.name,
                "wait": True,
            },
        ).argv()
        containers.append(
            _container(
                PUSHER,
                push,
                options,
                [results_mount, {"name": "push-secret", "mountPath": PUSH_SECRET_DIR, "readOnly": True}],
            )
        )

    labels = child_labels(ws_obj)
    pod_spec: Obj = {
        "restartPolicy": "Never",
        "containers": containers,
        "volumes": volumes,
        "tolerations": copy.deepcopy(TOLERATIONS if tolerations is None else tolerations),
        "affinity": copy.deepcopy(affinity) if affinity is not None else default_affinity(model),
    }
    if inits:
        pod_spec["initContainers"] = inits
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in dict.fromkeys(pull_secrets)]
    restrict_pod(pod_spec)  # no API token, no capabilities, seccomp on (issue 21)
    job: Obj = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": {names.ANNOTATION_REVISION: str(revision)},
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels, "annotations": {names.ANNOTATION_REVISION: str(revision)}},
                "spec": pod_spec,
            },
        },
    }
    if options.active_deadline_seconds:
        job["spec"]["activeDeadlineSeconds"] = options.active_deadline_seconds
    set_controller_reference(ws_obj, job)
    return job, config_cm


# --------------------------------------------------------------------------- status


@dataclass
class JobOutcome:
    """What the Job says about the run: JobStarted, WorkspaceSucceeded and the state."""

    started: Check
    succeeded: Check
    state: str
    worker_nodes: list[str] = field(default_factory=list)


def _job_condition(job: Obj, type_: str) -> Obj | None:
    for c in (job.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_ and c.get("status") == "True":
            return dict(c)
    return None


def _pod_reason(pods: list[Obj]) -> str | None:
    """The one-line reason the runtime printed (the kubelet's termination message), if any."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        st = pod.get("status") or {}
        for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
            term = (cs.get("state") or {}).get("terminated") or {}
            if term and int(term.get("exitCode") or 0) != 0:
                msg = " ".join(str(term.get("message") or "").split())
                why = msg or term.get("reason") or f"exit {term.get('exitCode')}"
                return f"container {cs.get('name')}: {why}"
    return None


def job_status_to_conditions(job: Obj | None, pods: list[Obj] | None = None) -> JobOutcome:
    """The Workspace's tuning conditions and state from its Job (and the Job's pods)."""
    pods = pods or []
    nodes = sorted({p["spec"]["nodeName"] for p in pods if (p.get("spec") or {}).get("nodeName")})
    if job is None:
        waiting = Check(False, "JobPending", "the tuning Job is not created yet")
        return JobOutcome(waiting, waiting, names.STATE_PENDING)
    name = job["metadata"]["name"]
    started = Check(True, "JobStarted", f"tuning Job {name} started")
    if _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet"):
        return JobOutcome(
            started,
            Check(True, "TuningSucceeded", f"tuning Job {name} completed"),
            names.STATE_SUCCEEDED,
            nodes,
        )
    failed = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if failed is not None:
        detail = _pod_reason(pods) or failed.get("message") or "no message"
        reason = str(failed.get("reason") or "JobFailed")
        msg = " ".join(f"tuning Job {name} failed ({reason}): {detail}".split())
        return JobOutcome(started, Check(False, reason, msg[:500], failed=True), names.STATE_FAILED, nodes)
    problem = pod_failure(pods)
    if problem is not None:
        return JobOutcome(started, problem, names.STATE_FAILED, nodes)
    running = Check(False, "TuningRunning", f"tuning Job {name} is running")
    return JobOutcome(started, running, names.STATE_RUNNING, nodes)


def desired_tuning_status(
    ws_obj: Obj, resource: Check, outcome: JobOutcome, extra_conditions: list[Obj] | None = None
) -> Obj:
    new = copy.deepcopy(ws_obj)
    status = new.setdefault("status", {})
    gen = (ws_obj.get("metadata") or {}).get("generation")
    for c in extra_conditions or []:
        set_condition(
            new, c["type"], c["status"], c.get("reason", ""), c.get("message", ""), observed_generation=gen
        )
    nodes = nodes_check(resource)
    set_condition(new, names.NODES_READY, nodes.ok, nodes.reason, nodes.message, observed_generation=gen)
    set_condition(
        new, names.RESOURCE_READY, resource.ok, resource.reason, resource.message, observed_generation=gen
    )
    # WorkspaceReady mirrors WorkspaceSucceeded (as it does the other way round for inference), so
    # the default `kubectl get workspace` table tells a tuning user "done" in the seed's
    # WORKSPACEREADY column; upstream's JOBSTARTED / WORKSPACESUCCEEDED stay under -o wide.
    for type_, check in (
        (names.JOB_STARTED, outcome.started),
        (names.WORKSPACE_SUCCEEDED, outcome.succeeded),
        (names.WORKSPACE_READY, outcome.succeeded),
    ):
        set_condition(new, type_, check.ok, check.reason, check.message, observed_generation=gen)
    status["state"] = (
        outcome.state
        if resource.ok or outcome.started.ok
        else (names.STATE_FAILED if resource.failed else names.STATE_PENDING)
    )
    if outcome.worker_nodes:
        status["workerNodes"] = outcome.worker_nodes
    if gen is not None:
        status["observedGeneration"] = gen
    return new
