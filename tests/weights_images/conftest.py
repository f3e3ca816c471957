"""Fixtures for weights images: the tuning suite's real registry (hack/registry.sh, TLS and
htpasswd) and its tiny random-weight model, shared rather than started twice in a run."""

from __future__ import annotations

from tuning.conftest import Registry, registry, tiny_model

__all__ = ["Registry", "registry", "tiny_model"]
