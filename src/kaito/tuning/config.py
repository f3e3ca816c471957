"""The training configuration: upstream's ``training_config.yaml`` sections over a default template.

The file holds one ``training_config`` mapping with upstream Kaito's sections. The method's
default template (``kaito.contract.tuning.DEFAULT_TEMPLATES``, upstream's values) is the base; a
user's ConfigMap only needs the keys it changes, section by section. Every key is checked against
what the library it is handed to accepts (peft's ``LoraConfig``, transformers' ``TrainingArguments``
and ``BitsAndBytesConfig``) or our own fixed list, so a typo stops the Job with one line naming the
key instead of being silently ignored for hours of GPU time.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kaito.contract.tuning import DEFAULT_TEMPLATES, Method
from kaito.tuning.errors import TuningError

SECTIONS = (
    "ModelConfig",
    "TokenizerParams",
    "QuantizationConfig",
    "LoraConfig",
    "TrainingArguments",
    "DataCollator",
    "DatasetConfig",
)
#: from_pretrained arguments a tuning run may set (the model path comes from --model).
MODEL_KEYS = frozenset(
    {
        "torch_dtype",
        "dtype",
        "local_files_only",
        "device_map",
        "trust_remote_code",
        "revision",
        "attn_implementation",
        "low_cpu_mem_usage",
        "use_safetensors",
        "cache_dir",
        "chat_template",
    }
)
TOKENIZER_KEYS = frozenset({"padding", "truncation", "max_length", "add_special_tokens"})
COLLATOR_KEYS = frozenset({"mlm", "mlm_probability", "pad_to_multiple_of"})
DATASET_KEYS = frozenset(
    {
        "dataset_path",
        "dataset_extension",
        "shuffle_dataset",
        "shuffle_seed",
        "context_column",
        "response_column",
        "messages_column",
        "train_test_split",
    }
)
DTYPES = ("float32", "float16", "bfloat16", "auto")


@dataclass
class TrainingConfig:
    """The merged sections, each a plain dict of keyword arguments for its library."""

    method: Method
    model: dict[str, Any] = field(default_factory=dict)
    tokenizer: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    collator: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)

    @property
    def load_in_4bit(self) -> bool:
        return bool(self.quantization.get("load_in_4bit") or self.quantization.get("load_in_8bit"))

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.get("max_length", 1024))


def _sections(text: str, origin: str) -> dict[str, dict[str, Any]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TuningError(f"{origin}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping) or set(data) != {"training_config"}:
        keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise TuningError(f"{origin}: expected one top-level key training_config, got {keys}")
    body = data["training_config"] or {}
    if not isinstance(body, Mapping):
        raise TuningError(f"{origin}: training_config must be a mapping of sections")
    out: dict[str, dict[str, Any]] = {}
    for name, section in body.items():
        if name not in SECTIONS:
            raise TuningError(f"{origin}: {_unknown(f'training_config.{name}', str(name), SECTIONS)}")
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise TuningError(f"{origin}: training_config.{name} must be a mapping of settings")
        out[name] = {str(k): v for k, v in section.items()}
    return out


def _unknown(path: str, key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.7)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{path}: unknown key; {hint}remove it or use a supported setting"


def known_keys(section: str) -> frozenset[str]:
    """The keys a section accepts, read from the library the section is passed to."""
    if section == "ModelConfig":
        return MODEL_KEYS
    if section == "TokenizerParams":
        return TOKENIZER_KEYS
    if section == "DataCollator":
        return COLLATOR_KEYS
    if section == "DatasetConfig":
        return DATASET_KEYS
    if section == "LoraConfig":
        from peft import LoraConfig

        return frozenset(f.name for f in dataclasses.fields(LoraConfig) if f.init)
    if section == "TrainingArguments":
        from transformers import TrainingArguments

        return frozenset(f.name for f in dataclasses.fields(TrainingArguments) if f.init)
    if section == "QuantizationConfig":
        from transformers import BitsAndBytesConfig

        params = inspect.signature(BitsAndBytesConfig.__init__).parameters
        return frozenset(p for p in params if p not in ("self", "kwargs")) | {"quant_method"}
    raise KeyError(section)


def load_config(method: Method, path: Path | None) -> TrainingConfig:
    """The method's template with the file's sections laid over it, every key checked."""
    merged = _sections(DEFAULT_TEMPLATES[method], f"default {method} template")
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise TuningError(f"tuning config {path}: cannot read ({exc.strerror})") from None
        for name, section in _sections(text, str(path)).items():
            merged.setdefault(name, {}).update(section)
    origin = str(path) if path is not None else f"default {method} template"
    for name, section in merged.items():
        known = known_keys(name)
        for key in section:
            if key not in known:
                raise TuningError(f"{origin}: {_unknown(f'training_config.{name}.{key}', key, known)}")
    cfg = TrainingConfig(
        method=method,
        model=merged.get("ModelConfig", {}),
        tokenizer=merged.get("TokenizerParams", {}),
        quantization=merged.get("QuantizationConfig", {}),
        lora=merged.get("LoraConfig", {}),
        training=merged.get("TrainingArguments", {}),
        collator=merged.get("DataCollator", {}),
        dataset=merged.get("DatasetConfig", {}),
    )
    _check(cfg, origin)
    return cfg


def _check(cfg: TrainingConfig, origin: str) -> None:
    dtype = cfg.model.get("torch_dtype", cfg.model.get("dtype"))
    if dtype is not None and dtype not in DTYPES:
        raise TuningError(
            f"{origin}: training_config.ModelConfig.torch_dtype {dtype!r} is not one of {', '.join(DTYPES)}"
        )
    if cfg.method == "qlora" and not cfg.load_in_4bit:
        raise TuningError(
            f"{origin}: method qlora needs training_config.QuantizationConfig.load_in_4bit: true; "
            "set it or use method lora"
        )
    if cfg.method == "lora" and cfg.load_in_4bit:
        raise TuningError(
            f"{origin}: method lora must not quantize (QuantizationConfig.load_in_4bit/8bit); "
            "use method qlora for a quantized base model"
        )
    split = cfg.dataset.get("train_test_split", 1)
    if not isinstance(split, int | float) or not 0 < float(split) <= 1:
        raise TuningError(
            f"{origin}: training_config.DatasetConfig.train_test_split {split!r} must be a number in (0, 1]"
        )
    r = cfg.lora.get("r", 8)
    if not isinstance(r, int) or r < 1:
        raise TuningError(f"{origin}: training_config.LoraConfig.r {r!r} must be a positive integer")
    max_len = cfg.tokenizer.get("max_length", 1024)
    if not isinstance(max_len, int) or max_len < 8:
        raise TuningError(f"{origin}: training_config.TokenizerParams.max_length {max_len!r} must be >= 8")
