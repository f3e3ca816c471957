"""The ConfigMaps a Workspace names (``inference.config``, ``tuning.config``), checked before any
pod starts.

The inference server reads the ConfigMap's ``inference_config.yaml`` key at start-up
(``kaito.inference.config.load_config_file`` is the authority). A missing ConfigMap leaves the pod
stuck in ContainerCreating, and a bad file crash-loops it; both are found late and far from the
Workspace. The admission webhook reads the ConfigMap through the API and applies these checks,
which mirror the server's start-up rules (a unit test holds the two to the same verdicts), plus
upstream Kaito's one cross-check: an explicit ``max-model-len`` above the model's context window.

``tuning.config`` is checked for what the tuning job needs before it reads anything else: the
``training_config.yaml`` key holding a YAML mapping (the tuning controller otherwise finds a
missing ConfigMap only after the GPU nodes are up).

Pure: the caller fetches the ConfigMap (the webhook with its client, ``kaito validate`` from the
files it was given) and passes the object here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from kaito.contract import INFERENCE_CONFIG_FILE, TUNING_CONFIG_FILE
from kaito.presets import ModelPreset

#: The keys the inference server and the tuning job read (the names upstream uses).
CONFIG_KEY = INFERENCE_CONFIG_FILE
TUNING_CONFIG_KEY = TUNING_CONFIG_FILE
SECTIONS = ("vllm", "transformers", "server")
TOP_LEVEL = (*SECTIONS, "max_probe_steps", "kv_cache_cpu_memory_utilization")
SERVER_KEYS = ("max_queue", "retry_after", "adapters_dir", "port", "host", "runtime", "served_model_name")
_MAX_MODEL_LEN_KEYS = ("max-model-len", "max_model_len", "--max-model-len")


def _yaml_key(config_map: Mapping[str, Any], key: str, what: str) -> tuple[Any, str | None]:
    """The parsed YAML under ``key``, or the one problem that stops reading it: the server and the
    tuning job each read a single file key, and a missing key or broken YAML is all they report."""
    name = (config_map.get("metadata") or {}).get("name", "?")
    data = config_map.get("data")
    text = data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(text, str):
        return None, (
            f"ConfigMap {name!r} has no key {key}; put {what} under that key "
            f"(kubectl create configmap {name} --from-file={key})"
        )
    try:
        return yaml.safe_load(text), None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        return None, f"ConfigMap {name!r} key {key} is not valid YAML{at}: {_first_line(exc)}"


def config_map_problems(
    config_map: Mapping[str, Any], preset: ModelPreset | None, runtime: str = "vllm"
) -> list[str]:
    """What is wrong with this ConfigMap as an inference config (empty when nothing is)."""
    name = (config_map.get("metadata") or {}).get("name", "?")
    parsed, problem = _yaml_key(config_map, CONFIG_KEY, "the server settings")
    if problem:
        return [problem]
    if parsed is None:
        return []
    if not isinstance(parsed, dict):
        return [
            f"ConfigMap {name!r} key {CONFIG_KEY} must be a mapping (e.g. 'vllm: {{...}}'), "
            f"got {type(parsed).__name__}"
        ]
    problems: list[str] = []
    where = f"ConfigMap {name!r} {CONFIG_KEY}"
    unknown = sorted(str(k) for k in set(parsed) - set(TOP_LEVEL))
    if unknown:
        problems.append(f"{where}: unknown top-level key(s) {unknown}; allowed: {list(TOP_LEVEL)}")
    for section in SECTIONS:
        if parsed.get(section) is not None and not isinstance(parsed[section], dict):
            problems.append(f"{where}: {section!r} must be a mapping of settings")
    steps = parsed.get("max_probe_steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
        problems.append(f"{where}: max_probe_steps must be a non-negative integer, got {steps!r}")
    share = parsed.get("kv_cache_cpu_memory_utilization")
    if share is not None and (
        isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1
    ):
        problems.append(
            f"{where}: kv_cache_cpu_memory_utilization must be a number from 0 to 1, got {share!r}"
        )
    server = parsed.get("server")
    if isinstance(server, dict):
        bad = sorted(str(k) for k in set(server) - set(SERVER_KEYS))
        if bad:
            problems.append(f"{where}: unknown server setting(s) {bad}; allowed: {list(SERVER_KEYS)}")
    vllm = parsed.get("vllm")
    if runtime == "vllm" and isinstance(vllm, dict):
        problems += _max_model_len_problems(where, vllm, preset)
    return problems


def tuning_config_map_problems(config_map: Mapping[str, Any]) -> list[str]:
    """What stops the tuning job from reading this ConfigMap (empty when nothing does)."""
    name = (config_map.get("metadata") or {}).get("name", "?")
    parsed, problem = _yaml_key(config_map, TUNING_CONFIG_KEY, "the tuning settings")
    if problem:
        return [problem]
    if parsed is not None and not isinstance(parsed, dict):
        return [f"ConfigMap {name!r} key {TUNING_CONFIG_KEY} must be a mapping, got {type(parsed).__name__}"]
    return []


def _max_model_len_problems(where: str, vllm: dict[Any, Any], preset: ModelPreset | None) -> list[str]:
    for key in _MAX_MODEL_LEN_KEYS:
        if key not in vllm:
            continue
        raw = vllm[key]
        text = str(raw).strip()
        if raw is None or text == "" or text.lower() in ("auto", "-1"):
            return []  # unset, or vLLM's "the longest context that fits"
        if isinstance(raw, bool):
            return [f"{where}: vllm.{key} must be a token count or 'auto', got {raw!r}"]
        try:
            value = int(text)
        except ValueError:
            return [f"{where}: vllm.{key} must be a token count or 'auto', got {raw!r}"]
        if value < 1:
            return [f"{where}: vllm.{key} must be at least 1 (or 'auto'), got {value}"]
        if preset is not None and value > preset.context_length:
            return [
                f"{where}: vllm.{key} {value} exceeds {preset.name}'s context window of "
                f"{preset.context_length} tokens; set it to at most {preset.context_length}, or remove it "
                "to let the server pick the longest context that fits"
            ]
        return []
    return []


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
