"""The one exception every tuning step raises for a problem the user must fix."""

from __future__ import annotations


class TuningError(Exception):
    """A refusal whose message is the single line the pod log ends with (and the Job's reason)."""
