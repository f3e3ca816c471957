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

Cloud = Literal["azure", "aws"]
CLOUDS: tuple[Cloud, ...] = ("azure", "aws")
GIB = 1 << 30


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

    @property
    def gpu_memory_bytes(self) -> int:
        return int(self.gpu_memory_gib * GIB)

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
