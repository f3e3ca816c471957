"""Server settings and vLLM engine arguments: preset + GPU, then a config file, then flags.

Precedence, lowest first: built-in defaults < what the preset and the GPU SKU imply (tensor
parallel, dtype, max model length, memory utilisation, parsers) < the inference config file
(``vllm:`` section, Kaito's ConfigMap format) < command-line flags. Engine arguments are kept as
a plain ``{dest: value}`` dict and rendered to vLLM's own command line at the end, so vLLM's
argument parser is the single validator: an argument vLLM does not know, or a value it refuses,
stops start-up with one line naming the argument and where it came from.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Runtime = Literal["vllm", "transformers"]
DEFAULT_PORT = 5000
DEFAULT_ADAPTERS_DIR = Path("/mnt/adapter")
DEFAULT_MODEL = "/workspace/model"
SERVER_KEYS = ("max_queue", "retry_after", "adapters_dir", "port", "host", "runtime", "served_model_name")
# Engine settings that have their own typed flags (``kaito serve --help`` lists them); anything
# else vLLM accepts can still be passed after them and goes to vLLM's parser unchanged.
ENGINE_FLAGS: dict[str, type] = {
    "tensor_parallel_size": int,
    "pipeline_parallel_size": int,
    "max_model_len": int,
    "gpu_memory_utilization": float,
    "dtype": str,
    "quantization": str,
    "chat_template": str,
    "tool_call_parser": str,
    "reasoning_parser": str,
    "max_num_seqs": int,
    "max_lora_rank": int,
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
    preset: str | None = None
    instance_type: str | None = None
    engine_args: dict[str, Any] = field(default_factory=dict)
    passthrough: list[str] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.preset or self.model


def preset_engine_args(preset_name: str, instance_type: str | None) -> dict[str, Any]:
    """Engine arguments the catalog implies for ``preset_name`` on ``instance_type``.

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
        plan = estimate(preset, sku)
        if not plan.fits:
            raise ConfigError(f"preset {preset_name!r} does not fit {instance_type}: {plan.reason}")
        args.update(plan.vllm_args())
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
    allowed = {"vllm", "transformers", "server"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"inference config {path}: unknown section(s) {unknown}; allowed: {sorted(allowed)}"
        )
    for section in allowed & set(data):
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
    p.add_argument("--model", default=os.environ.get("KAITO_MODEL"), help="model path or id")
    p.add_argument("--runtime", choices=["vllm", "transformers"], default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--adapters-dir", type=Path, default=None)
    p.add_argument("--max-queue", type=int, default=None, help="waiting requests before 429")
    p.add_argument("--retry-after", type=int, default=None, help="Retry-After seconds on 429")
    p.add_argument("--config", type=Path, default=os.environ.get("KAITO_INFERENCE_CONFIG"))
    p.add_argument("--preset", default=os.environ.get("KAITO_PRESET"))
    p.add_argument("--instance-type", default=os.environ.get("KAITO_INSTANCE_TYPE"))
    for dest, typ in ENGINE_FLAGS.items():
        p.add_argument("--" + dest.replace("_", "-"), dest=dest, type=typ, default=None)
    return p


def parse_settings(argv: Sequence[str]) -> InferenceSettings:
    """Merge defaults, preset/SKU, the config file and flags into one InferenceSettings."""
    ns, rest = build_parser().parse_known_args(list(argv))
    s = InferenceSettings()
    engine: dict[str, Any] = {}
    if ns.preset:
        s.preset = ns.preset
        s.instance_type = ns.instance_type
        engine.update(preset_engine_args(ns.preset, ns.instance_type))
    file_server: dict[str, Any] = {}
    if ns.config is not None:
        data = load_config_file(ns.config)
        file_server = dict(data.get("server") or {})
        runtime_section = (
            "transformers" if (ns.runtime or file_server.get("runtime")) == "transformers" else "vllm"
        )
        for key, value in (data.get(runtime_section) or {}).items():
            engine[_dest(str(key))] = value
    for key in SERVER_KEYS:
        flag = getattr(ns, key, None)
        value = flag if flag is not None else file_server.get(key)
        if value is None:
            continue
        if key == "adapters_dir":
            value = Path(value)
        elif key in ("max_queue", "retry_after", "port") and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ConfigError(f"server setting {key!r} must be a non-negative integer, got {value!r}")
        setattr(s, key, value)
    if s.runtime not in ("vllm", "transformers"):
        raise ConfigError(f"runtime must be 'vllm' or 'transformers', got {s.runtime!r}")
    for dest in ENGINE_FLAGS:
        value = getattr(ns, dest)
        if value is not None:
            engine[dest] = value
    s.model = ns.model or DEFAULT_MODEL
    s.engine_args = engine
    s.passthrough = list(rest)
    return s


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
