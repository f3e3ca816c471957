"""Machinery behind kaito.runtime's public modules; no compatibility promise (like Go's
``pkg/internal``). Import public names from :mod:`kaito.runtime` instead."""
