"""Kubernetes label syntax and the label domains a Workspace's selector may not use.

The Workspace's ``resource.labelSelector`` is copied onto NodePools, NodeClaims and Nodes, so a
key or value the apiserver would refuse there (422) leaves the Workspace stuck long after
``kubectl apply`` said yes; and a key under a domain kaito or Karpenter own (``kaito.sh/workspace``)
would let one tenant's claims carry another tenant's labels. The rules here are apimachinery's
(``validation.IsQualifiedName`` and ``IsValidLabelValue``), written out so the webhook can refuse
at admission what the apiserver would refuse later.
"""

from __future__ import annotations

import re
from typing import Final

#: What a label name (and a label value) may be: alphanumerics, '-', '_' and '.', starting and
#: ending alphanumeric (apimachinery's qualifiedNameFmt).
_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NAME_MAX: Final = 63
PREFIX_MAX: Final = 253
VALUE_MAX: Final = 63
_NAME_RULE = (
    "at most 63 characters: letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
)

#: Label domains kaito, Karpenter, AKS and Kubernetes write themselves; a key under one of these
#: (or under a subdomain of one) is theirs, not the Workspace author's.
RESERVED_DOMAINS: Final = (
    "kaito.sh",
    "karpenter.sh",
    "karpenter.azure.com",
    "kubernetes.azure.com",
    "node.kubernetes.io",
    "kubernetes.io",
    "k8s.io",
)
#: ``karpenter.k8s.<cloud>`` (karpenter.k8s.aws, ...): Karpenter's per-cloud provider domains.
_KARPENTER_CLOUD = re.compile(r"^(.+\.)?karpenter\.k8s\.[a-z0-9-]+$")


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key (apimachinery's qualified name), or None."""
    prefix, sep, name = key.rpartition("/")
    if not sep:
        prefix = ""
    elif not prefix:
        return f"{key!r} is not a valid label key: the prefix before '/' is empty"
    if "/" in prefix:
        return f"{key!r} is not a valid label key: it has more than one '/'"
    if prefix and (len(prefix) > PREFIX_MAX or not _DNS1123_SUBDOMAIN.match(prefix)):
        return (
            f"{key!r} is not a valid label key: the prefix {prefix!r} must be a DNS subdomain (at most "
            "253 lowercase letters, digits, '-' and '.')"
        )
    if not name:
        return f"{key!r} is not a valid label key: the name after the prefix is empty"
    if len(name) > NAME_MAX or not _NAME.match(name):
        return f"{key!r} is not a valid label key: the name {name!r} must be {_NAME_RULE}"
    return None


def value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid label value (empty is valid), or None."""
    if value == "" or (len(value) <= VALUE_MAX and _NAME.match(value)):
        return None
    return f"{value!r} is not a valid label value: use an empty value or {_NAME_RULE}"


def reserved_domain(key: str) -> str | None:
    """The reserved domain ``key`` falls under (``kaito.sh`` for ``kaito.sh/workspace`` and for
    ``x.kaito.sh/y``), or None for a key of the user's own."""
    prefix, sep, _ = key.rpartition("/")
    if not sep:
        return None
    domain = prefix.rstrip(".").lower()
    for reserved in RESERVED_DOMAINS:
        if domain == reserved or domain.endswith("." + reserved):
            return reserved
    if _KARPENTER_CLOUD.match(domain):
        return "karpenter.k8s.*"
    return None
