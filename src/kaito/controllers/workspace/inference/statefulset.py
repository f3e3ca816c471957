"""The inference workload: how a Workspace becomes a StatefulSet (upstream's shape).

A StatefulSet in every case, named after the Workspace, Parallel pod management (a multi-node
group must start together), ``serviceName: <ws>-headless``. One pod per node: the pod takes
all the node's GPUs (``nvidia.com/gpu`` requests = limits) and, for a model spread across nodes,
the engine arguments for tensor parallel inside the node and pipeline parallel across nodes,
with the leader (ordinal 0) found through the headless Service.

Every port, path, env name and the command line come from :mod:`kaito.contract`, the same
module the in-pod server reads, so the two sides cannot drift.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from kaito.api import names
from kaito.api.workspace import Workspace, api_key_secret_of
from kaito.contract import (
    ADAPTERS_DIR,
    CONFIG_DIR,
    DIST_PORT,
    ENV_API_KEY,
    ENV_POD_INDEX,
    HEALTH_PATH,
    IMAGE_ADAPTER_DIR,
    INFERENCE_CONFIG_FILE,
    INFERENCE_PORT,
    SHM_DIR,
    InferenceCommand,
    adapter_strength_env,
)
from kaito.controllers.workspace.inference.configmap import DEFAULT_CONFIG_NAME
from kaito.controllers.workspace.inference.services import POD_INDEX_LABEL
from kaito.controllers.workspace.inference.weights import WeightsSourceError, apply_weights_source
from kaito.controllers.workspace.labels import child_labels, headless_name, selector_labels
from kaito.controllers.workspace.options import WorkspaceControllerOptions
from kaito.controllers.workspace.podsecurity import restrict_pod
from kaito.nodes import GPU_RESOURCE, gpu_tolerations
from kaito.presets import GPUSku, ModelPreset, PresetError, fit, get_sku, resolve_preset
from kaito.presets.partition import PartitionError, accelerator_sku, mig_resource, mig_sku
from kaito.runtime import set_controller_reference

Obj = dict[str, Any]
GPU = GPU_RESOURCE
CONTAINER = "inference"
ENV_HF_TOKEN = "HF_TOKEN"

#: The GPU nodes' taints, tolerated (kaito.nodes owns both); the default where no placement is given.
TOLERATIONS: list[Obj] = gpu_tolerations()


class PlanError(ValueError):
    """The Workspace cannot be turned into a workload as written; the message says why and what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Plan:
    """How many nodes, how many GPUs each, and how the model is split across them."""

    node_count: int
    gpus_per_node: int
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    storage_gib: int | None = None
    #: The estimator's engine arguments for splitting the model across nodes (multi-node only).
    distributed: tuple[tuple[str, str | int | float | bool], ...] = ()
    #: A Hugging Face model kaito has no preset for (``org/model``): the pod runs vLLM with
    #: ``--model`` and downloads it at start, as upstream; the in-pod server cannot plan it from
    #: its catalog, so the estimator's split travels on the command line (``hub_engine``; also
    #: used for GPUs known only from a bring-your-own node's labels, which the server cannot plan).
    hub_repo: str | None = None
    hub_revision: str = "main"
    hub_engine: tuple[tuple[str, str | int | float | bool], ...] = ()
    #: The preset does not fit and ``kaito.sh/bypass-resource-checks`` waived it: the in-pod
    #: server, which re-plans the preset, is told so (else it would refuse to start).
    bypassed: bool = False
    #: The extended resource the pod asks ``gpus_per_node`` of: ``nvidia.com/gpu``, or for a MIG
    #: partition ``nvidia.com/mig-<profile>`` (what the BYO backend counts on nodes too).
    gpu_resource: str = GPU_RESOURCE

    @property
    def multi_node(self) -> bool:
        return self.node_count > 1


def _partitioned(ws: Workspace, sku: GPUSku | None) -> tuple[GPUSku | None, int, str]:
    """The SKU the preset is sized on, the GPUs a pod asks for when that SKU is unknown, and the
    resource it asks them of, under ``resource.partition`` (upstream's shapes: one
    ``nvidia.com/mig-<profile>`` for ``mig``, ``count`` ``nvidia.com/gpu`` for ``accelerator``)."""
    part = ws.resource.partition
    if part is None:
        return sku, sku.gpu_count if sku is not None else 1, GPU_RESOURCE
    try:
        if part.mode == "mig":
            if not part.profile:
                raise PartitionError("resource.partition.profile is required for mode mig")
            return mig_sku(part.profile, sku), 1, mig_resource(part.profile)
        if part.count is None:
            raise PartitionError("resource.partition.count is required for mode accelerator")
        return (accelerator_sku(sku, part.count) if sku is not None else None), part.count, GPU_RESOURCE
    except PartitionError as exc:
        raise PlanError("InvalidPartition", str(exc)) from None


def plan_for(ws: Workspace, hub: ModelPreset | None = None, node_sku: GPUSku | None = None) -> Plan:
    """``resource.count`` when given, else the estimator's count for the preset on the SKU.

    ``hub`` is the preset :mod:`kaito.api.hub` resolved for an ``org/model`` name, ``node_sku``
    the GPUs a matching bring-your-own node's labels describe when no instance type is named
    (:func:`kaito.presets.nodelabels.sku_from_node_labels`); the caller fetches both: this
    function does no I/O. Under ``resource.partition`` the preset is sized on the partition
    (:mod:`kaito.presets.partition`): a MIG slice must hold the whole model on one node."""
    count = ws.resource.count
    part = ws.resource.partition
    mig = part is not None and part.mode == "mig"
    if mig:
        count = 1  # a slice is one device: nothing to spread over nodes (the webhook says so)
    sku, gpus, resource = _partitioned(
        ws, get_sku(ws.resource.instance_type) if ws.resource.instance_type else node_sku
    )
    preset_spec = ws.inference.preset if ws.inference is not None else None
    if preset_spec is None or sku is None:
        return Plan(node_count=count or 1, gpus_per_node=gpus, tensor_parallel=gpus, gpu_resource=resource)
    params = None
    raw = (ws.metadata.annotations or {}).get(names.ANNOTATION_MODEL_PARAMETERS)
    if raw:
        try:
            params = json.loads(raw)
        except ValueError:
            raise PlanError(
                "InvalidModelParameters", f"annotation {names.ANNOTATION_MODEL_PARAMETERS} is not valid JSON"
            ) from None
    try:
        preset = hub if hub is not None and params is None else resolve_preset(preset_spec.name, params)
    except PresetError as exc:
        raise PlanError("UnknownPreset", f"inference.preset.name: {exc}") from None
    # the one fit verdict, shared with the webhook (the bypass annotation included)
    verdict = fit(preset, sku, node_count=count, annotations=ws.metadata.annotations, multi_node=not mig)
    est = verdict.estimate
    if not verdict.ok:
        fix = f"; pick a larger MIG profile than {part.profile}" if mig and part is not None else ""
        raise PlanError(
            "PresetDoesNotFit",
            f"preset {preset.name} does not fit {count or est.node_count} x {sku.name}: {est.reason}{fix}",
        )
    nodes = count or est.node_count
    if nodes > 1 and ws.runtime == names.RUNTIME_TRANSFORMERS:
        raise PlanError(
            "PresetDoesNotFit",
            f"preset {preset.name} needs {nodes} x {sku.name}, and the transformers runtime "
            f"({names.ANNOTATION_RUNTIME}) serves from one node; use vllm or a larger SKU",
        )
    distributed: tuple[tuple[str, str | int | float | bool], ...] = ()
    if nodes > 1:
        keep = (
            "tensor_parallel_size",
            "pipeline_parallel_size",
            "data_parallel_size",
            "nnodes",
            "distributed_executor_backend",
        )
        args = est.vllm_args()
        for key in keep:
            value = args.get(key)
            if isinstance(value, str | int | float | bool):
                distributed += ((key, value),)
    hub_engine: tuple[tuple[str, str | int | float | bool], ...] = ()
    # The in-pod server plans catalog presets from --instance-type; a Hub model, or GPUs known
    # only from a node's labels, it cannot plan, so the split travels on the command line.
    # A partition is such a case too: the server would plan the whole SKU, not the partition.
    labels_only = not ws.resource.instance_type or part is not None
    if (preset.custom or labels_only) and nodes == 1:
        split = est.vllm_args()
        for key in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            value = split.get(key)
            if isinstance(value, int) and (value > 1 or key == "tensor_parallel_size"):
                hub_engine += ((key, value),)
    # a partition asks for exactly its GPUs, as upstream; a whole node for the estimator's
    per_node = sku.gpu_count if part is not None else (est.gpus_per_node if est.fits else gpus) or gpus
    return Plan(
        hub_repo=preset.hf_repo if preset.custom else None,
        hub_revision=preset.revision,
        hub_engine=hub_engine,
        node_count=nodes,
        gpus_per_node=per_node,
        tensor_parallel=est.tensor_parallel,
        pipeline_parallel=max(nodes, est.pipeline_parallel) if nodes > 1 else est.pipeline_parallel,
        storage_gib=int(preset.weights_gb * 1.5) + 20 if preset.weights_gb else None,
        distributed=distributed,
        bypassed=verdict.bypassed,
        gpu_resource=resource,
    )


def leader_address(ws: Obj) -> str:
    meta = ws["metadata"]
    return f"{meta['name']}-0.{headless_name(meta['name'])}.{meta['namespace']}.svc.cluster.local"


def _engine_args(ws: Obj, plan: Plan) -> dict[str, str | int | float | bool]:
    if not plan.multi_node:
        return {}
    args: dict[str, str | int | float | bool] = {
        "tensor_parallel_size": plan.tensor_parallel,
        "pipeline_parallel_size": plan.node_count,
        "distributed_executor_backend": "mp",
        "nnodes": plan.node_count,
    }
    args.update(dict(plan.distributed))  # the estimator's split wins where it has one
    # Kubernetes expands $(POD_INDEX) from the container's env before the program starts.
    args.update(node_rank=f"$({ENV_POD_INDEX})", master_addr=leader_address(ws), master_port=DIST_PORT)
    return args


def _probes(plan: Plan, options: WorkspaceControllerOptions) -> dict[str, Obj]:
    if plan.multi_node:
        # Only the leader serves HTTP; workers are alive while their process is.
        script = (
            "import os,sys,urllib.request\n"
            f"sys.exit(0) if os.environ.get('{ENV_POD_INDEX}','0')!='0' else "
            f"urllib.request.urlopen('http://127.0.0.1:{INFERENCE_PORT}{HEALTH_PATH}',timeout=5)"
        )
        handler: Obj = {"exec": {"command": ["python", "-c", script]}}
    else:
        handler = {"httpGet": {"path": HEALTH_PATH, "port": INFERENCE_PORT}}
    return {
        "startupProbe": {
            **handler,
            "periodSeconds": 10,
            "failureThreshold": options.startup_failure_threshold,
        },
        "livenessProbe": {**handler, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {**handler, "initialDelaySeconds": 30, "periodSeconds": 10},
    }


def _adapter_init_containers(
    ws: Workspace, options: WorkspaceControllerOptions
) -> tuple[list[Obj], list[Obj]]:
    """One init container per adapter image, copying its files to /mnt/adapter/<name>; and the
    strength env entries the server reads."""
    inits: list[Obj] = []
    env: list[Obj] = []
    for adapter in (ws.inference.adapters if ws.inference else None) or []:
        name = adapter.source.name
        try:
            env.append(adapter_strength_env(name, adapter.strength or "1.0"))
        except ValueError:
            raise PlanError(
                "InvalidAdapterName",
                f"inference.adapters: source name {name!r} must be a DNS-1123 label "
                "(lower case, digits, '-')",
            ) from None
        if adapter.source.volume_source is not None:
            continue  # mounted in place by _adapter_volumes: nothing to copy
        if not adapter.source.image:
            raise PlanError(
                "UnsupportedAdapterSource",
                f"inference.adapters[{name}]: set source.image (an adapter image) or "
                "source.volumeSource (a volume holding the adapter's files)",
            )
        init: Obj = {
            "name": f"adapter-{name}"[:63].rstrip("-"),
            "image": adapter.source.image,
            "command": [
                "sh",
                "-c",
                f"mkdir -p {ADAPTERS_DIR}/{name} && cp -r {IMAGE_ADAPTER_DIR}/. {ADAPTERS_DIR}/{name}/",
            ],
            "volumeMounts": [{"name": "adapters", "mountPath": ADAPTERS_DIR}],
        }
        if options.image_pull_policy:
            init["imagePullPolicy"] = options.image_pull_policy
        inits.append(init)
    return inits, env


def _adapter_volumes(ws: Workspace) -> tuple[list[Obj], list[Obj]]:
    """Adapters whose ``source.volumeSource`` holds their files: each volume is mounted, read-only,
    at /mnt/adapter/<name>, where the server looks for adapters, so no init container copies them
    (as upstream; a volume wins over an image when a source names both, as upstream)."""
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    for adapter in (ws.inference.adapters if ws.inference else None) or []:
        source = adapter.source.volume_source
        if source is None:
            continue
        volume = f"adapter-volume-{adapter.source.name}"[:63].rstrip("-")
        volumes.append({"name": volume, **source})
        target = f"{ADAPTERS_DIR}/{adapter.source.name}"
        mounts.append({"name": volume, "mountPath": target, "readOnly": True})
    return volumes, mounts


def api_key_env(annotations: dict[str, str] | None) -> Obj | None:
    """The server's API key as an env var read from the Secret ``kaito.sh/api-key-secret`` names.

    ``valueFrom.secretKeyRef`` and never ``value``: the key stays out of the StatefulSet, its
    ControllerRevisions and anything that can read pod specs. Not optional: a missing Secret or
    key keeps the pod in CreateContainerConfigError (reported as the Workspace's failure) rather
    than starting a server without authentication.
    """
    try:
        ref = api_key_secret_of(annotations)
    except ValueError as exc:
        raise PlanError(
            "InvalidAPIKeySecret", f"annotation {names.ANNOTATION_API_KEY_SECRET}: {exc}"
        ) from None
    if ref is None:
        return None
    return {"name": ENV_API_KEY, "valueFrom": {"secretKeyRef": {"name": ref[0], "key": ref[1]}}}


def pull_secrets(ws: Workspace) -> list[Obj]:
    seen: list[str] = []
    preset = ws.inference.preset if ws.inference else None
    if preset is not None and preset.preset_options is not None:
        seen += preset.preset_options.image_pull_secrets or []
    for adapter in (ws.inference.adapters if ws.inference else None) or []:
        seen += adapter.source.image_pull_secrets or []
    return [{"name": n} for n in dict.fromkeys(seen)]


def _pod_spec(
    ws_obj: Obj,
    ws: Workspace,
    plan: Plan,
    affinity: Obj,
    options: WorkspaceControllerOptions,
    tolerations: list[Obj],
) -> Obj:
    assert ws.inference is not None and ws.inference.preset is not None
    preset = ws.inference.preset
    image = options.inference_image
    if preset.access_mode == "private" and preset.preset_options and preset.preset_options.image:
        image = preset.preset_options.image
    inits, env = _adapter_init_containers(ws, options)
    if preset.preset_options and preset.preset_options.model_access_secret:
        env.append(
            {
                "name": ENV_HF_TOKEN,
                "valueFrom": {
                    "secretKeyRef": {"name": preset.preset_options.model_access_secret, "key": ENV_HF_TOKEN}
                },
            }
        )
    api_key = api_key_env(ws.metadata.annotations)
    if api_key is not None:
        env.append(api_key)
    if plan.multi_node:
        env.append(
            {
                "name": ENV_POD_INDEX,
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}},
            }
        )
    # Only an explicit kaito.sh/runtime goes on the command line (it then wins over the ConfigMap),
    # so Workspaces without it keep their pod spec, and their revision, unchanged.
    explicit_runtime = (ws.metadata.annotations or {}).get(names.ANNOTATION_RUNTIME)
    engine_args = _engine_args(ws_obj, plan)
    mode = (ws.metadata.annotations or {}).get(names.ANNOTATION_PERFORMANCE_MODE)
    if mode in names.PERFORMANCE_MODES and ws.runtime == names.RUNTIME_VLLM:
        engine_args["performance_mode"] = mode  # to vLLM's own parser, past the server's flags
    # the split the server cannot plan itself (empty for a catalog preset on a named SKU)
    engine_args = {**dict(plan.hub_engine), **engine_args}
    if plan.hub_repo is not None and plan.hub_revision != "main":
        # No catalog entry in the pod: vLLM downloads org/model itself (with HF_TOKEN when the
        # Workspace names a modelAccessSecret), at the pinned revision.
        engine_args["revision"] = plan.hub_revision
    command = InferenceCommand(
        preset=None if plan.hub_repo is not None else preset.name,
        model=plan.hub_repo,
        # under a partition the server must not plan the whole SKU: the split is in engine_args
        instance_type=ws.resource.instance_type if ws.resource.partition is None else None,
        runtime=explicit_runtime if explicit_runtime in names.RUNTIMES else None,
        config_file=f"{CONFIG_DIR}/{INFERENCE_CONFIG_FILE}",
        engine_args=engine_args,
        bypass_resource_checks=plan.bypassed and plan.hub_repo is None,
    ).argv()
    ports: list[Obj] = [{"name": "http", "containerPort": INFERENCE_PORT, "protocol": "TCP"}]
    if plan.multi_node:
        ports.append({"name": "torch-dist", "containerPort": DIST_PORT, "protocol": "TCP"})
    mounts: list[Obj] = [
        {"name": "dshm", "mountPath": SHM_DIR},
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
    ]
    volumes: list[Obj] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {
            "name": "config",
            "configMap": {"name": ws.inference.config or DEFAULT_CONFIG_NAME},
        },
    ]
    if inits:
        mounts.append({"name": "adapters", "mountPath": ADAPTERS_DIR})
        volumes.append({"name": "adapters", "emptyDir": {}})
    adapter_volumes, adapter_mounts = _adapter_volumes(ws)
    volumes += adapter_volumes
    mounts += adapter_mounts
    gpus = str(plan.gpus_per_node)
    gpu = plan.gpu_resource
    container: Obj = {
        "name": CONTAINER,
        "image": image,
        "command": command,
        "ports": ports,
        "env": env,
        "resources": {"requests": {gpu: gpus}, "limits": {gpu: gpus}},
        "volumeMounts": mounts,
        **_probes(plan, options),
    }
    if options.image_pull_policy:
        container["imagePullPolicy"] = options.image_pull_policy
    if not env:
        del container["env"]
    tolerations = copy.deepcopy(tolerations)
    if gpu != GPU_RESOURCE:
        # As upstream: a cluster admin may taint MIG nodes with the slice's resource name.
        tolerations.append({"key": gpu, "operator": "Exists", "effect": "NoSchedule"})
    spec: Obj = {
        "containers": [container],
        "volumes": volumes,
        "tolerations": tolerations,
        "affinity": copy.deepcopy(affinity),
    }
    if inits:
        spec["initContainers"] = inits
    secrets = pull_secrets(ws)
    if secrets:
        spec["imagePullSecrets"] = secrets
    if plan.multi_node:
        spec["affinity"]["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": selector_labels(ws_obj)},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    # No API token, no capabilities, seccomp on: see kaito.controllers.workspace.podsecurity.
    return restrict_pod(spec)


def template_gpus(template: Obj) -> int:
    total = 0
    for c in ((template.get("spec") or {}).get("containers")) or []:
        res = c.get("resources") or {}
        raw = (res.get("limits") or {}).get(GPU) or (res.get("requests") or {}).get(GPU)
        try:
            total += int(str(raw)) if raw is not None else 0
        except ValueError:
            raise PlanError(
                "InvalidTemplate",
                f"inference.template: container {c.get('name')}: {GPU} {raw!r} is not a whole number",
            ) from None
    return total


def _template_pod(ws: Workspace, plan: Plan, affinity: Obj, tolerations: list[Obj]) -> tuple[Obj, Obj]:
    """The user's pod template as given; kaito adds its labels, and its GPU tolerations and node
    affinity only where the template sets none."""
    assert ws.inference is not None and ws.inference.template is not None
    template = copy.deepcopy(ws.inference.template)
    spec = template.get("spec")
    if not isinstance(spec, dict) or not spec.get("containers"):
        raise PlanError("InvalidTemplate", "inference.template needs spec.containers (a PodTemplateSpec)")
    asked = template_gpus(template)
    if asked > plan.gpus_per_node and ws.resource.instance_type and get_sku(ws.resource.instance_type):
        raise PlanError(
            "TemplateGPUMismatch",
            f"inference.template asks for {asked} GPUs per pod; "
            f"{ws.resource.instance_type} has {plan.gpus_per_node}",
        )
    spec.setdefault("tolerations", copy.deepcopy(tolerations))
    spec.setdefault("affinity", copy.deepcopy(affinity))
    return (template.get("metadata") or {}), spec


def build_statefulset(
    ws_obj: Obj,
    ws: Workspace,
    plan: Plan,
    *,
    affinity: Obj,
    revision: int,
    options: WorkspaceControllerOptions,
    tolerations: list[Obj] | None = None,
) -> Obj:
    """``affinity`` and ``tolerations``: the placement the node provisioner returned
    (:class:`kaito.nodes.Placement`); tolerations default to the GPU nodes' taints."""
    tolerations = TOLERATIONS if tolerations is None else tolerations
    meta = ws_obj["metadata"]
    assert ws.inference is not None
    if ws.inference.template is not None:
        tmeta, pod_spec = _template_pod(ws, plan, affinity, tolerations)
        pod_labels = {**(tmeta.get("labels") or {}), **child_labels(ws_obj)}
        pod_annotations = {**(tmeta.get("annotations") or {})}
    else:
        pod_spec = _pod_spec(ws_obj, ws, plan, affinity, options, tolerations)
        pod_labels, pod_annotations = child_labels(ws_obj), {}
    pod_annotations[names.ANNOTATION_REVISION] = str(revision)
    sts: Obj = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": child_labels(ws_obj),
            "annotations": {names.ANNOTATION_REVISION: str(revision)},
        },
        "spec": {
            "replicas": plan.node_count,
            "podManagementPolicy": "Parallel",
            "serviceName": headless_name(meta["name"]),
            "selector": {"matchLabels": selector_labels(ws_obj)},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }
    if ws.inference.template is None:
        try:  # the weights image or node folder (kaito.controllers.workspace.inference.weights)
            apply_weights_source(sts, ws, plan.storage_gib, options)
        except WeightsSourceError as exc:
            raise PlanError(exc.reason, str(exc)) from None
    set_controller_reference(ws_obj, sts)
    return sts
