"""Server settings and vLLM engine arguments: preset + GPU, then a config file, then flags.

Precedence, lowest first: built-in defaults < what the preset and the GPU SKU imply (tensor
parallel, dtype, max model length, memory utilisation, parsers) < the inference config file
(``vllm:`` section, Kaito's ConfigMap format) < command-line flags. Engine arguments are kept as
a plain ``{dest: value}`` dict and rendered to vLLM's own command line at the end, so vLLM's
argument parser is the single validator: an argument vLLM does not know, or a value it refuses,
stops start-up with one line naming the argument and where it came from.

Upstream Kaito's inference ConfigMaps and flags work unchanged: ``--kaito-config-file`` (its
top-level ``max_probe_steps`` and ``kv_cache_cpu_memory_utilization`` next to ``vllm:``),
``--kaito-adapters-dir``, ``--kaito-max-probe-steps``, ``--kaito-kv-cache-cpu-memory-utilization``
and ``--kaito-disable-rate-limit``. Defaults follow upstream: with ``max_probe_steps`` > 0 and no
explicit ``max-model-len`` the longest context that fits the KV cache is used (upstream probes for
it; vLLM's ``--max-model-len auto`` measures the same thing), and without an explicit
``gpu-memory-utilization`` the server takes the GPU's free memory less 600 MiB, at most 0.95.
vLLM arguments upstream's ConfigMaps still carry but this vLLM no longer has (``swap-space``...) are
dropped with a warning rather than refused.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kaito.contract import (
    ADAPTERS_DIR,
    DEFAULT_MODEL_DIR,
    DIST_PORT,
    ENV_API_KEY,
    ENV_CONFIG,
    ENV_INSTANCE_TYPE,
    ENV_MODEL,
    ENV_POD_INDEX,
    ENV_PRESET,
    ENV_STANDIN,
    INFERENCE_PORT,
)

Runtime = Literal["vllm", "transformers"]
DEFAULT_PORT = INFERENCE_PORT
DEFAULT_ADAPTERS_DIR = Path(ADAPTERS_DIR)
DEFAULT_MODEL = DEFAULT_MODEL_DIR
SERVER_KEYS = (
    "max_queue",
    "retry_after",
    "body_timeout",
    "body_budget_mib",
    "adapters_dir",
    "port",
    "host",
    "runtime",
    "served_model_name",
)
#: Upstream's max_probe_steps when a config file is given without it.
DEFAULT_MAX_PROBE_STEPS = 6
#: vLLM arguments that upstream Kaito's ConfigMaps use but vLLM removed: dropped with this warning.
RETIRED_ENGINE_ARGS = {
    "swap_space": "vLLM's V1 engine recomputes preempted requests instead of swapping them to CPU",
    "max_seq_len_to_capture": "vLLM sizes CUDA graphs from cudagraph_capture_sizes now",
    "num_scheduler_steps": "multi-step scheduling was removed with vLLM's V0 engine",
}
#: Where upstream's images keep their chat templates; its ConfigMaps point ``chat-template`` there.
UPSTREAM_CHAT_TEMPLATE_DIR = "/workspace/chat_templates/"
#: Upstream's reserve below free GPU memory for allocator fragmentation, and its cap.
GPU_MEMORY_RESERVE_BYTES = 600 << 20
MAX_GPU_MEMORY_UTILIZATION = 0.95


def _max_model_len(value: str) -> int | str:
    """vLLM's spelling: a token count, or ``auto``/-1 for "the longest that fits"."""
    if value.strip().lower() in ("auto", "-1"):
        return "auto"
    return int(value)


# Engine settings that have their own typed flags (``kaito serve --help`` lists them); anything
# else vLLM accepts can still be passed after them and goes to vLLM's parser unchanged.
ENGINE_FLAGS: dict[str, Callable[[str], Any]] = {
    "tensor_parallel_size": int,
    "pipeline_parallel_size": int,
    "max_model_len": _max_model_len,
    "gpu_memory_utilization": float,
    "dtype": str,
    "quantization": str,
    "chat_template": str,
    "tool_call_parser": str,
    "reasoning_parser": str,
    "max_num_seqs": int,
    "max_lora_rank": int,
    # data parallel and vLLM's multi-node backend, as the estimator plans them
    "data_parallel_size": int,
    "distributed_executor_backend": str,
    "nnodes": int,
    "node_rank": int,
    "master_addr": str,
    "master_port": int,
}


class ConfigError(ValueError):
    """A start-up configuration problem; its message is the one line the operator sees."""


@dataclass
class InferenceSettings:
    """Everything the server needs to start; engine_args holds vLLM ``dest`` names."""

    model: str = DEFAULT_MODEL
    runtime: Runtime = "vllm"
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    served_model_name: str | None = None
    adapters_dir: Path = DEFAULT_ADAPTERS_DIR
    max_queue: int = 64
    retry_after: int = 1
    #: Seconds a generation request's body may take to arrive; it is read whole before the
    #: request is admitted, so a slow sender holds a connection, not an engine slot (408 after).
    body_timeout: int = 30
    #: MiB of request bodies held in memory at once, over all connections (503 beyond it).
    body_budget_mib: int = 128
    #: Bearer tokens every route but /health and /metrics requires (empty: no authentication).
    #: From ``KAITO_API_KEY``; the vLLM backend adds vLLM's own ``--api-key``/``VLLM_API_KEY``.
    api_keys: list[str] = field(default_factory=list, repr=False)
    #: ``--kaito-disable-rate-limit``: never answer 429, queue every request in the engine.
    rate_limit: bool = True
    #: Upstream's probe budget for the longest context; 0 keeps the planned max-model-len.
    max_probe_steps: int | None = None
    #: Upstream's KV-cache offload share of host RAM (LMCache); accepted, see kv_offload_note.
    kv_cache_cpu_memory_utilization: float | None = None
    warnings: list[str] = field(default_factory=list)
    preset: str | None = None
    instance_type: str | None = None
    engine_args: dict[str, Any] = field(default_factory=dict)
    passthrough: list[str] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.preset or self.model


def preset_engine_args(
    preset_name: str,
    instance_type: str | None,
    *,
    node_count: int = 1,
    bypass_resource_checks: bool = False,
) -> dict[str, Any]:
    """Engine arguments the catalog implies for ``preset_name`` on ``node_count`` x ``instance_type``.

    The node count is the controller's (it passes ``--nnodes`` whenever it planned more than one
    node), never re-chosen here: a server that picked its own count could wait for pods that do
    not exist. A plan that does not fit is refused unless ``bypass_resource_checks`` (the
    Workspace's bypass annotation, which the controller honoured when it planned the nodes):
    then the estimator's split is used as planned and vLLM finds out on the hardware.

    Without an instance type (or on a SKU the table does not know) only the preset's own
    properties apply: its parsers and its context length.
    """
    from kaito.presets import PresetError, estimate, get_preset, get_sku

    try:
        preset = get_preset(preset_name)
    except PresetError as exc:
        raise ConfigError(f"preset {preset_name!r}: {exc}") from None
    args: dict[str, Any] = {"max_model_len": preset.context_length}
    if preset.tool_parser:
        args["tool_call_parser"] = preset.tool_parser
        args["enable_auto_tool_choice"] = True
    if preset.reasoning_parser:
        args["reasoning_parser"] = preset.reasoning_parser
    if preset.quantization:
        args["quantization"] = preset.quantization
    if instance_type:
        sku = get_sku(instance_type)
        if sku is None:
            raise ConfigError(f"instance type {instance_type!r} is not in the GPU SKU table")
        plan = estimate(preset, sku, node_count)
        if not plan.fits and not bypass_resource_checks:
            raise ConfigError(
                f"preset {preset_name!r} does not fit {node_count} x {instance_type}: {plan.reason}"
            )
        planned = plan.vllm_args()
        if not plan.fits:
            # bypassed: the estimator found no KV-cache room (max_model_len 0); keep the
            # preset's own context length and let vLLM size what it can on the hardware
            planned = {k: v for k, v in planned.items() if k != "max_model_len" or v}
        args.update(planned)
    return args


def load_config_file(path: Path) -> dict[str, Any]:
    """Read the inference config YAML; only known top-level sections are accepted."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read inference config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"inference config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"inference config {path} must be a mapping, got {type(data).__name__}")
    sections = {"vllm", "transformers", "server"}
    allowed = sections | {"max_probe_steps", "kv_cache_cpu_memory_utilization"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"inference config {path}: unknown section(s) {unknown}; allowed: {sorted(allowed)}"
        )
    steps = data.get("max_probe_steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
        raise ConfigError(
            f"inference config {path}: max_probe_steps must be a non-negative integer, got {steps!r}"
        )
    share = data.get("kv_cache_cpu_memory_utilization")
    if share is not None and (
        isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1
    ):
        raise ConfigError(
            f"inference config {path}: kv_cache_cpu_memory_utilization must be a number from 0 to 1, "
            f"got {share!r}"
        )
    for section in sections & set(data):
        if data[section] is not None and not isinstance(data[section], dict):
            raise ConfigError(f"inference config {path}: section {section!r} must be a mapping")
    server = data.get("server") or {}
    bad = sorted(set(server) - set(SERVER_KEYS))
    if bad:
        raise ConfigError(
            f"inference config {path}: unknown server setting(s) {bad}; allowed: {list(SERVER_KEYS)}"
        )
    return data


def _dest(key: str) -> str:
    return key.strip().lstrip("-").replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    """Kaito's own flags; unknown flags are kept and handed to vLLM's parser."""
    p = argparse.ArgumentParser(
        prog="kaito serve",
        description="Kaito inference server (vLLM or transformers). Flags vLLM knows may follow.",
    )
    p.add_argument(
        "--model",
        default=os.environ.get(ENV_MODEL),
        help=f"model folder or Hugging Face id (${ENV_MODEL}; default {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--runtime",
        choices=["vllm", "transformers"],
        default=None,
        help="vllm (default), or transformers for models vLLM cannot run",
    )
    p.add_argument("--host", default=None, help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument(
        "--served-model-name",
        default=None,
        help="the model's name in /v1/models and requests (default: the preset's)",
    )
    p.add_argument(
        "--adapters-dir",
        "--kaito-adapters-dir",
        dest="adapters_dir",
        type=Path,
        default=None,
        help=f"folder of LoRA adapters loaded at start, one sub-folder each (default {DEFAULT_ADAPTERS_DIR})",
    )
    p.add_argument("--max-queue", type=int, default=None, help="waiting requests before 429 (default 64)")
    p.add_argument("--retry-after", type=int, default=None, help="Retry-After seconds on 429 (default 1)")
    p.add_argument(
        "--body-timeout", type=int, default=None, help="seconds a request body may take to arrive (408 after)"
    )
    p.add_argument(
        "--body-budget-mib",
        type=int,
        default=None,
        help="MiB of request bodies held in memory at once, all connections together (503 beyond)",
    )
    p.add_argument(
        "--config",
        "--kaito-config-file",
        dest="config",
        type=Path,
        default=os.environ.get(ENV_CONFIG) or None,
        help=f"inference config file, upstream Kaito's ConfigMap format (${ENV_CONFIG})",
    )
    p.add_argument(
        "--kaito-max-probe-steps",
        dest="max_probe_steps",
        type=int,
        default=None,
        help="upstream's probe budget for the longest context that fits; 0 keeps the planned max-model-len",
    )
    p.add_argument(
        "--kaito-kv-cache-cpu-memory-utilization",
        dest="kv_cache_cpu_memory_utilization",
        type=float,
        default=None,
        help="upstream's share of host RAM for KV-cache offload (accepted; see docs/inference.md)",
    )
    p.add_argument(
        "--kaito-disable-rate-limit", dest="disable_rate_limit", action="store_true", help="never answer 429"
    )
    p.add_argument(
        "--preset",
        default=os.environ.get(ENV_PRESET),
        help=f"kaito preset whose defaults apply (${ENV_PRESET})",
    )
    p.add_argument(
        "--instance-type",
        default=os.environ.get(ENV_INSTANCE_TYPE),
        help=f"GPU SKU the preset is planned for: parallelism, dtype, memory (${ENV_INSTANCE_TYPE})",
    )
    p.add_argument(
        "--bypass-resource-checks",
        action="store_true",
        help="start even where the preset does not fit the instance type's GPU memory "
        "(the Workspace's kaito.sh/bypass-resource-checks; the controller sets it)",
    )
    for dest, typ in ENGINE_FLAGS.items():
        p.add_argument(
            "--" + dest.replace("_", "-"),
            dest=dest,
            type=typ,
            default=None,
            help=f"vLLM's --{dest.replace('_', '-')} (default: what the preset and SKU imply)",
        )
    return p


def default_gpu_memory_utilization(free_bytes: int, total_bytes: int) -> float:
    """Upstream's start-up default: the free share of the GPU less 600 MiB, floored to 0.01, at
    most 0.95 - so a GPU that something else already uses does not run out of memory."""
    share = (free_bytes - GPU_MEMORY_RESERVE_BYTES) * 100 // total_bytes / 100
    return float(min(MAX_GPU_MEMORY_UTILIZATION, share))


def _gpu_memory_info() -> tuple[int, int] | None:
    """(free, total) bytes of GPU 0 from NVML, which does not initialise CUDA; None without a GPU."""
    try:
        import pynvml  # type: ignore[import-not-found,import-untyped,unused-ignore]

        pynvml.nvmlInit()
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
            return int(info.free), int(info.total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def drop_retired_engine_args(engine_args: dict[str, Any], known_flags: set[str]) -> list[str]:
    """Remove arguments vLLM no longer has but upstream's ConfigMaps carry; one warning each."""
    warnings = []
    for dest, why in RETIRED_ENGINE_ARGS.items():
        if dest in engine_args and "--" + dest.replace("_", "-") not in known_flags:
            engine_args.pop(dest)
            warnings.append(f"ignoring vLLM argument {dest.replace('_', '-')}: {why}")
    return warnings


def parse_settings(argv: Sequence[str]) -> InferenceSettings:
    """Merge defaults, preset/SKU, the config file and flags into one InferenceSettings."""
    ns, rest = build_parser().parse_known_args(list(argv))
    s = InferenceSettings()
    engine: dict[str, Any] = {}
    if ns.preset:
        s.preset = ns.preset
        s.instance_type = ns.instance_type
        engine.update(
            preset_engine_args(
                ns.preset,
                ns.instance_type,
                node_count=ns.nnodes or 1,
                bypass_resource_checks=ns.bypass_resource_checks,
            )
        )
    file_server: dict[str, Any] = {}
    explicit: set[str] = set()
    if ns.config is not None:
        data = load_config_file(ns.config)
        file_server = dict(data.get("server") or {})
        s.max_probe_steps = data.get("max_probe_steps", DEFAULT_MAX_PROBE_STEPS)
        s.kv_cache_cpu_memory_utilization = data.get("kv_cache_cpu_memory_utilization")
        runtime_section = (
            "transformers" if (ns.runtime or file_server.get("runtime")) == "transformers" else "vllm"
        )
        for key, value in (data.get(runtime_section) or {}).items():
            engine[_dest(str(key))] = value
            explicit.add(_dest(str(key)))
    if ns.max_probe_steps is not None:
        s.max_probe_steps = ns.max_probe_steps
    if ns.kv_cache_cpu_memory_utilization is not None:
        s.kv_cache_cpu_memory_utilization = ns.kv_cache_cpu_memory_utilization
    s.rate_limit = not ns.disable_rate_limit
    for key in SERVER_KEYS:
        flag = getattr(ns, key, None)
        value = flag if flag is not None else file_server.get(key)
        if value is None:
            continue
        if key == "adapters_dir":
            value = Path(value)
        elif key in ("max_queue", "retry_after", "body_timeout", "body_budget_mib", "port") and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ConfigError(f"server setting {key!r} must be a non-negative integer, got {value!r}")
        setattr(s, key, value)
    if s.body_budget_mib < 1:
        raise ConfigError("server setting 'body_budget_mib' must be at least 1: no request could be read")
    s.api_keys = api_keys_from_env(os.environ)
    if s.runtime not in ("vllm", "transformers"):
        raise ConfigError(f"runtime must be 'vllm' or 'transformers', got {s.runtime!r}")
    for dest in ENGINE_FLAGS:
        value = getattr(ns, dest)
        if value is not None:
            engine[dest] = value
            explicit.add(dest)
    _multi_node(engine)
    template = engine.get("chat_template")
    if (
        isinstance(template, str)
        and template.startswith(UPSTREAM_CHAT_TEMPLATE_DIR)
        and not Path(template).exists()
    ):
        engine.pop("chat_template")
        s.warnings.append(
            f"ignoring chat-template {template}: a path inside upstream Kaito's image, which kaito's does "
            "not carry; the model's own chat template is used"
        )
    if "max_model_len" not in explicit and (s.max_probe_steps or 0) > 0 and s.runtime == "vllm":
        engine["max_model_len"] = "auto"
    if engine.get("max_model_len") == -1:
        engine["max_model_len"] = "auto"
    if "gpu_memory_utilization" not in engine and s.runtime == "vllm":
        info = _gpu_memory_info()
        if info is not None:
            engine["gpu_memory_utilization"] = default_gpu_memory_utilization(*info)
    if s.kv_cache_cpu_memory_utilization:
        s.warnings.append(
            f"kv_cache_cpu_memory_utilization {s.kv_cache_cpu_memory_utilization} accepted but not applied: "
            "KV-cache offload to host memory needs LMCache, which kaito's runtime does not ship"
        )
    s.model = ns.model or DEFAULT_MODEL
    standin = os.environ.get(ENV_STANDIN, "")
    if standin:  # kaito's local node mounted random weights: say so at start-up
        s.warnings.append(standin)
    if standin and s.runtime == "vllm":
        # a second served name, so /v1/models says it too; the preset's name keeps working
        engine.setdefault("served_model_name", [s.model_name, f"{s.model_name}-random-weight-stand-in"])
    s.engine_args = engine
    s.passthrough = list(rest)
    return s


def api_keys_from_env(env: Mapping[str, str]) -> list[str]:
    """``KAITO_API_KEY`` as the list of accepted keys. Surrounding whitespace is dropped (a
    Secret written from a file often ends in a newline); set but empty is refused, because a
    server started without the key it was meant to require would serve anyone."""
    raw = env.get(ENV_API_KEY)
    if raw is None:
        return []
    key = raw.strip()
    if not key:
        raise ConfigError(f"{ENV_API_KEY} is set but empty: refusing to serve without the API key")
    return [key]


def _multi_node(engine: dict[str, Any]) -> None:
    """A plan over several nodes: every pod runs this same command line; its rank is the pod's
    ordinal (``POD_INDEX``). Rank 0 serves the API; the others run vLLM's headless workers."""
    nodes = int(engine.get("nnodes") or 1)
    if nodes <= 1:
        return
    if "node_rank" not in engine:
        index = os.environ.get(ENV_POD_INDEX)
        if index is None or not index.isdigit():
            raise ConfigError(
                f"nnodes {nodes} needs this pod's rank: set {ENV_POD_INDEX} (the StatefulSet ordinal) "
                "or --node-rank"
            )
        engine["node_rank"] = int(index)
    if not engine.get("master_addr"):
        raise ConfigError(f"nnodes {nodes} needs --master-addr: the address of the rank-0 pod")
    engine.setdefault("master_port", DIST_PORT)
    engine.setdefault("distributed_executor_backend", "mp")
    if int(engine["node_rank"]) > 0:
        engine["headless"] = True


def unknown_engine_keys(engine_args: dict[str, Any], known_flags: set[str]) -> list[str]:
    """Keys vLLM's parser does not know, each with its closest known spelling."""
    msgs: list[str] = []
    for dest in engine_args:
        flag = "--" + dest.replace("_", "-")
        if flag in known_flags:
            continue
        close = difflib.get_close_matches(flag, sorted(known_flags), n=1)
        msgs.append(f"{dest.replace('_', '-')}" + (f" (did you mean {close[0][2:]}?)" if close else ""))
    return msgs
