"""Ports, paths, environment names and command lines shared by pod specs and in-pod programs.

Pure: no I/O, no imports beyond the standard library, so the controller side (no torch) and the
in-pod side (no Kubernetes client) can both depend on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

#: The inference server's HTTP port inside the pod (the Service maps 80 to it), as upstream.
INFERENCE_PORT: Final = 5000
#: The port torch.distributed / vLLM's multi-node backend listens on in the leader pod.
DIST_PORT: Final = 29500
#: Liveness, readiness and startup probes all ask this path; it answers 503 while loading.
HEALTH_PATH: Final = "/health"

#: Where the inference or tuning ConfigMap is mounted.
CONFIG_DIR: Final = "/mnt/config"
#: The key of the inference ConfigMap (upstream's name, so its ConfigMaps work unchanged).
INFERENCE_CONFIG_FILE: Final = "inference_config.yaml"
#: The key of the tuning ConfigMap.
TUNING_CONFIG_FILE: Final = "training_config.yaml"
#: One folder per adapter below this: ``/mnt/adapter/<adapter-name>/``.
ADAPTERS_DIR: Final = "/mnt/adapter"
#: Inside an adapter image, the folder whose files the init container copies.
IMAGE_ADAPTER_DIR: Final = "/data"
#: Files every adapter folder holds (peft's layout, which vLLM also reads).
ADAPTER_CONFIG_FILE: Final = "adapter_config.json"
ADAPTER_WEIGHTS_FILE: Final = "adapter_model.safetensors"
#: Tuning input lands here; tuning output (the adapter) is written to RESULTS_DIR.
DATA_DIR: Final = "/mnt/data"
RESULTS_DIR: Final = "/mnt/results"
#: Shared memory for NCCL / torch workers: a memory-backed emptyDir.
SHM_DIR: Final = "/dev/shm"
#: Where weights live in the image (or a local copy is mounted).
DEFAULT_MODEL_DIR: Final = "/workspace/model"

ENV_MODEL: Final = "KAITO_MODEL"
ENV_PRESET: Final = "KAITO_PRESET"
ENV_INSTANCE_TYPE: Final = "KAITO_INSTANCE_TYPE"
ENV_CONFIG: Final = "KAITO_INFERENCE_CONFIG"
#: The ordinal of a pod in a multi-node StatefulSet (0 is the leader).
ENV_POD_INDEX: Final = "POD_INDEX"
#: Set (by kaito's local node only) when /workspace/model holds a random-weight stand-in rather
#: than the preset's weights; its value is the note every surface shows.
ENV_STANDIN: Final = "KAITO_STANDIN"
#: The inference API key (a Bearer token every route but /health and /metrics requires). The
#: controller sets it from a Secret with ``valueFrom.secretKeyRef``, so the value never appears in
#: the pod spec; unset means no authentication.
ENV_API_KEY: Final = "KAITO_API_KEY"
#: The pod annotation carrying the same note, for the controller's InferenceReady message.
ANNOTATION_STANDIN: Final = "kaito.sh/weights"

# An adapter's strength travels as an env var named exactly after the adapter (upstream's
# convention). Adapter names are DNS-1123 labels, which are also valid env var names once the
# dash is allowed (Kubernetes permits any printable name but '='), so no mangling is needed.
_ADAPTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_adapter_env_name(name: str) -> bool:
    """True when ``name`` could be an adapter strength variable (a DNS-1123 label)."""
    return bool(_ADAPTER_NAME.match(name)) and len(name) <= 63


def adapter_strength_env(name: str, strength: float | str) -> dict[str, str]:
    """The container env entry that gives adapter ``name`` its strength."""
    if not is_adapter_env_name(name):
        raise ValueError(f"adapter name {name!r} is not a DNS-1123 label")
    return {"name": name, "value": str(strength)}


@dataclass(frozen=True)
class InferenceCommand:
    """The inference container's command line, built by the controller, parsed by the server.

    Both sides use the flag names below: ``kaito.inference.config.build_parser`` defines them.
    """

    preset: str | None = None
    instance_type: str | None = None
    model: str | None = None
    #: ``vllm`` or ``transformers`` (the Workspace's ``kaito.sh/runtime``); None: the server's default.
    runtime: str | None = None
    config_file: str | None = f"{CONFIG_DIR}/{INFERENCE_CONFIG_FILE}"
    adapters_dir: str = ADAPTERS_DIR
    port: int = INFERENCE_PORT
    engine_args: dict[str, str | int | float | bool] = field(default_factory=dict)
    python: str = "python"
    #: The Workspace carries ``kaito.sh/bypass-resource-checks``: the controller has already
    #: planned the preset onto a SKU too small for it, and the server must not refuse to start
    #: on the same verdict. Only written when set, so other Workspaces' pod specs do not change.
    bypass_resource_checks: bool = False

    def argv(self) -> list[str]:
        out = [self.python, "-m", "kaito.inference"]
        if self.preset:
            out += ["--preset", self.preset]
        if self.instance_type:
            out += ["--instance-type", self.instance_type]
        if self.bypass_resource_checks:
            out.append("--bypass-resource-checks")
        if self.model:
            out += ["--model", self.model]
        if self.runtime:
            out += ["--runtime", self.runtime]
        if self.config_file:
            out += ["--config", self.config_file]
        out += ["--adapters-dir", self.adapters_dir, "--port", str(self.port)]
        for key, value in sorted(self.engine_args.items()):
            flag = "--" + key.replace("_", "-")
            if value is True:
                out.append(flag)
            elif value is False:
                continue
            else:
                out += [flag, str(value)]
        return out
