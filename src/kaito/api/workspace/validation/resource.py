"""``resource``: the label selector copied onto nodes, the GPU SKU, and whether the preset fits it
(:func:`kaito.presets.fit`, the verdict the controller's plan uses too)."""

from __future__ import annotations

import difflib
import json

from kaito.api import names as c
from kaito.api.labels import key_problem, reserved_domain, value_problem
from kaito.api.workspace.validation.checker import Checker
from kaito.presets import GPUSku, ModelPreset, fit, get_sku, sku_names


def check_label_selector(ck: Checker) -> None:
    """Keys and values as the apiserver will check them on the NodePools, NodeClaims and Nodes
    they are copied to, and no key under a domain kaito, Karpenter or Kubernetes own: the
    provisioners copy matchLabels onto the claims, so ``kaito.sh/workspace`` there would
    label the claims as another Workspace's."""
    sel = ck.ws.resource.label_selector
    base = "resource.labelSelector"
    keys: list[str] = []
    for key, value in (sel.match_labels or {}).items():
        path = f"{base}.matchLabels[{json.dumps(key, ensure_ascii=False)}]"
        keys.append(key)
        if check_label_key(ck, path, key):
            problem = value_problem(value)
            if problem:
                ck.error(path, f"{problem}; change the value (it becomes a node label)")
    for i, req in enumerate(sel.match_expressions or []):
        path = f"{base}.matchExpressions[{i}]"
        keys.append(req.key)
        check_label_key(ck, f"{path}.key", req.key)
        values = req.values or []
        if req.operator in ("In", "NotIn") and not values:
            ck.error(
                f"{path}.values",
                f"must list at least one value for operator {req.operator}; add values or use "
                "Exists / DoesNotExist",
            )
        elif req.operator in ("Exists", "DoesNotExist") and values:
            ck.error(
                f"{path}.values",
                f"must be empty for operator {req.operator}; remove values or use In / NotIn",
            )
        for j, value in enumerate(values):
            problem = value_problem(value)
            if problem:
                ck.error(f"{path}.values[{j}]", f"{problem}; change the value")
    if not keys:
        ck.error(
            base,
            "needs at least one label of your own; add e.g. matchLabels: {apps: my-model}",
        )


def check_label_key(ck: Checker, path: str, key: str) -> bool:
    """Report a bad or reserved selector key at ``path``; True when the key is usable."""
    problem = key_problem(key)
    if problem:
        ck.error(path, f"{problem}; rename the key (it becomes a node label)")
        return False
    domain = reserved_domain(key)
    if domain is not None:
        ck.error(
            path,
            f"{key!r} is under {domain}, a label domain kaito, Karpenter or Kubernetes set "
            "themselves, so a Workspace may not select or set it; use a key of your own such "
            "as apps: my-model",
        )
        return False
    return True


def check_instance_type(ck: Checker) -> GPUSku | None:
    itype = ck.ws.resource.instance_type
    path = "resource.instanceType"
    if not itype:
        if ck.opts.auto_provisioning:
            ck.error(
                path,
                "is required when kaito provisions GPU nodes; set a GPU SKU such as "
                f"{_example_sku(ck.opts.cloud)} (list them with `kaito presets skus`)",
            )
        return None
    sku = get_sku(itype)
    cloud = ck.opts.cloud
    if sku is None or (cloud is not None and sku.cloud != cloud):
        if not ck.opts.auto_provisioning:
            ck.result.warnings.append(
                f"{path}: {itype!r} is not in kaito's SKU table; GPU memory is not checked"
            )
            return None
        known = sku_names(cloud)
        close = difflib.get_close_matches(itype, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        ck.error(
            path,
            f"{itype!r} is not a known GPU SKU for {cloud or 'any cloud'}; {hint}use one of "
            f"{_short_list(known)} (kaito presets skus)",
        )
        return None
    return sku


def check_inference_fit(ck: Checker, preset: ModelPreset, sku: GPUSku) -> None:
    count = ck.ws.resource.count
    verdict = fit(preset, sku, count, annotations=ck.annotations)  # shared with the controller
    plan = verdict.estimate
    if plan.fits:
        return
    if verdict.bypassed:
        ck.warn(
            "resource.instanceType",
            f"GPU memory check bypassed ({c.ANNOTATION_BYPASS_RESOURCE_CHECKS}): {plan.reason}",
        )
        return
    if plan.required_nodes is not None and count is not None and count < plan.required_nodes:
        ck.error(
            "resource.count",
            f"{plan.reason}; set resource.count to {plan.required_nodes} or remove it to let "
            "kaito size the workspace",
        )
    else:
        ck.error(
            "resource.instanceType",
            f"not enough GPU for {preset.name}: {plan.reason}; pick a larger SKU "
            f"(`kaito estimate --preset {preset.name}` lists the ones that fit)",
        )


def _example_sku(cloud: str | None) -> str:
    return "g5.xlarge" if cloud == "aws" else "Standard_NC24ads_A100_v4"


def _short_list(names: list[str], limit: int = 6) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"
