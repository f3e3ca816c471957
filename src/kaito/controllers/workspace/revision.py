"""Spec revisions: a hash of what shapes the workload, kept as ControllerRevisions.

The hash covers ``resource`` and ``inference`` (and ``tuning``), so metadata edits and status
writes never roll pods. Each distinct spec gets one ControllerRevision ``<ws>-<hash10>`` with an
increasing ``revision`` number; the number is what the ``workspace.kaito.io/revision``
annotation shows, like ``kubectl rollout history`` does for Deployments. History is bounded.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kaito.api import names
from kaito.runtime import GVK, is_controlled_by, set_controller_reference

CONTROLLER_REVISION = GVK("apps", "v1", "ControllerRevision")
#: Label carrying the full spec hash on a ControllerRevision.
LABEL_HASH = "kaito.sh/revision-hash"

Obj = dict[str, Any]


def spec_of(ws: Obj) -> Obj:
    return {k: ws[k] for k in ("resource", "inference", "tuning") if ws.get(k) is not None}


def spec_hash(ws: Obj) -> str:
    text = json.dumps(spec_of(ws), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def revision_name(ws_name: str, digest: str) -> str:
    return f"{ws_name[: 253 - 11]}-{digest[:10]}"


def owned_revisions(ws: Obj, revisions: list[Obj]) -> list[Obj]:
    """This Workspace's revisions, oldest first (the StatefulSet controller's share the label)."""
    mine = [r for r in revisions if is_controlled_by(r, ws)]
    return sorted(mine, key=lambda r: int(r.get("revision") or 0))


def build_revision(ws: Obj, digest: str, number: int) -> Obj:
    meta = ws["metadata"]
    rev: Obj = {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": revision_name(meta["name"], digest),
            "namespace": meta["namespace"],
            "labels": {
                names.LABEL_WORKSPACE: meta["name"],
                names.LABEL_WORKSPACE_NAMESPACE: meta["namespace"],
                LABEL_HASH: digest[:63],
            },
        },
        "data": spec_of(ws),
        "revision": number,
    }
    set_controller_reference(ws, rev)
    return rev


def next_number(revisions: list[Obj]) -> int:
    return max((int(r.get("revision") or 0) for r in revisions), default=0) + 1


def to_prune(revisions: list[Obj], current: str, keep: int) -> list[Obj]:
    """Oldest revisions beyond ``keep``; the current one is never pruned."""
    old = [r for r in revisions if r["metadata"]["name"] != current]
    surplus = len(old) - max(keep - 1, 0)
    return old[:surplus] if surplus > 0 else []
