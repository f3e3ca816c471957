"""The one writer of Workspace status: only on a difference, message-only changes held back,
one Event per change.

Workloads compute the status they want (:class:`~kaito.controllers.workspace.workload.Report`);
the reconciler hands it here. Keeping the write in one place keeps three rules in one place:

- A status equal to the stored one is not written (a converged Workspace costs no request).
- A change of condition messages alone (a scheduler's "0/N nodes are available: …" recounting
  as it retries) is written at most once per :data:`STATUS_MESSAGE_INTERVAL` when the workload
  asks for it; the newest message is written when the interval is over, if still current.
- Each write emits one Event: the most telling transition, the others in its message.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kaito.api import names
from kaito.controllers.workspace import status
from kaito.runtime import GVK, NORMAL, WARNING, Client, EventRecorder, Writer

Obj = dict[str, Any]

#: Seconds between two status writes that change only condition messages.
STATUS_MESSAGE_INTERVAL = 5.0

#: Reasons that make a transition a Warning Event.
FAILURE_REASONS = set(status.FAILURE_REASONS) | {
    "PodUnschedulable",
    "NotOwned",
    "ConfigMapNotFound",
    "PresetDoesNotFit",
    "UnknownPreset",
    "InvalidTemplate",
    "TemplateGPUMismatch",
    "InvalidAdapterName",
    "UnsupportedAdapterSource",
    "InvalidModelParameters",
    "NodesNotEnough",
    "InvalidAPIKeySecret",
    # an org/model preset the Hugging Face Hub refused or could not answer for (kaito.api.hub)
    "GatedModel",
    "ModelNotFound",
    "RevisionNotFound",
    "UnsupportedArchitecture",
    "NoArchitecture",
    "IncompleteConfig",
    "NoWeights",
    "HubUnreachable",
    "HubUnavailable",
    status.UNAUTHENTICATED_LB,  # a warning Event, though the Workspace still serves
}


class StatusWriter:
    def __init__(self, client: Client, writer: Writer, events: EventRecorder, kind: GVK) -> None:
        self.client = client
        self.writer = writer
        self.events = events
        self.kind = kind
        #: (namespace, name) -> loop time of the last status write (for held message changes).
        self._written: dict[tuple[str, str], float] = {}

    async def write(self, ws: Obj, new: Obj, *, hold_message_only: bool = False) -> float | None:
        """Write ``new``'s status if it differs from ``ws``'s. Returns the seconds to wait when
        a message-only change is held back (nothing written), else None."""
        if new.get("status") == ws.get("status"):
            return None
        if hold_message_only:
            wait = self._message_only_wait(ws, new)
            if wait is not None:
                return wait
        written = await self.client.update_status(new)
        self.writer.remember(self.kind, written)
        meta = ws["metadata"]
        self._written[(meta["namespace"], meta["name"])] = asyncio.get_running_loop().time()
        self._record_transitions(ws, new)
        return None

    def forget(self, namespace: str, name: str) -> None:
        self._written.pop((namespace, name), None)

    def _message_only_wait(self, ws: Obj, new: Obj) -> float | None:
        """Seconds to hold back a status write that changes nothing but condition messages
        (None: write now)."""
        old_status, new_status = ws.get("status") or {}, new.get("status") or {}
        if old_status == new_status or _without_messages(old_status) != _without_messages(new_status):
            return None
        meta = ws["metadata"]
        last = self._written.get((meta["namespace"], meta["name"]))
        if last is None:
            return None
        wait = last + STATUS_MESSAGE_INTERVAL - asyncio.get_running_loop().time()
        return wait if wait > 0 else None

    def _record_transitions(self, old: Obj, new: Obj) -> None:
        """One Event per status change: the most telling transition, the others in its message."""
        changed = status.transitions(old, new)
        if not changed:
            return
        failures = [
            c for _, c in changed if c.get("status") == "False" and c.get("reason") in FAILURE_REASONS
        ]
        ready = next(
            (c for t, c in changed if t == names.WORKSPACE_READY and c.get("status") == "True"), None
        )
        if failures:
            kind, lead = WARNING, failures[0]
        elif ready is not None:
            kind, lead = NORMAL, ready
        elif any(t == names.RESOURCE_READY for t, _ in changed):
            kind, lead = NORMAL, next(c for t, c in changed if t == names.RESOURCE_READY)
        else:
            kind, lead = NORMAL, changed[0][1]
        parts = [
            f"{t}={c.get('status')} ({c.get('reason')})"
            for t, c in changed
            if t not in (names.WORKSPACE_SUCCEEDED, names.NODES_READY)  # restate ResourceReady
        ]
        message = f"{lead.get('message') or ''} [{', '.join(parts)}]".strip()
        self.events.emit(new, kind, str(lead.get("reason") or "StatusChanged"), message)


def _without_messages(st: Obj) -> Obj:
    out = dict(st)
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "message"}
        for c in st.get("conditions") or ()
        if isinstance(c, dict)
    ]
    return out


__all__ = ["FAILURE_REASONS", "STATUS_MESSAGE_INTERVAL", "StatusWriter"]
