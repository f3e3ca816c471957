"""``resource.partition``: a MIG slice or some whole GPUs, as upstream v0.12 admits them.

Upstream's rules, in its order: not for tuning; only on bring-your-own nodes (kaito: the ``byo``
node provisioner, upstream: ``disableNodeAutoProvisioning``); each mode behind its gate
(``enableMIG``, ``enableAccelerator``); ``mig`` takes a known ``profile`` and no ``count``,
``accelerator`` a ``count`` and no ``profile``. Where upstream's webhook compares the model's
weights with the slice, kaito runs its one fit verdict (:func:`kaito.presets.fit`, the one the
controller's plan uses) on the slice, so what the webhook admits the controller can run.
"""

from __future__ import annotations

from kaito.api import names as c
from kaito.api.workspace.types import PARTITION_ACCELERATOR, PARTITION_MIG, PartitionSpec
from kaito.api.workspace.validation.checker import Checker
from kaito.presets import GPUSku, ModelPreset, fit
from kaito.presets.partition import PartitionError, accelerator_sku, mig_profile_problem, mig_sku

PATH = "resource.partition"
_GATES = {PARTITION_MIG: "enableMIG", PARTITION_ACCELERATOR: "enableAccelerator"}


def check_partition(ck: Checker) -> bool:
    """The partition's own rules (gates, bring-your-own nodes, the shape of each mode); True when
    there is a partition and it passed them (the preset is then sized on it)."""
    part = ck.ws.resource.partition
    if part is None:
        return False
    before = len(ck.result.errors)
    if ck.ws.tuning is not None:
        ck.error(PATH, "GPU partitioning is not supported for tuning; remove resource.partition")
        return False
    if ck.opts.auto_provisioning:
        ck.error(
            PATH,
            "GPU partitioning needs bring-your-own nodes (kaito controller --node-provisioner "
            "byo, upstream's disableNodeAutoProvisioning); remove resource.partition or run "
            "the Workspace on your own nodes",
        )
        return False
    gate = _GATES[part.mode]
    if not (ck.opts.mig if part.mode == PARTITION_MIG else ck.opts.accelerator):
        ck.error(
            f"{PATH}.mode",
            f"mode {part.mode} needs the {gate} feature gate, which is off; start kaito with "
            f"--feature-gates {gate}=true (chart: featureGates.{gate}: true) or remove "
            "resource.partition",
        )
        return False
    if part.mode == PARTITION_MIG:
        _check_mig(ck, part)
    else:
        _check_accelerator(ck, part)
    return len(ck.result.errors) == before


def _check_mig(ck: Checker, part: PartitionSpec) -> None:
    if part.count is not None:
        ck.error(f"{PATH}.count", "is only for mode accelerator; remove it (a MIG slice is one device)")
    if not part.profile:
        ck.error(f"{PATH}.profile", "is required for mode mig; name the slice, e.g. 1g.10gb or 3g.40gb")
    else:
        problem = mig_profile_problem(part.profile)
        if problem:
            ck.error(f"{PATH}.profile", problem)
    count = ck.ws.resource.count
    if count is not None and count > 1:
        ck.error(
            "resource.count",
            f"a MIG slice cannot be shared across nodes, got {count}; set resource.count to 1 or "
            "remove it (use an InferenceSet for more replicas)",
        )


def _check_accelerator(ck: Checker, part: PartitionSpec) -> None:
    if part.profile is not None:
        ck.error(f"{PATH}.profile", "is only for mode mig; remove it (accelerator takes count)")
    if part.count is None:
        ck.error(f"{PATH}.count", "is required for mode accelerator; set the number of whole GPUs, e.g. 1")


def partition_sku(ck: Checker, sku: GPUSku | None) -> GPUSku | None:
    """What the preset is sized on under the partition: the slice, or ``count`` GPUs of ``sku``
    (None when the nodes' GPUs are known only from their labels, which admission does not read)."""
    part = ck.ws.resource.partition
    assert part is not None
    if part.mode == PARTITION_MIG:
        if not part.profile or mig_profile_problem(part.profile):
            return None
        return mig_sku(part.profile, sku)
    if sku is None or part.count is None:
        return None
    try:
        return accelerator_sku(sku, part.count)
    except PartitionError as exc:
        ck.error(f"{PATH}.count", str(exc))
        return None


def check_partition_fit(ck: Checker, preset: ModelPreset, sku: GPUSku | None) -> None:
    """The preset on the partition: a slice must hold the whole model (one node, one device)."""
    part = ck.ws.resource.partition
    assert part is not None
    target = partition_sku(ck, sku)
    if target is None:
        return
    mig = part.mode == PARTITION_MIG
    verdict = fit(
        preset, target, 1 if mig else ck.ws.resource.count, annotations=ck.annotations, multi_node=not mig
    )
    plan = verdict.estimate
    if plan.fits:
        return
    if verdict.bypassed:
        ck.warn(PATH, f"GPU memory check bypassed ({c.ANNOTATION_BYPASS_RESOURCE_CHECKS}): {plan.reason}")
        return
    if mig:
        ck.error(
            f"{PATH}.profile",
            f"{preset.name} does not fit one {part.profile} MIG slice: {plan.reason}; pick a "
            "profile with more memory or a smaller model",
        )
    else:
        ck.error(
            f"{PATH}.count",
            f"{preset.name} does not fit {part.count} GPU(s) of {sku.name if sku else 'the node'}: "
            f"{plan.reason}; raise resource.partition.count or pick a smaller model",
        )


__all__ = ["check_partition", "check_partition_fit", "partition_sku"]
