"""Settings of the InferenceSet controller (filled from ``kaito.operator.OperatorOptions``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class InferenceSetControllerOptions:
    #: InferenceSets reconciled at once. A reconcile is a handful of cache reads and at most a
    #: few writes, so a small pool keeps up; upstream runs 5.
    max_concurrent_reconciles: int = 4
    #: fieldManager of the server-side applies that write child Workspaces, and the Event source.
    field_manager: str = "kaito-inferenceset-controller"
    #: Seconds a write of the controller's own stands in for the cache's view of a child until
    #: the cache shows it (see ``pending``); bounds the stall a lost watch event can cause.
    pending_ttl: float = 60.0
