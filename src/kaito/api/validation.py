"""Workspace validation: one pure function behind the webhook, the CLI linter and the controller.

Every rejection is a :class:`FieldError` naming the field, what is wrong and how to fix it. The
function never raises on bad input: anything that is not a well-formed Workspace becomes errors.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from kaito.api import conditions as c
from kaito.api.workspace import STRENGTH_PATTERN, DataSource, PresetSpec, Workspace
from kaito.presets import (
    GPUSku,
    ModelPreset,
    PresetError,
    custom_preset,
    estimate,
    find_preset,
    get_sku,
    is_hf_repo_id,
    preset_names,
    sku_names,
)
from kaito.presets.estimator import tuning_fits

MAX_ADAPTERS = 10
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_IPS = frozenset({"169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200"})


@dataclass(frozen=True, order=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class ValidationOptions:
    """How the cluster is run; the webhook and the CLI take these from flags."""

    #: Cloud whose SKU table ``resource.instanceType`` must come from; None accepts any cloud.
    cloud: str | None = "azure"
    #: Whether kaito provisions GPU nodes (then instanceType is required) or only selects them.
    auto_provisioning: bool = True


@dataclass
class ValidationResult:
    errors: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    workspace: Workspace | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def message(self) -> str:
        return "; ".join(str(e) for e in self.errors)


def validate_workspace(
    obj: Any,
    old: Any = None,
    options: ValidationOptions | None = None,
) -> ValidationResult:
    """Check a Workspace manifest (dict or model); ``old`` turns on the update rules."""
    opts = options or ValidationOptions()
    result = ValidationResult()
    try:
        ws = _parse(obj, result)
        if ws is None:
            return result
        result.workspace = ws
        _Checker(ws, opts, result).run()
        if old is not None:
            old_ws = _parse(old, ValidationResult())
            if old_ws is not None:
                _check_update(ws, old_ws, result)
                # Rules that tighten later (a deprecated preset, a retired SKU) must not wedge
                # existing objects: their finalizers and labels still have to be writable.
                before = ValidationResult()
                _Checker(old_ws, opts, before).run()
                known = set(before.errors)
                result.errors = [e for e in result.errors if e not in known]
    except Exception as exc:  # the validator must answer, never crash
        result.errors.append(FieldError("<root>", f"internal validation error ({type(exc).__name__}: {exc})"))
    result.errors = sorted(set(result.errors), key=lambda e: (e.field, e.message))
    return result


# --- parsing ---------------------------------------------------------------------------------

_HINTS = {
    "missing": "is required",
    "extra_forbidden": "is not a Workspace field; remove it (check spelling and indentation)",
}


def _parse(obj: Any, result: ValidationResult) -> Workspace | None:
    if isinstance(obj, Workspace):
        return obj
    if not isinstance(obj, Mapping):
        result.errors.append(FieldError("<root>", f"expected a Workspace object, got {type(obj).__name__}"))
        return None
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    allowed = [f"{c.GROUP}/{v}" for v in c.VERSIONS]
    if kind != c.KIND or not isinstance(api_version, str) or api_version not in allowed:
        result.errors.append(
            FieldError(
                "apiVersion",
                f"expected kind Workspace in kaito.sh/v1alpha1 or kaito.sh/v1beta1, got kind "
                f"{kind!r} in {api_version!r}",
            )
        )
        return None
    try:
        return Workspace.model_validate(dict(obj))
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            result.errors.append(FieldError(_loc(err["loc"]), _describe(err)))
        return None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def _describe(err: Any) -> str:
    kind = err["type"]
    if kind in _HINTS:
        return str(_HINTS[kind])
    msg = str(err["msg"])
    if kind == "string_pattern_mismatch" and err["loc"] and err["loc"][-1] == "strength":
        return f'{err.get("input")!r} is not a strength; use a decimal string from "0" to "1", e.g. "0.5"'
    if kind == "literal_error" and err["loc"] and err["loc"][-1] == "method":
        return f"{err.get('input')!r} is not a tuning method; use lora or qlora"
    given = err.get("input")
    simple = isinstance(given, str | int | float | bool) or given is None
    shown = repr(given) if simple else type(given).__name__
    return f"{msg[0].lower()}{msg[1:]} (got {shown})"


# --- semantic rules ----------------------------------------------------------------------------


class _Checker:
    def __init__(self, ws: Workspace, opts: ValidationOptions, result: ValidationResult) -> None:
        self.ws, self.opts, self.result = ws, opts, result

    def error(self, path: str, message: str) -> None:
        self.result.errors.append(FieldError(path, message))

    def run(self) -> None:
        ws = self.ws
        self.check_name()
        self.check_label_selector()
        sku = self.check_instance_type()
        if (ws.inference is None) == (ws.tuning is None):
            self.error(
                "inference",
                "a Workspace needs exactly one of inference or tuning; keep one and move the other "
                "to its own Workspace",
            )
        if ws.inference is not None:
            inf = ws.inference
            if (inf.preset is None) == (inf.template is None):
                self.error(
                    "inference",
                    "set exactly one of inference.preset (a kaito model) or inference.template "
                    "(your own pod template)",
                )
            preset = self.check_preset("inference.preset", inf.preset)
            if preset is not None and sku is not None:
                self.check_inference_fit(preset, sku)
            self.check_adapters()
        if ws.tuning is not None:
            self.check_tuning(sku)

    def check_name(self) -> None:
        name = self.ws.metadata.name
        if name is None and not self.ws.metadata.generate_name:
            self.error("metadata.name", "is required")
        elif name is not None and (len(name) > 63 or not DNS1035.match(name)):
            self.error(
                "metadata.name",
                f"{name!r} cannot name the Workspace's Service; use at most 63 lowercase letters, "
                "digits and '-', starting with a letter",
            )

    def check_label_selector(self) -> None:
        sel = self.ws.resource.label_selector
        keys = list((sel.match_labels or {}).keys()) + [e.key for e in sel.match_expressions or []]
        if not any(not k.startswith(c.RESERVED_LABEL_PREFIXES) for k in keys):
            self.error(
                "resource.labelSelector",
                "needs at least one label of your own (keys under "
                f"{', '.join(c.RESERVED_LABEL_PREFIXES)} are reserved); "
                "add e.g. matchLabels: {apps: my-model}",
            )

    def check_instance_type(self) -> GPUSku | None:
        itype = self.ws.resource.instance_type
        path = "resource.instanceType"
        if not itype:
            if self.opts.auto_provisioning:
                self.error(
                    path,
                    "is required when kaito provisions GPU nodes; set a GPU SKU such as "
                    f"{_example_sku(self.opts.cloud)} (list them with `kaito presets skus`)",
                )
            return None
        sku = get_sku(itype)
        cloud = self.opts.cloud
        if sku is None or (cloud is not None and sku.cloud != cloud):
            if not self.opts.auto_provisioning:
                self.result.warnings.append(
                    f"{path}: {itype!r} is not in kaito's SKU table; GPU memory is not checked"
                )
                return None
            known = sku_names(cloud)
            close = difflib.get_close_matches(itype, known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            self.error(
                path,
                f"{itype!r} is not a known GPU SKU for {cloud or 'any cloud'}; {hint}use one of "
                f"{_short_list(known)} (kaito presets skus)",
            )
            return None
        return sku

    def check_preset(self, path: str, spec: PresetSpec | None) -> ModelPreset | None:
        if spec is None:
            return None
        name = spec.name
        entry = find_preset(name)
        if entry is not None:
            if entry.deprecated:
                self.error(f"{path}.name", f"preset {name!r} is deprecated: {entry.deprecated}")
                return None
            if entry.requires_token and not (spec.preset_options and spec.preset_options.model_access_secret):
                self.result.warnings.append(
                    f"{path}.presetOptions.modelAccessSecret: {name} is gated on Hugging Face; "
                    "the download needs a Secret with an HF token"
                )
            return entry
        if is_hf_repo_id(name):
            raw = (self.ws.metadata.annotations or {}).get(c.ANNOTATION_MODEL_PARAMETERS)
            if raw is None:
                self.result.warnings.append(
                    f"{path}.name: {name} is not in kaito's catalog; GPU memory is not checked "
                    f"(set annotation {c.ANNOTATION_MODEL_PARAMETERS} to check it)"
                )
                return None
            try:
                params = json.loads(raw)
                if not isinstance(params, dict):
                    raise PresetError("the annotation must be a JSON object")
                return custom_preset(name, params)
            except (ValueError, PresetError) as exc:
                self.error(f"metadata.annotations[{c.ANNOTATION_MODEL_PARAMETERS}]", f"{exc}")
                return None
        close = difflib.get_close_matches(name, preset_names(), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        self.error(
            f"{path}.name",
            f"unknown preset {name!r}; {hint}use a preset from `kaito presets list` or a Hugging Face "
            "org/model id",
        )
        return None

    def check_inference_fit(self, preset: ModelPreset, sku: GPUSku) -> None:
        count = self.ws.resource.count
        plan = estimate(preset, sku, count)
        if plan.fits:
            return
        if plan.required_nodes is not None and count is not None and count < plan.required_nodes:
            self.error(
                "resource.count",
                f"{plan.reason}; set resource.count to {plan.required_nodes} or remove it to let "
                "kaito size the workspace",
            )
        else:
            self.error(
                "resource.instanceType",
                f"not enough GPU for {preset.name}: {plan.reason}; pick a larger SKU "
                f"(`kaito estimate --preset {preset.name}` lists the ones that fit)",
            )

    def check_adapters(self) -> None:
        adapters = (self.ws.inference.adapters if self.ws.inference else None) or []
        if len(adapters) > MAX_ADAPTERS:
            self.error(
                "inference.adapters",
                f"{len(adapters)} adapters given, at most {MAX_ADAPTERS} are allowed; split them "
                "over several Workspaces",
            )
        seen: set[str] = set()
        for i, adapter in enumerate(adapters):
            path = f"inference.adapters[{i}]"
            if adapter.source.name in seen:
                self.error(
                    f"{path}.source.name",
                    f"{adapter.source.name!r} is used by another adapter; adapter names must be unique",
                )
            seen.add(adapter.source.name)
            if adapter.strength is not None:
                self.check_strength(f"{path}.strength", adapter.strength)
            sources = _sources(adapter.source)
            if len(sources) != 1:
                self.error(
                    f"{path}.source",
                    "needs exactly one of image, urls or volumeSource to load the adapter from",
                )
            self.check_urls(f"{path}.source.urls", adapter.source.urls)

    def check_strength(self, path: str, value: str) -> None:
        bad = f'{value!r} is not a strength; use a decimal string from "0" to "1", e.g. "0.5"'
        if not re.match(STRENGTH_PATTERN, value):
            self.error(path, bad)
            return
        number = float(value)
        if not 0.0 <= number <= 1.0:
            self.error(path, bad)

    def check_tuning(self, sku: GPUSku | None) -> None:
        tuning = self.ws.tuning
        assert tuning is not None
        if tuning.preset is None:
            self.error("tuning.preset", "is required; name the model to tune (kaito presets list)")
        preset = self.check_preset("tuning.preset", tuning.preset)
        if preset is not None:
            if not preset.custom and tuning.method not in preset.tuning:
                supported = ", ".join(preset.tuning) or "none"
                self.error(
                    "tuning.method",
                    f"preset {preset.name} does not support {tuning.method} tuning (supported: "
                    f"{supported}); pick another preset or method",
                )
            elif sku is not None:
                fits, reason = tuning_fits(preset, sku, tuning.method)
                if not fits:
                    self.error("resource.instanceType", f"{reason}; pick a SKU with more memory per GPU")
        sources = _sources(tuning.input)
        if len(sources) != 1:
            what = "none" if not sources else " and ".join(sources)
            self.error("tuning.input", f"needs exactly one of urls, image or volumeSource (got {what})")
        self.check_urls("tuning.input.urls", tuning.input.urls)
        out = tuning.output
        if out.image is None and out.volume_source is None:
            self.error("tuning.output", "needs image (pushed with imagePushSecret) or volumeSource")
        if out.image is not None and not out.image_push_secret:
            self.error(
                "tuning.output.imagePushSecret",
                "is required with tuning.output.image; name a docker-registry Secret that can push it",
            )

    def check_urls(self, path: str, urls: list[str] | None) -> None:
        if urls is not None and not urls:
            self.error(path, "is empty; list at least one http(s) URL or remove the field")
        for i, url in enumerate(urls or []):
            problem = url_problem(url)
            if problem:
                self.error(f"{path}[{i}]", problem)


def _sources(src: DataSource) -> list[str]:
    return [
        name
        for name, value in (("urls", src.urls), ("image", src.image), ("volumeSource", src.volume_source))
        if value is not None
    ]


def url_problem(url: str) -> str | None:
    """Why a data URL is refused (not http(s), or aimed at this cluster or the cloud), or None."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        return f"{url!r} is not a valid URL; use an http(s) URL"
    if parts.scheme not in ("http", "https"):
        return f"{url!r} must use http or https"
    if not host:
        return f"{url!r} has no host; use an http(s) URL with a public host"
    host = host.rstrip(".").lower()
    fix = "use a public http(s) URL"
    if host in METADATA_HOSTS or host in METADATA_IPS:
        return f"{url!r} points at a cloud metadata address; {fix}"
    if host == "localhost" or host.endswith(".localhost"):
        return f"{url!r} points at a loopback address; {fix}"
    addr = _as_ip(host)
    if addr is None:
        return None
    if str(addr) in METADATA_IPS:
        return f"{url!r} points at a cloud metadata address; {fix}"
    if addr.is_loopback or addr.is_unspecified:
        return f"{url!r} points at a loopback address; {fix}"
    if addr.is_link_local:
        return f"{url!r} points at a link-local address; {fix}"
    if addr.is_private or addr.is_reserved or addr.is_multicast or not addr.is_global:
        return f"{url!r} points at a private address; {fix}"
    return None


def _as_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host denotes, including the decimal and hex forms URL parsers accept."""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:
            if re.fullmatch(r"0x[0-9a-f]+|[0-9]+", host):
                return ipaddress.IPv4Address(int(host, 0) if host.startswith("0x") else int(host))
        except (ValueError, ipaddress.AddressValueError):
            return None
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _check_update(ws: Workspace, old: Workspace, result: ValidationResult) -> None:
    def err(path: str, what: str) -> None:
        result.errors.append(
            FieldError(path, f"is immutable ({what}); delete and recreate the Workspace to change it")
        )

    if ws.resource.instance_type != old.resource.instance_type:
        err(
            "resource.instanceType",
            f"was {old.resource.instance_type!r}, now {ws.resource.instance_type!r}",
        )
    if ws.resource.label_selector.to_dict() != old.resource.label_selector.to_dict():
        err("resource.labelSelector", "changed")
    if (ws.inference is None) != (old.inference is None):
        err("inference", "a Workspace cannot switch between inference and tuning")
        return
    for path, new_spec, old_spec in (
        ("inference.preset", ws.inference.preset if ws.inference else None,
         old.inference.preset if old.inference else None),
        ("tuning.preset", ws.tuning.preset if ws.tuning else None, old.tuning.preset if old.tuning else None),
    ):
        new_name = new_spec.name if new_spec else None
        old_name = old_spec.name if old_spec else None
        if new_name != old_name:
            err(f"{path}.name" if new_name and old_name else path, f"was {old_name!r}, now {new_name!r}")


def _example_sku(cloud: str | None) -> str:
    return "g5.xlarge" if cloud == "aws" else "Standard_NC24ads_A100_v4"


def _short_list(names: list[str], limit: int = 6) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"
