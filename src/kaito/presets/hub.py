"""Any Hugging Face model as a preset: a repo's ``config.json`` and weight sizes -> ModelPreset.

Upstream Kaito v0.12 serves ``inference.preset.name: org/model`` for models it has no preset
for by reading the repo's config and file sizes from the Hub. This module is the pure half of
that: it turns what was fetched into the same :class:`ModelPreset` the catalog holds, so the one
estimator sizes catalog and Hub models alike. Fetching (HTTP, tokens, caching) lives above this
package, in :mod:`kaito.api.hub`, because presets stays free of I/O (the in-pod runtime imports it).

Which architectures vLLM can serve comes from the packaged ``data/vllm_architectures.yaml``,
generated from the inference image's vLLM by ``hack/vllm-architectures.py``: the operator does not
install vLLM, and a model vLLM cannot load should be refused at admission, not at pod start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError

from kaito.presets.catalog import HF_REPO_RE, ModelPreset, PresetError

#: ``org/model`` or ``org/model@revision`` (a branch, tag or commit).
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
#: Bytes per parameter of the checkpoint dtypes config.json names.
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float": 4, "half": 2}
#: The longest context assumed when config.json names none (upstream's default token limit).
DEFAULT_CONTEXT_LENGTH = 2048


class HubModelError(PresetError):
    """A Hub model kaito cannot serve; ``reason`` is a short machine-readable cause."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class HubModelRef:
    """A Hugging Face repo id with the revision to read (``main`` unless pinned with ``@``)."""

    repo: str
    revision: str = "main"

    def __str__(self) -> str:
        return self.repo if self.revision == "main" else f"{self.repo}@{self.revision}"


def parse_model_ref(name: str) -> HubModelRef | None:
    """``org/model[@revision]`` as a reference, or None when ``name`` is not of that form
    (a catalog preset name such as ``phi-4``)."""
    repo, sep, revision = name.partition("@")
    if not HF_REPO_RE.match(repo) or ".." in repo:
        return None
    if sep and (not _REVISION_RE.match(revision) or ".." in revision):
        return None
    return HubModelRef(repo, revision or "main")


@dataclass(frozen=True)
class VllmArchitectures:
    vllm_version: str
    text_generation: frozenset[str]
    multimodal: frozenset[str]

    def supports(self, architecture: str) -> bool:
        return architecture in self.text_generation or architecture in self.multimodal


@cache
def vllm_architectures() -> VllmArchitectures:
    text = resources.files("kaito.presets").joinpath("data/vllm_architectures.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    return VllmArchitectures(
        vllm_version=str(data["vllm_version"]),
        text_generation=frozenset(data["text_generation"]),
        multimodal=frozenset(data["multimodal"]),
    )


def _merged(config: Mapping[str, Any]) -> dict[str, Any]:
    """Multimodal configs (Gemma 3, Mistral 3, Llava) keep the language model's numbers under
    ``text_config`` or ``llm_config``; those fill in what the top level lacks."""
    out = dict(config)
    for key in ("text_config", "llm_config"):
        nested = config.get(key)
        if isinstance(nested, Mapping):
            for k, v in nested.items():
                out.setdefault(k, v)
            break
    return out


def _int(config: Mapping[str, Any], keys: Iterable[str]) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def weight_files_bytes(files: Iterable[tuple[str, int]]) -> int:
    """Checkpoint bytes from a repo's ``(path, size)`` listing: the ``.safetensors`` files, or
    the ``.bin`` files when there are none (what vLLM loads, as upstream's generator counts)."""
    listing = list(files)
    safetensors = [s for p, s in listing if p.endswith(".safetensors")]
    if safetensors:
        return sum(safetensors)
    return sum(s for p, s in listing if p.endswith(".bin") and "pytorch_model" in p)


def preset_from_hf_config(
    ref: HubModelRef,
    config: Mapping[str, Any],
    checkpoint_bytes: int,
    *,
    requires_token: bool = False,
) -> ModelPreset:
    """The preset the estimator sizes for a Hub model, from its config.json and checkpoint size.

    Raises :class:`HubModelError` when vLLM cannot serve the architecture or the config lacks
    the numbers sizing needs. A float32 checkpoint is counted at the 16-bit size vLLM loads it in.
    """
    name = str(ref)
    cfg = _merged(config)
    archs = [a for a in cfg.get("architectures") or [] if isinstance(a, str)]
    table = vllm_architectures()
    if not archs:
        raise HubModelError(
            "NoArchitecture",
            f"{name}: config.json names no architectures, so kaito cannot tell whether vLLM serves it; "
            "use a repo with a transformers config.json",
        )
    supported = [a for a in archs if table.supports(a)]
    if not supported:
        raise HubModelError(
            "UnsupportedArchitecture",
            f"{name} is a {', '.join(archs)} model, which vLLM {table.vllm_version} (kaito's inference "
            "runtime) does not support; pick a model with a supported architecture "
            "(https://docs.vllm.ai/en/latest/models/supported_models.html)",
        )
    layers = _int(cfg, ("num_hidden_layers", "n_layer", "num_layers", "n_layers"))
    heads = _int(cfg, ("num_attention_heads", "n_head", "num_heads", "n_heads"))
    hidden = _int(cfg, ("hidden_size", "n_embd", "d_model", "dim"))
    missing = [n for n, v in (("num_hidden_layers", layers), ("num_attention_heads", heads)) if v is None]
    if missing or layers is None or heads is None:
        raise HubModelError(
            "IncompleteConfig",
            f"{name}: config.json lacks {', '.join(missing)}, which sizing the GPUs needs; "
            "set annotation kaito.sh/model-parameters to give the numbers",
        )
    kv_heads = _int(cfg, ("num_key_value_heads", "num_kv_heads", "multi_query_group_num", "n_kv_heads"))
    head_dim = _int(cfg, ("head_dim",)) or (hidden // heads if hidden else None)
    if head_dim is None:
        raise HubModelError(
            "IncompleteConfig",
            f"{name}: config.json gives neither head_dim nor hidden_size; set annotation "
            "kaito.sh/model-parameters to give the numbers",
        )
    if checkpoint_bytes <= 0:
        raise HubModelError(
            "NoWeights",
            f"{name}@{ref.revision} has no .safetensors or .bin weight files; vLLM has nothing to load",
        )
    raw_dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    file_bytes_per_param = _DTYPE_BYTES.get(raw_dtype, 2)
    quant = cfg.get("quantization_config")
    quantization = (
        str(quant.get("quant_method")) if isinstance(quant, Mapping) and quant.get("quant_method") else None
    )
    # vLLM loads float32 checkpoints in 16 bits; quantized ones at their file size.
    served_bytes = checkpoint_bytes if quantization else checkpoint_bytes * 2 // file_bytes_per_param
    params = checkpoint_bytes / file_bytes_per_param
    data: dict[str, Any] = {
        "name": name,
        "hf_repo": ref.repo,
        "revision": ref.revision,
        "architecture": supported[0],
        "params_b": round(params / 1e9, 3) or 0.001,
        "weights_gb": served_bytes / 1e9,
        "dtype": "float16" if raw_dtype in ("float16", "half") else "bfloat16",
        "quantization": quantization,
        "context_length": _int(
            cfg,
            (
                "max_position_embeddings",
                "n_positions",
                "max_sequence_length",
                "seq_length",
                "model_max_length",
            ),
        )
        or DEFAULT_CONTEXT_LENGTH,
        "num_layers": layers,
        "hidden_size": hidden or heads * head_dim,
        "vocab_size": _int(cfg, ("vocab_size", "padded_vocab_size")) or 0,
        # transformers' PretrainedConfig ties the lm_head to the embeddings unless told otherwise
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", True)),
        "num_attention_heads": heads,
        "num_kv_heads": kv_heads or heads,
        "head_dim": head_dim,
        "kv_lora_rank": _int(cfg, ("kv_lora_rank",)) or 0,
        "qk_rope_head_dim": _int(cfg, ("qk_rope_head_dim",)) or 0,
        "runtimes": ("vllm",),
        "requires_token": requires_token,
        "custom": True,
    }
    try:
        return ModelPreset.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise HubModelError(
            "IncompleteConfig", f"{name}: config.json gives an unusable {err['loc'][0]}: {err['msg']}"
        ) from None
