"""The Workspace's name and the values of the annotations upstream Kaito reads."""

from __future__ import annotations

import re

from kaito.api import names as c
from kaito.api.workspace.types import api_key_secret_of
from kaito.api.workspace.validation.checker import Checker

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Annotations whose values upstream Kaito acts on (kaito-project/kaito api/v1beta1/labels.go); the
# names are shared with the controllers that act on them.
ANNOTATION_ENABLE_LB = c.ANNOTATION_ENABLE_LB
ANNOTATION_RUNTIME = c.ANNOTATION_RUNTIME
ANNOTATION_BYPASS_RESOURCE_CHECKS = c.ANNOTATION_BYPASS_RESOURCE_CHECKS
ANNOTATION_NODE_IMAGE_FAMILY = c.ANNOTATION_NODE_IMAGE_FAMILY
RUNTIMES = c.RUNTIMES
NODE_IMAGE_FAMILIES = c.NODE_IMAGE_FAMILIES


def check_name(ck: Checker) -> None:
    name = ck.ws.metadata.name
    if name is None and not ck.ws.metadata.generate_name:
        ck.error("metadata.name", "is required")
    elif name is not None and (len(name) > 63 or not DNS1035.match(name)):
        ck.error(
            "metadata.name",
            f"{name!r} cannot name the Workspace's Service; use at most 63 lowercase letters, "
            "digits and '-', starting with a letter",
        )


def check_annotations(ck: Checker) -> None:
    """Values of the annotations upstream Kaito reads. Upstream ignores a value it does not
    know (``enablelb: "true"`` silently gives a ClusterIP Service); kaito says so instead."""
    ann = ck.annotations

    def path(key: str) -> str:
        return f"metadata.annotations[{key}]"

    lb = ann.get(ANNOTATION_ENABLE_LB)
    if lb is not None and lb.strip().lower() not in ("true", "false"):
        ck.error(
            path(ANNOTATION_ENABLE_LB),
            f'{lb!r} is not a value this annotation takes; set "True" for a LoadBalancer Service '
            '(upstream Kaito reads only that spelling) or "False" / remove it for ClusterIP',
        )
    runtime = ann.get(ANNOTATION_RUNTIME)
    if runtime is not None and runtime not in RUNTIMES:
        ck.error(
            path(ANNOTATION_RUNTIME),
            f"{runtime!r} is not a runtime; use vllm (the default) or transformers",
        )
    bypass = ann.get(ANNOTATION_BYPASS_RESOURCE_CHECKS)
    if bypass is not None and bypass not in ("", "true", "True"):
        ck.error(
            path(ANNOTATION_BYPASS_RESOURCE_CHECKS),
            f"{bypass!r}: the GPU memory check is bypassed whenever this annotation is present, "
            'whatever its value (as in upstream Kaito); set "true" or remove the annotation',
        )
    try:
        api_key_secret_of(ann)
    except ValueError as exc:
        ck.error(path(c.ANNOTATION_API_KEY_SECRET), str(exc))
    mode = ann.get(c.ANNOTATION_PERFORMANCE_MODE)
    if mode is not None and mode not in c.PERFORMANCE_MODES:
        ck.error(
            path(c.ANNOTATION_PERFORMANCE_MODE),
            f"{mode!r} is not a vLLM performance mode; choose one of: {', '.join(c.PERFORMANCE_MODES)}",
        )
    elif mode is not None and ck.runtime != c.RUNTIME_VLLM:
        ck.warn(
            path(c.ANNOTATION_PERFORMANCE_MODE),
            f"applies to the vllm runtime only; the {ck.runtime} runtime ignores it",
        )
    check_node_class_name(ck)
    family = ann.get(ANNOTATION_NODE_IMAGE_FAMILY)
    if family is not None and family.strip().lower() not in NODE_IMAGE_FAMILIES:
        ck.error(
            path(ANNOTATION_NODE_IMAGE_FAMILY),
            f"unsupported node image family {family!r}; use {' or '.join(NODE_IMAGE_FAMILIES)}",
        )


def check_node_class_name(ck: Checker) -> None:
    """``kaito.sh/node-class-name`` names one of the operator's Karpenter node classes. Refused
    outside the allowlist when the karpenter backend provisions nodes (a NodePool referencing an
    unknown class would never get a node); a warning otherwise, since no other backend reads it."""
    key = c.ANNOTATION_NODE_CLASS_NAME
    name = ck.annotations.get(key)
    if not name:
        return
    allowed = ck.opts.node_class_names
    if allowed is None:
        ck.warn(
            f"metadata.annotations[{key}]",
            "is read only by the karpenter node provisioner (--node-provisioner karpenter); "
            "this operator ignores it",
        )
    elif name not in allowed:
        ck.error(
            f"metadata.annotations[{key}]",
            f"{name!r} is not a node class of this operator; supported values are "
            f"{', '.join(allowed)} (its --karpenter-node-classes), or remove the annotation for "
            "the default",
        )
