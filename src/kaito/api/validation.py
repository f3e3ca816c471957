"""Workspace validation: one pure function behind the webhook, the CLI linter and the controller.

Every rejection is a :class:`FieldError` naming the field, what is wrong and how to fix it. The
function never raises on bad input: anything that is not a well-formed Workspace becomes errors.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import ValidationError

from kaito.api import names as c
from kaito.api.imageref import EXAMPLE as IMAGE_EXAMPLE
from kaito.api.imageref import image_ref_problem
from kaito.api.inference_config import (
    CONFIG_KEY,
    TUNING_CONFIG_KEY,
    config_map_problems,
    tuning_config_map_problems,
)
from kaito.api.labels import key_problem, reserved_domain, value_problem
from kaito.api.podpolicy import pod_policy_problems
from kaito.api.workspace import STRENGTH_PATTERN, DataSource, PresetSpec, Workspace, api_key_secret_of
from kaito.contract.registry import RegistryRefError, split_image
from kaito.contract.urls import image_host_problem, url_problem
from kaito.presets import (
    GPUSku,
    ModelPreset,
    PresetError,
    custom_preset,
    estimate,
    find_preset,
    get_sku,
    list_presets,
    preset_names,
    sku_names,
)
from kaito.presets.estimator import tuning_fits
from kaito.presets.hub import parse_model_ref

MAX_ADAPTERS = 10
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Annotations whose values upstream Kaito acts on (kaito-project/kaito api/v1beta1/labels.go); the
# names are shared with the controllers that act on them.
ANNOTATION_ENABLE_LB = c.ANNOTATION_ENABLE_LB
ANNOTATION_RUNTIME = c.ANNOTATION_RUNTIME
ANNOTATION_BYPASS_RESOURCE_CHECKS = c.ANNOTATION_BYPASS_RESOURCE_CHECKS
ANNOTATION_NODE_IMAGE_FAMILY = c.ANNOTATION_NODE_IMAGE_FAMILY
RUNTIMES = c.RUNTIMES
NODE_IMAGE_FAMILIES = c.NODE_IMAGE_FAMILIES
#: What the webhook found for each ConfigMap name: the object, None when absent, or a string saying
#: why it could not be read. A name missing from the mapping was not looked up (no cluster).
ConfigMaps = Mapping[str, "Mapping[str, Any] | str | None"]
#: What the caller learned from the Hugging Face Hub for each ``org/model`` preset name
#: (:mod:`kaito.api.hub`): the sized preset, or the refusal's message. A name missing from the
#: mapping was not looked up (offline), and is admitted unsized with a warning.
HubModels = Mapping[str, "ModelPreset | str"]


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
    #: The Workspace pod policy (:mod:`kaito.api.podpolicy`): refuse templates and tuning volumes
    #: that would give the pod the node (privileged, host namespaces, hostPath, added
    #: capabilities) or another ServiceAccount. On by default because a Workspace author is not
    #: necessarily a node admin; turn off only where every Workspace author is trusted with nodes.
    refuse_privileged_pods: bool = True


@dataclass
class ValidationResult:
    errors: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Checks that need the cluster and were not run (``kaito validate`` without the ConfigMap).
    skipped: list[str] = field(default_factory=list)
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
    *,
    config_maps: ConfigMaps | None = None,
    hub_models: HubModels | None = None,
) -> ValidationResult:
    """Check a Workspace manifest (dict or model); ``old`` turns on the update rules.

    ``config_maps`` holds what the caller could read of the ConfigMaps in the Workspace's
    namespace (see :data:`ConfigMaps`); without it the ``inference.config`` check is reported in
    ``result.skipped`` rather than silently passed. ``hub_models`` holds what the caller read
    from the Hub for an ``org/model`` preset (see :data:`HubModels`).
    """
    opts = options or ValidationOptions()
    result = ValidationResult()
    try:
        ws = _parse(obj, result)
        if ws is None:
            return result
        result.workspace = ws
        old_ws = _parse(old, ValidationResult()) if old is not None else None
        _Checker(ws, opts, result, config_maps, old=old_ws, hub_models=hub_models).run()
        _check_pod_policy(ws, opts, result)
        if old_ws is not None:
            _check_update(ws, old_ws, result)
            # Rules that tighten later (a deprecated preset, a retired SKU) must not wedge
            # existing objects: their finalizers and labels still have to be writable.
            before = ValidationResult()
            _Checker(old_ws, opts, before, check_config=False, hub_models=hub_models).run()
            _check_pod_policy(old_ws, opts, before)
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


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """A pydantic error as FieldErrors with kaito's paths and messages (``spec.replicas``,
    ``inference.adapters[0].strength``), for other kinds' validators (InferenceSet's)."""
    out = []
    for err in exc.errors(include_url=False):
        loc = _loc(err["loc"])
        path = f"{prefix}{loc}" if loc != "<root>" else prefix.rstrip(".") or loc
        out.append(FieldError(path, _describe(err)))
    return out


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
    def __init__(
        self,
        ws: Workspace,
        opts: ValidationOptions,
        result: ValidationResult,
        config_maps: ConfigMaps | None = None,
        *,
        old: Workspace | None = None,
        check_config: bool = True,
        hub_models: HubModels | None = None,
    ) -> None:
        self.ws, self.opts, self.result = ws, opts, result
        self.hub_models = hub_models
        self.config_maps, self.old, self.check_config = config_maps, old, check_config
        self.annotations: dict[str, str] = dict(ws.metadata.annotations or {})

    def error(self, path: str, message: str) -> None:
        self.result.errors.append(FieldError(path, message))

    def warn(self, path: str, message: str) -> None:
        self.result.warnings.append(f"{path}: {message}")

    @property
    def runtime(self) -> str:
        """The server runtime, as upstream picks it: the annotation, vllm by default."""
        value = self.annotations.get(ANNOTATION_RUNTIME, "vllm")
        return value if value in RUNTIMES else "vllm"

    @property
    def bypass_resource_checks(self) -> bool:
        return ANNOTATION_BYPASS_RESOURCE_CHECKS in self.annotations

    def run(self) -> None:
        ws = self.ws
        self.check_name()
        self.check_annotations()
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
            self.check_preset_access("inference.preset", inf.preset, preset)
            if preset is not None and sku is not None:
                self.check_inference_fit(preset, sku)
            if preset is not None and not preset.custom and self.runtime not in preset.runtimes:
                self.error(
                    f"metadata.annotations[{ANNOTATION_RUNTIME}]",
                    f"kaito serves {preset.name} only with {' or '.join(preset.runtimes)}; remove the "
                    f"annotation or set it to {preset.runtimes[0]}",
                )
            self.check_template_images()
            self.check_adapters()
            self.check_inference_config(preset or self.catalog_entry(inf.preset))
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

    def check_annotations(self) -> None:
        """Values of the annotations upstream Kaito reads. Upstream ignores a value it does not
        know (``enablelb: "true"`` silently gives a ClusterIP Service); kaito says so instead."""
        ann = self.annotations

        def path(key: str) -> str:
            return f"metadata.annotations[{key}]"

        lb = ann.get(ANNOTATION_ENABLE_LB)
        if lb is not None and lb.strip().lower() not in ("true", "false"):
            self.error(
                path(ANNOTATION_ENABLE_LB),
                f"{lb!r} is not a value this annotation takes; set \"True\" for a LoadBalancer Service "
                "(upstream Kaito reads only that spelling) or \"False\" / remove it for ClusterIP",
            )
        runtime = ann.get(ANNOTATION_RUNTIME)
        if runtime is not None and runtime not in RUNTIMES:
            self.error(
                path(ANNOTATION_RUNTIME),
                f"{runtime!r} is not a runtime; use vllm (the default) or transformers",
            )
        bypass = ann.get(ANNOTATION_BYPASS_RESOURCE_CHECKS)
        if bypass is not None and bypass not in ("", "true", "True"):
            self.error(
                path(ANNOTATION_BYPASS_RESOURCE_CHECKS),
                f"{bypass!r}: the GPU memory check is bypassed whenever this annotation is present, "
                "whatever its value (as in upstream Kaito); set \"true\" or remove the annotation",
            )
        try:
            api_key_secret_of(ann)
        except ValueError as exc:
            self.error(path(c.ANNOTATION_API_KEY_SECRET), str(exc))
        family = ann.get(ANNOTATION_NODE_IMAGE_FAMILY)
        if family is not None and family.strip().lower() not in NODE_IMAGE_FAMILIES:
            self.error(
                path(ANNOTATION_NODE_IMAGE_FAMILY),
                f"unsupported node image family {family!r}; use {' or '.join(NODE_IMAGE_FAMILIES)}",
            )
        self.check_weights_source(path)

    def check_weights_source(self, path: Callable[[str], str]) -> None:
        """``kaito.sh/use-local-weights`` and ``kaito.sh/weights-image``: one weights source, on a
        preset Workspace (a template's pod loads what its author wrote), from a pullable host."""
        ann = self.annotations
        local = ann.get(c.ANNOTATION_USE_LOCAL_WEIGHTS)
        image = ann.get(c.ANNOTATION_WEIGHTS_IMAGE)
        if local is not None and local not in ("true", "false"):
            self.error(
                path(c.ANNOTATION_USE_LOCAL_WEIGHTS),
                f"{local!r}: set \"true\" to load the weights baked into the node image under "
                f"{c.LOCAL_WEIGHTS_HOST_PREFIX}/<preset>, or remove the annotation",
            )
        if image is None and local != "true":
            return
        preset = self.ws.inference.preset if self.ws.inference else None
        key = c.ANNOTATION_WEIGHTS_IMAGE if image is not None else c.ANNOTATION_USE_LOCAL_WEIGHTS
        if preset is None:
            self.error(path(key), "a weights source needs inference.preset; a template loads its own weights")
            return
        if image is not None and local == "true":
            self.error(
                path(c.ANNOTATION_WEIGHTS_IMAGE),
                f"the weights come from the node ({c.ANNOTATION_USE_LOCAL_WEIGHTS}) or from an image, "
                "not both; remove one of the two annotations",
            )
        if image is None:
            return
        self.check_image(path(c.ANNOTATION_WEIGHTS_IMAGE), image)
        self.check_image_host(path(c.ANNOTATION_WEIGHTS_IMAGE), image)
        try:
            split_image(image)
        except RegistryRefError as exc:
            self.error(path(c.ANNOTATION_WEIGHTS_IMAGE), f"{exc} (oras pulls from the host the image names)")

    def check_label_selector(self) -> None:
        """Keys and values as the apiserver will check them on the NodePools, NodeClaims and Nodes
        they are copied to, and no key under a domain kaito, Karpenter or Kubernetes own: the
        provisioners copy matchLabels onto the claims, so ``kaito.sh/workspace`` there would
        label the claims as another Workspace's."""
        sel = self.ws.resource.label_selector
        base = "resource.labelSelector"
        keys: list[str] = []
        for key, value in (sel.match_labels or {}).items():
            path = f"{base}.matchLabels[{json.dumps(key, ensure_ascii=False)}]"
            keys.append(key)
            if self.check_label_key(path, key):
                problem = value_problem(value)
                if problem:
                    self.error(path, f"{problem}; change the value (it becomes a node label)")
        for i, req in enumerate(sel.match_expressions or []):
            path = f"{base}.matchExpressions[{i}]"
            keys.append(req.key)
            self.check_label_key(f"{path}.key", req.key)
            values = req.values or []
            if req.operator in ("In", "NotIn") and not values:
                self.error(
                    f"{path}.values",
                    f"must list at least one value for operator {req.operator}; add values or use "
                    "Exists / DoesNotExist",
                )
            elif req.operator in ("Exists", "DoesNotExist") and values:
                self.error(
                    f"{path}.values",
                    f"must be empty for operator {req.operator}; remove values or use In / NotIn",
                )
            for j, value in enumerate(values):
                problem = value_problem(value)
                if problem:
                    self.error(f"{path}.values[{j}]", f"{problem}; change the value")
        if not keys:
            self.error(
                base,
                "needs at least one label of your own; add e.g. matchLabels: {apps: my-model}",
            )

    def check_label_key(self, path: str, key: str) -> bool:
        """Report a bad or reserved selector key at ``path``; True when the key is usable."""
        problem = key_problem(key)
        if problem:
            self.error(path, f"{problem}; rename the key (it becomes a node label)")
            return False
        domain = reserved_domain(key)
        if domain is not None:
            self.error(
                path,
                f"{key!r} is under {domain}, a label domain kaito, Karpenter or Kubernetes set "
                "themselves, so a Workspace may not select or set it; use a key of your own such "
                "as apps: my-model",
            )
            return False
        return True

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

    def catalog_entry(self, spec: PresetSpec | None) -> ModelPreset | None:
        """The catalog entry a preset names, by preset name or by its Hugging Face repo id
        (upstream's newer examples name presets by repo, e.g. meta-llama/Llama-3.1-8B-Instruct)."""
        if spec is None:
            return None
        return find_preset(spec.name) or _by_repo().get(spec.name.lower())

    def check_preset(self, path: str, spec: PresetSpec | None) -> ModelPreset | None:
        if spec is None:
            return None
        name = spec.name
        entry = find_preset(name)
        if entry is not None:
            if entry.deprecated:
                self.error(f"{path}.name", f"preset {name!r} is deprecated: {entry.deprecated}")
                return None
            return entry
        if spec.preset_options is not None and spec.preset_options.image:
            self.check_image(f"{path}.presetOptions.image", spec.preset_options.image)
        if parse_model_ref(name) is not None:
            raw = (self.ws.metadata.annotations or {}).get(c.ANNOTATION_MODEL_PARAMETERS)
            if raw is None:
                known = _by_repo().get(name.lower())
                if known is not None:
                    self.warn(
                        f"{path}.name",
                        f"{name} is the Hugging Face repo of kaito's preset {known.name}; name the "
                        f"preset {known.name} to have its GPU memory checked and sized",
                    )
                    return None
                return self.hub_model(f"{path}.name", name)
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

    def hub_model(self, path: str, name: str) -> ModelPreset | None:
        """An ``org/model`` preset as the caller resolved it on the Hub; refused when the Hub said
        no (gated, unknown, unsupported architecture) or could not be reached."""
        found = self.hub_models.get(name) if self.hub_models is not None else None
        if found is None:
            self.result.warnings.append(
                f"{path}: {name} is not in kaito's catalog and was not looked up on the Hugging Face Hub; "
                f"GPU memory is not checked (set annotation {c.ANNOTATION_MODEL_PARAMETERS} to check it)"
            )
            return None
        if isinstance(found, str):
            self.error(path, found)
            return None
        return found

    def check_preset_access(self, path: str, spec: PresetSpec | None, preset: ModelPreset | None) -> None:
        """A gated model needs a token (upstream: downloadAuthRequired without modelAccessSecret is
        an error); a token for an open model is only noted, since kaito downloads every preset at
        run time and passes the token along unused."""
        if spec is None:
            return
        entry = preset or self.catalog_entry(spec)
        options = spec.preset_options
        secret = options.model_access_secret if options is not None else None
        if spec.preset_options is not None and spec.preset_options.image and preset is not None:
            self.check_image(f"{path}.presetOptions.image", spec.preset_options.image)
        if entry is None or entry.custom:
            return
        if spec.access_mode == "private" and options is not None and options.image:
            return  # the weights come in the private image, not from Hugging Face
        if entry.gated and not secret:
            self.error(
                f"{path}.presetOptions.modelAccessSecret",
                f"{spec.name} is gated on Hugging Face ({entry.hf_repo}); create a Secret with key "
                "HF_TOKEN holding a token whose account accepted the model's licence, and name it here",
            )
        elif secret and not entry.gated:
            self.warn(
                f"{path}.presetOptions.modelAccessSecret",
                f"{spec.name} is not gated; the Secret is not needed (upstream Kaito rejects it for "
                "presets whose weights are in its images)",
            )

    def check_inference_fit(self, preset: ModelPreset, sku: GPUSku) -> None:
        count = self.ws.resource.count
        plan = estimate(preset, sku, count)
        if plan.fits:
            return
        if self.bypass_resource_checks:
            self.warn(
                "resource.instanceType",
                f"GPU memory check bypassed ({ANNOTATION_BYPASS_RESOURCE_CHECKS}): {plan.reason}",
            )
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

    def config_map_due(self, path: str, name: str | None) -> Mapping[str, Any] | None:
        """The ConfigMap ``name`` (at ``path``) to check, after reporting what stops the check.

        As upstream, a ConfigMap is checked on create and again only when its name changes, so
        deleting it later cannot block the controller's finalizer and status updates."""
        if not name or not self.check_config:
            return None
        if self.old is not None and _config_name(self.old, path) == name:
            return None
        found = self.config_maps.get(name, _NOT_LOOKED_UP) if self.config_maps is not None else _NOT_LOOKED_UP
        namespace = self.ws.metadata.namespace
        where = f"namespace {namespace!r}" if namespace else "the Workspace's namespace"
        key = CONFIG_KEY if path == "inference.config" else TUNING_CONFIG_KEY
        if found is _NOT_LOOKED_UP:
            self.result.skipped.append(
                f"{path}: ConfigMap {name!r} was not checked: nothing to read it from "
                "(kaito validate: give the ConfigMap with -f too)"
            )
        elif found is None:
            self.error(
                path,
                f"ConfigMap {name!r} not found in {where}; create it (key {key}) before the "
                f"Workspace, or remove {path} to use the defaults",
            )
        elif isinstance(found, str):
            self.error(path, f"could not read ConfigMap {name!r} in {where}: {found}")
        elif isinstance(found, Mapping):
            return found
        return None

    def check_inference_config(self, preset: ModelPreset | None) -> None:
        inf = self.ws.inference
        found = self.config_map_due("inference.config", inf.config if inf else None)
        if found is not None:
            for problem in config_map_problems(found, preset, self.runtime):
                self.error("inference.config", problem)

    def check_tuning_config(self) -> None:
        tuning = self.ws.tuning
        found = self.config_map_due("tuning.config", tuning.config if tuning else None)
        if found is not None:
            for problem in tuning_config_map_problems(found):
                self.error("tuning.config", problem)

    def check_template_images(self) -> None:
        template = self.ws.inference.template if self.ws.inference else None
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
                    self.check_image(f"inference.template.spec.{kind}[{i}].image", image)

    def check_image(self, path: str, ref: str) -> None:
        problem = image_ref_problem(ref)
        if problem is None:
            return
        fix = f"write it as [registry/]repository[:tag][@sha256:digest], e.g. {IMAGE_EXAMPLE}"
        if problem.placeholder:
            # The seed's and upstream's README placeholders (ACR_REPO_HERE...) land here.
            self.warn(path, f"{ref!r}: {problem.message}, so no node can pull it; {fix}")
            return
        self.error(path, f"{ref!r} is not a valid image reference: {problem.message}; {fix}")

    def check_image_host(self, path: str, ref: str) -> None:
        """Input images are pulled from the host they name: not the node's inside (SSRF rules)."""
        problem = image_host_problem(ref)
        if problem:
            self.error(path, f"{ref!r}: {problem}")

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
            name = adapter.source.name
            if name in seen:
                self.error(
                    f"{path}.source.name",
                    f"{name!r} is used by another adapter; adapter names must be unique",
                )
            seen.add(name)
            if len(name) > 63 or not DNS1123_LABEL.match(name):
                self.error(
                    f"{path}.source.name",
                    f"{name!r} cannot name an adapter (it becomes a directory, the model id at the "
                    "endpoint and the strength variable); use at most 63 lowercase letters, digits "
                    "and '-', starting and ending with a letter or digit",
                )
            if adapter.strength is not None:
                self.check_strength(f"{path}.strength", adapter.strength)
                if self.runtime == "vllm" and _is_number(adapter.strength) and float(adapter.strength) != 1.0:
                    self.warn(
                        f"{path}.strength",
                        "vLLM applies LoRA at full strength, so kaito serves a scaled copy of the "
                        "adapter; that works for plain LoRA adapters in safetensors form and stops the "
                        "server at start-up for others (upstream Kaito rejects strength with vLLM)",
                    )
            src = adapter.source
            if src.urls is not None:
                self.error(
                    f"{path}.source.urls",
                    "URLs are not an adapter source (in upstream Kaito neither); publish the adapter "
                    "as an image and set source.image",
                )
            if src.volume_source is not None:
                self.error(
                    f"{path}.source.volumeSource",
                    "kaito loads adapters from images only; publish the adapter as an image and set "
                    "source.image",
                )
            if src.image is None and src.urls is None and src.volume_source is None:
                self.error(f"{path}.source", "needs source.image, the adapter image to load")
            if src.image is not None:
                self.check_image(f"{path}.source.image", src.image)
                self.check_image_host(f"{path}.source.image", src.image)

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
        count = self.ws.resource.count
        if count is not None and count > 1:
            self.error(
                "resource.count",
                f"tuning runs on a single node, got {count}; set resource.count to 1 or remove it",
            )
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
            spec = tuning.preset
            options = spec.preset_options if spec is not None else None
            if preset.gated and not (options and options.model_access_secret):
                self.warn(
                    "tuning.preset.presetOptions.modelAccessSecret",
                    f"{preset.name} is gated on Hugging Face; the download needs a Secret with an HF token",
                )
            if options is not None and options.image:
                self.check_image("tuning.preset.presetOptions.image", options.image)
        sources = _sources(tuning.input)
        if len(sources) != 1:
            what = "none" if not sources else " and ".join(sources)
            self.error("tuning.input", f"needs exactly one of urls, image or volumeSource (got {what})")
        self.check_urls("tuning.input.urls", tuning.input.urls)
        if tuning.input.image is not None:
            self.check_image("tuning.input.image", tuning.input.image)
            self.check_image_host("tuning.input.image", tuning.input.image)
        out = tuning.output
        if out.image is None and out.volume_source is None:
            self.error("tuning.output", "needs image (pushed with imagePushSecret) or volumeSource")
        if out.image is not None and not out.image_push_secret:
            self.error(
                "tuning.output.imagePushSecret",
                "is required with tuning.output.image; name a docker-registry Secret that can push it",
            )
        if out.image is not None:
            self.check_image("tuning.output.image", out.image)
        self.check_tuning_config()

    def check_urls(self, path: str, urls: list[str] | None) -> None:
        if urls is not None and not urls:
            self.error(path, "is empty; list at least one http(s) URL or remove the field")
        for i, url in enumerate(urls or []):
            problem = url_problem(url)
            if problem:
                self.error(f"{path}[{i}]", problem)


_NOT_LOOKED_UP: Any = object()


def _config_name(ws: Workspace, path: str) -> str | None:
    if path == "inference.config":
        return ws.inference.config if ws.inference else None
    return ws.tuning.config if ws.tuning else None


@cache
def _by_repo() -> dict[str, ModelPreset]:
    return {m.hf_repo.lower(): m for m in list_presets()}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sources(src: DataSource) -> list[str]:
    return [
        name
        for name, value in (("urls", src.urls), ("image", src.image), ("volumeSource", src.volume_source))
        if value is not None
    ]


def _check_pod_policy(ws: Workspace, opts: ValidationOptions, result: ValidationResult) -> None:
    """The operator's pod policy, when it is on (kept apart from _Checker: it is the operator's
    choice, not a rule of the Workspace API)."""
    if opts.refuse_privileged_pods:
        result.errors += [FieldError(path, message) for path, message in pod_policy_problems(ws)]


def _check_update(ws: Workspace, old: Workspace, result: ValidationResult) -> None:
    """The fields upstream Kaito freezes after create (api/v1beta1/workspace_validation.go)."""

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
    new_count, old_count = ws.resource.count, old.resource.count
    if new_count is not None and old_count is not None and new_count != old_count:
        err("resource.count", f"was {old.resource.count}, now {ws.resource.count}")
    if (ws.inference is None) != (old.inference is None):
        err("inference", "a Workspace cannot switch between inference and tuning")
        return
    if ws.inference is not None and old.inference is not None:
        _preset_unchanged("inference.preset", ws.inference.preset, old.inference.preset, err)
        if (ws.inference.template is None) != (old.inference.template is None):
            err("inference.template", "it cannot be set or unset after create; its contents may change")
    if ws.tuning is not None and old.tuning is not None:
        _preset_unchanged("tuning.preset", ws.tuning.preset, old.tuning.preset, err)
        if ws.tuning.method != old.tuning.method:
            err("tuning.method", f"was {old.tuning.method!r}, now {ws.tuning.method!r}")
        if ws.tuning.input.name != old.tuning.input.name:
            err("tuning.input.name", f"was {old.tuning.input.name!r}, now {ws.tuning.input.name!r}")


def _preset_unchanged(
    path: str, new: PresetSpec | None, old: PresetSpec | None, err: Callable[[str, str], None]
) -> None:
    new_name = new.name if new else None
    old_name = old.name if old else None
    if new_name != old_name:
        err(f"{path}.name" if new_name and old_name else path, f"was {old_name!r}, now {new_name!r}")
    elif _dump(new) != _dump(old):
        err(path, "its accessMode and presetOptions are fixed with the model")


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json") if model is not None else None


def _example_sku(cloud: str | None) -> str:
    return "g5.xlarge" if cloud == "aws" else "Standard_NC24ads_A100_v4"


def _short_list(names: list[str], limit: int = 6) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"
