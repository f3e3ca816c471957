"""The model preset catalog: the architecture facts kaito needs to size GPUs and engines.

Loaded once from the packaged ``data/models.yaml``; no network access, so the in-pod inference
runtime can import it. A preset name may also be any Hugging Face ``org/model`` id, in which case
the caller supplies the architecture numbers (see :func:`custom_preset`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Dtype = Literal["bfloat16", "float16"]
TuningMethod = Literal["lora", "qlora"]

#: ``org/model`` as Hugging Face spells repository ids.
HF_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class PresetError(ValueError):
    """A preset name that is unknown, deprecated, or a custom model with bad parameters."""


class ModelPreset(BaseModel):
    """One model: where to fetch it and the numbers that decide its GPU footprint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    hf_repo: str
    revision: str = "main"
    architecture: str = ""
    params_b: float = Field(gt=0, description="parameters, billions")
    weights_gb: float = Field(gt=0, description="checkpoint size in GB (1e9 bytes)")
    dtype: Dtype = "bfloat16"
    quantization: str | None = None
    min_compute_capability: float = 7.0
    context_length: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(default=0, ge=0)
    vocab_size: int = Field(default=0, ge=0, description="0 when unknown (custom models)")
    tie_word_embeddings: bool = False
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    #: Multi-head latent attention (DeepSeek V3 family): the KV cache holds one compressed latent
    #: of ``kv_lora_rank + qk_rope_head_dim`` values per layer instead of per-head K and V.
    kv_lora_rank: int = Field(default=0, ge=0)
    qk_rope_head_dim: int = Field(default=0, ge=0)
    runtimes: tuple[str, ...] = ("vllm", "transformers")
    tool_parser: str | None = None
    reasoning_parser: str | None = None
    requires_token: bool = False
    tuning: tuple[TuningMethod, ...] = ()
    deprecated: str | None = None
    custom: bool = False
    #: Upstream Kaito's own figures, kept only to compare plans (docs/estimator-vs-upstream.md):
    #: its TotalSafeTensorFileSize, and whether it lets the model span nodes / use tensor parallel.
    upstream_file_size_gib: float | None = None
    upstream_distributed: bool = False
    upstream_disable_tp: bool = False

    @property
    def gated(self) -> bool:
        """The Hugging Face download needs an access token (upstream: downloadAuthRequired)."""
        return self.requires_token

    @property
    def weights_bytes(self) -> int:
        return int(self.weights_gb * 1e9)

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank > 0

    def embedding_bytes(self, dtype_bytes: int = 2) -> int:
        """One vocab x hidden matrix (input embeddings, or an untied lm_head); 0 when unknown.

        Quantized checkpoints keep these in 16-bit, so the dtype is the activation dtype.
        """
        return self.vocab_size * self.hidden_size * dtype_bytes

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV cache bytes one token needs over all layers (all tensor-parallel ranks together).

        Standard attention: 2 (K and V) x layers x kv_heads x head_dim. MLA: layers x
        (kv_lora_rank + qk_rope_head_dim), replicated on every tensor-parallel rank.
        """
        if self.uses_mla:
            return self.num_layers * (self.kv_lora_rank + self.qk_rope_head_dim) * dtype_bytes
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    def kv_bytes_per_token_per_layer_rank(self, tp: int, dtype_bytes: int = 2) -> int:
        """KV bytes per token for one layer on one GPU of a ``tp``-way tensor-parallel group.

        KV heads are split over the group; when ``tp`` exceeds the KV-head count vLLM replicates
        heads so every GPU holds at least one. The MLA latent is not split at all.
        """
        if self.uses_mla:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * dtype_bytes
        heads = max(self.num_kv_heads // tp, 1)
        return 2 * heads * self.head_dim * dtype_bytes


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    catalog_version: str
    models: tuple[ModelPreset, ...]


@cache
def load_catalog() -> Catalog:
    text = resources.files("kaito.presets").joinpath("data/models.yaml").read_text(encoding="utf-8")
    return Catalog.model_validate(yaml.safe_load(text))


@cache
def _by_name() -> dict[str, ModelPreset]:
    return {m.name: m for m in load_catalog().models}


def catalog_version() -> str:
    return load_catalog().catalog_version


def list_presets(*, include_deprecated: bool = False) -> list[ModelPreset]:
    return [m for m in load_catalog().models if include_deprecated or not m.deprecated]


def find_preset(name: str) -> ModelPreset | None:
    """The catalog entry called ``name`` (deprecated ones included), or None."""
    return _by_name().get(name)


def get_preset(name: str) -> ModelPreset:
    """The catalog entry for ``name``; raises :class:`PresetError` if unknown or deprecated."""
    preset = _by_name().get(name)
    if preset is None:
        raise PresetError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    if preset.deprecated:
        raise PresetError(f"preset {name!r} is deprecated: {preset.deprecated}")
    return preset


def preset_names() -> list[str]:
    return [m.name for m in list_presets()]


def is_hf_repo_id(name: str) -> bool:
    return bool(HF_REPO_RE.match(name)) and ".." not in name


#: Architecture numbers a custom model must supply (the rest have defaults).
CUSTOM_REQUIRED = (
    "params_b",
    "context_length",
    "num_layers",
    "num_attention_heads",
    "num_kv_heads",
    "head_dim",
)


def custom_preset(hf_repo: str, params: Mapping[str, Any]) -> ModelPreset:
    """A preset for any Hugging Face ``org/model`` id from caller-supplied config.json facts.

    ``weights_gb`` defaults to two bytes per parameter (an unquantized fp16/bf16 checkpoint).
    """
    if not is_hf_repo_id(hf_repo):
        raise PresetError(f"{hf_repo!r} is not a Hugging Face model id of the form org/model")
    missing = [k for k in CUSTOM_REQUIRED if k not in params]
    if missing:
        raise PresetError(f"custom model {hf_repo!r} needs parameters: {', '.join(missing)}")
    data: dict[str, Any] = {"name": hf_repo, "hf_repo": hf_repo, "custom": True, **params}
    try:
        data.setdefault("weights_gb", float(data["params_b"]) * 2)
        return ModelPreset.model_validate(data)
    except (ValidationError, TypeError, ValueError) as exc:
        raise PresetError(f"custom model {hf_repo!r} has invalid parameters: {_first_error(exc)}") from None


def resolve_preset(name: str, params: Mapping[str, Any] | None = None) -> ModelPreset:
    """A catalog preset by name, or a custom preset for an HF id when ``params`` are given."""
    if name in _by_name():
        return get_preset(name)
    if is_hf_repo_id(name):
        if not params:
            raise PresetError(
                f"{name!r} is not in the catalog; give its parameters ({', '.join(CUSTOM_REQUIRED)})"
            )
        return custom_preset(name, params)
    return get_preset(name)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return f"{loc}: {err['msg']}"
    return str(exc)
