"""``inference``: exactly one of preset or template, the runtime serving the preset, template images,
adapters and the inference ConfigMap."""

from __future__ import annotations

import re

from kaito.api import names as c
from kaito.api.workspace.inference_config import config_map_problems
from kaito.api.workspace.types import STRENGTH_PATTERN
from kaito.api.workspace.validation.checker import Checker
from kaito.api.workspace.validation.configmaps import config_map_due
from kaito.api.workspace.validation.images import check_image, check_image_host
from kaito.api.workspace.validation.partition import check_partition_fit
from kaito.api.workspace.validation.preset import catalog_entry, check_preset, check_preset_access
from kaito.api.workspace.validation.resource import check_inference_fit
from kaito.presets import GPUSku, ModelPreset

MAX_ADAPTERS = 10
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_inference(ck: Checker, sku: GPUSku | None, *, partitioned: bool = False) -> None:
    """The inference part; ``sku`` is resource.instanceType's, None when unknown or unset;
    ``partitioned``: resource.partition is set and valid, so the preset is sized on it."""
    ws = ck.ws
    assert ws.inference is not None
    inf = ws.inference
    if (inf.preset is None) == (inf.template is None):
        ck.error(
            "inference",
            "set exactly one of inference.preset (a kaito model) or inference.template "
            "(your own pod template)",
        )
    preset = check_preset(ck, "inference.preset", inf.preset)
    check_preset_access(ck, "inference.preset", inf.preset, preset)
    if preset is not None and partitioned:
        check_partition_fit(ck, preset, sku)
    elif preset is not None and sku is not None and ws.resource.partition is None:
        check_inference_fit(ck, preset, sku)
    if preset is not None and not preset.custom and ck.runtime not in preset.runtimes:
        ck.error(
            f"metadata.annotations[{c.ANNOTATION_RUNTIME}]",
            f"kaito serves {preset.name} only with {' or '.join(preset.runtimes)}; remove the "
            f"annotation or set it to {preset.runtimes[0]}",
        )
    check_template_images(ck)
    check_adapters(ck)
    check_inference_config(ck, preset or catalog_entry(inf.preset))


def check_template_images(ck: Checker) -> None:
    template = ck.ws.inference.template if ck.ws.inference else None
    spec = template.get("spec") if isinstance(template, dict) else None
    if not isinstance(spec, dict):
        return
    for kind in ("initContainers", "containers"):
        containers = spec.get(kind)
        if not isinstance(containers, list):
            continue
        for i, container in enumerate(containers):
            image = container.get("image") if isinstance(container, dict) else None
            if isinstance(image, str):
                check_image(ck, f"inference.template.spec.{kind}[{i}].image", image)


def check_adapters(ck: Checker) -> None:
    adapters = (ck.ws.inference.adapters if ck.ws.inference else None) or []
    if len(adapters) > MAX_ADAPTERS:
        ck.error(
            "inference.adapters",
            f"{len(adapters)} adapters given, at most {MAX_ADAPTERS} are allowed; split them "
            "over several Workspaces",
        )
    seen: set[str] = set()
    for i, adapter in enumerate(adapters):
        path = f"inference.adapters[{i}]"
        name = adapter.source.name
        if name in seen:
            ck.error(
                f"{path}.source.name",
                f"{name!r} is used by another adapter; adapter names must be unique",
            )
        seen.add(name)
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            ck.error(
                f"{path}.source.name",
                f"{name!r} cannot name an adapter (it becomes a directory, the model id at the "
                "endpoint and the strength variable); use at most 63 lowercase letters, digits "
                "and '-', starting and ending with a letter or digit",
            )
        if adapter.strength is not None:
            check_strength(ck, f"{path}.strength", adapter.strength)
            if ck.runtime == "vllm" and _is_number(adapter.strength) and float(adapter.strength) != 1.0:
                ck.warn(
                    f"{path}.strength",
                    "vLLM applies LoRA at full strength, so kaito serves a scaled copy of the "
                    "adapter; that works for plain LoRA adapters in safetensors form and stops the "
                    "server at start-up for others (upstream Kaito rejects strength with vLLM)",
                )
        src = adapter.source
        if src.urls is not None:
            ck.error(
                f"{path}.source.urls",
                "URLs are not an adapter source (in upstream Kaito neither); publish the adapter "
                "as an image and set source.image",
            )
        if src.volume_source is not None:
            check_adapter_volume(ck, f"{path}.source.volumeSource", src.volume_source)
        if src.image is None and src.urls is None and src.volume_source is None:
            ck.error(
                f"{path}.source",
                "needs source.image (an adapter image) or source.volumeSource (a volume holding "
                "the adapter's files)",
            )
        if src.image is not None and src.volume_source is None:
            check_image(ck, f"{path}.source.image", src.image)
            check_image_host(ck, f"{path}.source.image", src.image)


def check_strength(ck: Checker, path: str, value: str) -> None:
    bad = f'{value!r} is not a strength; use a decimal string from "0" to "1", e.g. "0.5"'
    if not re.match(STRENGTH_PATTERN, value):
        ck.error(path, bad)
        return
    number = float(value)
    if not 0.0 <= number <= 1.0:
        ck.error(path, bad)


def check_inference_config(ck: Checker, preset: ModelPreset | None) -> None:
    inf = ck.ws.inference
    found = config_map_due(ck, "inference.config", inf.config if inf else None)
    if found is not None:
        for problem in config_map_problems(found, preset, ck.runtime):
            ck.error("inference.config", problem)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_adapter_volume(ck: Checker, path: str, source: object) -> None:
    """A pod volume source, written as in a pod's ``volumes[]`` without its name: one volume type
    (``persistentVolumeClaim``, ``configMap``, ``csi``, ...). Checked here because the field is
    schemaless: a typo would otherwise surface only as the StatefulSet's create failing. (A
    hostPath is the pod policy's to refuse.)"""
    kinds = sorted(k for k in source) if isinstance(source, dict) else []
    if len(kinds) != 1 or not isinstance(source, dict) or not isinstance(source[kinds[0]], dict):
        ck.error(
            path,
            "must name exactly one volume type with its settings, as in a pod volume without its "
            "name, e.g. {persistentVolumeClaim: {claimName: my-adapter}}"
            + (f"; got keys {kinds}" if kinds else ""),
        )
