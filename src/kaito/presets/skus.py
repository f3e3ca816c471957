"""GPU instance types per cloud: what one node brings to a model (GPUs, memory, dtype support).

Loaded from the packaged ``data/skus.yaml``; lookups are case-insensitive because Azure and
users spell VM sizes both ways.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

Cloud = Literal["azure", "aws", "arc"]
CLOUDS: tuple[Cloud, ...] = ("azure", "aws", "arc")
Vendor = Literal["nvidia", "amd", "aws-neuron"]
#: How upstream Kaito v0.12 treats a SKU: in its tables, dropped from them, or never listed.
UpstreamStatus = Literal["listed", "dropped", "absent"]
GIB = 1 << 30
#: Upstream v0.12's SKU tables keep only GPUs of at least this CUDA compute capability.
UPSTREAM_MIN_COMPUTE_CAPABILITY = 8.0

_VENDOR_UNSUPPORTED = {
    "amd": "AMD GPUs need a ROCm build of vLLM; kaito's inference image is CUDA-only",
    "aws-neuron": (
        "Trainium/Inferentia need the AWS Neuron SDK build of vLLM; kaito's inference image is CUDA-only"
    ),
}


class GPUSku(BaseModel):
    """One instance type."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str
    cloud: Cloud
    aliases: tuple[str, ...] = ()
    gpu_model: str = Field(alias="gpu")
    gpu_count: int = Field(alias="gpus", gt=0)
    gpu_memory_gib: float = Field(alias="gpu_mem_gib", gt=0)
    compute_capability: float = Field(alias="cc")
    bf16: bool
    nvme_gb: int = 0
    price_per_hour: float | None = Field(default=None, alias="price")
    vendor: Vendor = "nvidia"
    upstream_status: UpstreamStatus | None = Field(default=None, alias="upstream")

    @property
    def gpu_memory_bytes(self) -> int:
        return int(self.gpu_memory_gib * GIB)

    @property
    def supported(self) -> bool:
        """Whether kaito's inference runtime (vLLM on CUDA) can run on this SKU at all."""
        return self.vendor == "nvidia"

    @property
    def unsupported_reason(self) -> str:
        if self.supported:
            return ""
        why = _VENDOR_UNSUPPORTED[self.vendor]
        return f"{self.name} ({self.gpu_model}) is not supported by the vLLM runtime: {why}"

    @property
    def upstream(self) -> UpstreamStatus:
        """Upstream v0.12's treatment; NVIDIA GPUs below compute capability 8.0 were dropped."""
        if self.upstream_status is not None:
            return self.upstream_status
        if self.vendor == "nvidia" and self.compute_capability < UPSTREAM_MIN_COMPUTE_CAPABILITY:
            return "dropped"
        return "listed"

    @property
    def upstream_note(self) -> str:
        """One line for users coming from upstream Kaito; empty when upstream treats it alike."""
        if self.upstream == "dropped":
            return (
                f"upstream Kaito v0.12 no longer supports {self.name}: its SKU tables keep only GPUs of "
                f"compute capability >= {UPSTREAM_MIN_COMPUTE_CAPABILITY} ({self.gpu_model} is "
                f"{self.compute_capability}: no bfloat16, no FlashAttention); kaito keeps it and runs float16"
            )
        if self.upstream == "absent":
            return f"upstream Kaito v0.12 does not list {self.name}; kaito sizes it from the same rules"
        return ""

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_memory_gib * self.gpu_count


class SkuTable(BaseModel):
    model_config = ConfigDict(frozen=True)

    table_version: str
    skus: tuple[GPUSku, ...]


@cache
def load_skus() -> SkuTable:
    text = resources.files("kaito.presets").joinpath("data/skus.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    skus = [
        GPUSku.model_validate({**entry, "cloud": cloud})
        for cloud, entries in raw["skus"].items()
        for entry in entries
    ]
    return SkuTable(table_version=raw["table_version"], skus=tuple(skus))


@cache
def _index() -> dict[str, GPUSku]:
    idx: dict[str, GPUSku] = {}
    for sku in load_skus().skus:
        for key in (sku.name, *sku.aliases):
            idx[key.lower()] = sku
    return idx


def get_sku(instance_type: str) -> GPUSku | None:
    """The SKU for an instance type (or alias), any letter case; None if kaito doesn't know it."""
    return _index().get(instance_type.lower())


def list_skus(cloud: str | None = None) -> list[GPUSku]:
    return [s for s in load_skus().skus if cloud is None or s.cloud == cloud]


def sku_names(cloud: str | None = None) -> list[str]:
    return [s.name for s in list_skus(cloud)]
