"""Fixtures for provisioning tests (helpers live in provisioning_helpers.py)."""

from __future__ import annotations

from provisioning_helpers import aks, crds, kclient

__all__ = ["aks", "crds", "kclient"]
