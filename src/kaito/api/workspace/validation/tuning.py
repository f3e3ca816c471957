"""``tuning``: one node, a preset that supports the method and fits one GPU, one input source,
an output with its push Secret, and the tuning ConfigMap."""

from __future__ import annotations

from kaito.api.workspace.inference_config import tuning_config_map_problems
from kaito.api.workspace.types import DataSource
from kaito.api.workspace.validation.checker import Checker
from kaito.api.workspace.validation.configmaps import config_map_due
from kaito.api.workspace.validation.images import check_image, check_image_host
from kaito.api.workspace.validation.preset import check_preset
from kaito.contract.urls import url_problem
from kaito.presets import GPUSku
from kaito.presets.estimator import tuning_fits


def check_tuning(ck: Checker, sku: GPUSku | None) -> None:
    tuning = ck.ws.tuning
    assert tuning is not None
    count = ck.ws.resource.count
    if count is not None and count > 1:
        ck.error(
            "resource.count",
            f"tuning runs on a single node, got {count}; set resource.count to 1 or remove it",
        )
    if tuning.preset is None:
        ck.error("tuning.preset", "is required; name the model to tune (kaito presets list)")
    preset = check_preset(ck, "tuning.preset", tuning.preset)
    if preset is not None:
        if not preset.custom and tuning.method not in preset.tuning:
            supported = ", ".join(preset.tuning) or "none"
            ck.error(
                "tuning.method",
                f"preset {preset.name} does not support {tuning.method} tuning (supported: "
                f"{supported}); pick another preset or method",
            )
        elif sku is not None:
            fits, reason = tuning_fits(preset, sku, tuning.method)
            if not fits:
                ck.error("resource.instanceType", f"{reason}; pick a SKU with more memory per GPU")
        spec = tuning.preset
        options = spec.preset_options if spec is not None else None
        if preset.gated and not (options and options.model_access_secret):
            ck.warn(
                "tuning.preset.presetOptions.modelAccessSecret",
                f"{preset.name} is gated on Hugging Face; the download needs a Secret with an HF token",
            )
        if options is not None and options.image:
            check_image(ck, "tuning.preset.presetOptions.image", options.image)
    sources = _sources(tuning.input)
    if len(sources) != 1:
        what = "none" if not sources else " and ".join(sources)
        ck.error("tuning.input", f"needs exactly one of urls, image or volumeSource (got {what})")
    check_urls(ck, "tuning.input.urls", tuning.input.urls)
    if tuning.input.image is not None:
        check_image(ck, "tuning.input.image", tuning.input.image)
        check_image_host(ck, "tuning.input.image", tuning.input.image)
    out = tuning.output
    if out.image is None and out.volume_source is None:
        ck.error("tuning.output", "needs image (pushed with imagePushSecret) or volumeSource")
    if out.image is not None and not out.image_push_secret:
        ck.error(
            "tuning.output.imagePushSecret",
            "is required with tuning.output.image; name a docker-registry Secret that can push it",
        )
    if out.image is not None:
        check_image(ck, "tuning.output.image", out.image)
    check_tuning_config(ck)


def check_tuning_config(ck: Checker) -> None:
    tuning = ck.ws.tuning
    found = config_map_due(ck, "tuning.config", tuning.config if tuning else None)
    if found is not None:
        for problem in tuning_config_map_problems(found):
            ck.error("tuning.config", problem)


def check_urls(ck: Checker, path: str, urls: list[str] | None) -> None:
    if urls is not None and not urls:
        ck.error(path, "is empty; list at least one http(s) URL or remove the field")
    for i, url in enumerate(urls or []):
        problem = url_problem(url)
        if problem:
            ck.error(f"{path}[{i}]", problem)


def _sources(src: DataSource) -> list[str]:
    return [
        name
        for name, value in (("urls", src.urls), ("image", src.image), ("volumeSource", src.volume_source))
        if value is not None
    ]
