"""Fixtures for the workspace controller tests (helpers live in workspace_helpers.py)."""

from __future__ import annotations

from workspace_helpers import crds, kclient, operator

__all__ = ["crds", "kclient", "operator"]
