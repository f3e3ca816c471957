"""The Azure credential the ``aks`` cloud signs ARM requests with."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential


def credential_from_env(
    ca_bundle: str | None, environ: Mapping[str, str] | None = None
) -> AsyncTokenCredential | None:
    """A client secret from the environment (as azure-identity's EnvironmentCredential reads it,
    but verifying the authority with ``ca_bundle``), else None: the provider then uses
    DefaultAzureCredential (environment, workload identity, managed identity, in that order)."""
    env = os.environ if environ is None else environ
    if env.get("AZURE_CLIENT_SECRET") and env.get("AZURE_CLIENT_ID") and env.get("AZURE_TENANT_ID"):
        from azure.identity.aio import ClientSecretCredential

        kwargs: dict[str, Any] = {}
        if env.get("AZURE_AUTHORITY_HOST"):
            kwargs["authority"] = env["AZURE_AUTHORITY_HOST"]
        if ca_bundle:
            kwargs["connection_verify"] = ca_bundle
        return ClientSecretCredential(
            env["AZURE_TENANT_ID"], env["AZURE_CLIENT_ID"], env["AZURE_CLIENT_SECRET"], **kwargs
        )
    return None


__all__ = ["credential_from_env"]
