"""GPU partitions as the estimator sees them: a MIG slice, or some of a node's whole GPUs.

``resource.partition`` (upstream v0.12's, behind its ``enableMIG`` / ``enableAccelerator``
gates) runs a Workspace on less than a whole node. Both modes are sized by turning the partition
into a :class:`~kaito.presets.skus.GPUSku` the estimator plans on as on any other:

- ``mig``: one GPU whose memory is the slice's (the ``10gb`` of ``1g.10gb``, read as GiB and
  rounded down, as upstream does). A slice cannot be split further, so a model that does not fit
  one slice does not fit at all. The pod asks for ``nvidia.com/mig-<profile>``, the resource the
  NVIDIA device plugin advertises per profile under its "mixed" strategy.
- ``accelerator``: the node's GPU with ``count`` of them instead of all (``count`` above the
  node's GPUs is an error). The pod asks for ``count`` ``nvidia.com/gpu``.

Pure: the profile list is NVIDIA's published MIG profiles for the GPUs that have MIG.
"""

from __future__ import annotations

import math
import re
from typing import Final

from kaito.presets.skus import GPUSku

#: The extended resource of one MIG slice is this prefix plus the profile (``nvidia.com/mig-1g.10gb``).
MIG_RESOURCE_PREFIX: Final = "nvidia.com/mig-"
#: Every MIG-capable GPU (A30, A100, H100, H200, B200) has compute capability 8.0 or above: the
#: floor kaito assumes for a slice when nothing better is known.
MIG_MIN_COMPUTE_CAPABILITY: Final = 8.0
_PROFILE = re.compile(r"^([0-9]+)g\.([0-9]+(?:\.[0-9]+)?)gb$")

#: NVIDIA's MIG profiles, by GPU (docs.nvidia.com, "Supported MIG Profiles").
MIG_PROFILES: Final[dict[str, tuple[str, ...]]] = {
    "A30 24GB": ("1g.6gb", "2g.12gb", "4g.24gb"),
    "A100 40GB": ("1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100 / H100 80GB": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100 94GB": ("1g.12gb", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"),
    "GH200 96GB": ("3g.48gb", "4g.48gb", "7g.96gb"),
    "H200 141GB": ("1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
    "B200 180GB": ("1g.23gb", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"),
}
KNOWN_MIG_PROFILES: Final = tuple(
    sorted(
        {p for ps in MIG_PROFILES.values() for p in ps},
        key=lambda p: (
            int(p.split("g.", 1)[0]),
            float(p.split("g.", 1)[1][:-2]),
        ),
    )
)


class PartitionError(ValueError):
    """A partition that cannot be sized; the message says what to change."""


def mig_profile_problem(profile: str) -> str | None:
    """Why ``profile`` is not a MIG profile kaito knows; None when it is."""
    if not _PROFILE.match(profile):
        return f"{profile!r} is not a MIG profile; write <slices>g.<memory>gb, e.g. 1g.10gb"
    if profile not in KNOWN_MIG_PROFILES:
        return f"{profile!r} is not a MIG profile of any GPU; use one of {', '.join(KNOWN_MIG_PROFILES)}"
    return None


def mig_memory_gib(profile: str) -> int:
    """The slice's memory in GiB: the profile's GB figure rounded down (``3g.47gb`` -> 47)."""
    m = _PROFILE.match(profile)
    if m is None:
        raise PartitionError(mig_profile_problem(profile) or profile)
    return math.floor(float(m.group(2)))


def mig_resource(profile: str) -> str:
    """``nvidia.com/mig-<profile>``: what the pod requests and the node must advertise."""
    return MIG_RESOURCE_PREFIX + profile


def mig_sku(profile: str, node: GPUSku | None = None) -> GPUSku:
    """One slice of ``profile`` as a one-GPU SKU; ``node`` (the named or labelled SKU of the
    nodes, when known) lends its GPU model and compute capability."""
    memory = mig_memory_gib(profile)
    cc = node.compute_capability if node is not None else MIG_MIN_COMPUTE_CAPABILITY
    gpu = node.gpu_model if node is not None else "MIG"
    return GPUSku.model_validate(
        {
            "name": f"mig:{profile}",
            "cloud": node.cloud if node is not None else "arc",
            "gpu": f"{gpu} {profile}",
            "gpus": 1,
            "gpu_mem_gib": memory,
            "cc": cc,
            "bf16": cc >= 8.0,
        }
    )


def accelerator_sku(node: GPUSku, count: int) -> GPUSku:
    """``count`` of ``node``'s GPUs, each with the node's memory per GPU."""
    if count > node.gpu_count:
        raise PartitionError(
            f"resource.partition.count {count} is more than the {node.gpu_count} GPUs of a "
            f"{node.name} node; lower it to at most {node.gpu_count}"
        )
    return node.model_copy(update={"name": f"{node.name} x{count}", "gpu_count": count})


__all__ = [
    "KNOWN_MIG_PROFILES",
    "MIG_MIN_COMPUTE_CAPABILITY",
    "MIG_PROFILES",
    "MIG_RESOURCE_PREFIX",
    "PartitionError",
    "accelerator_sku",
    "mig_memory_gib",
    "mig_profile_problem",
    "mig_resource",
    "mig_sku",
]
