"""The slim kubeconfig loader against a real kube-apiserver: the envtest kubeconfig (client
certificate), a rotating ServiceAccount token file, exec credential plugins and tls-server-name."""

from __future__ import annotations

import asyncio
import base64
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from kaito.envtest import Cluster
from kaito.runtime import (
    CONFIGMAP,
    NAMESPACE,
    Client,
    ForbiddenError,
    KubeconfigError,
    RestConfig,
    UnauthorizedError,
    load_configuration,
)
from kaito.runtime._internal import kubeconfig as kc


@pytest.fixture
async def admin(kube_cluster: Cluster) -> AsyncIterator[Client]:
    async with Client(kube_cluster.client_configuration()) as c:
        yield c


async def service_account_token(admin: Client, namespace: str, name: str, *, view: bool) -> str:
    """A bound token (TokenRequest) of a fresh ServiceAccount, optionally allowed to read."""
    await admin.create(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
    )
    if view:
        await admin.create(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            }
        )
    review = await admin.raw_request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    token: str = review["status"]["token"]
    return token


async def eventually_lists(client: Client, namespace: str, within: float = 60.0) -> list[dict[str, Any]]:
    """RoleBindings take effect through the authorizer's informer: wait for it."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await client.list_from_api(CONFIGMAP, namespace)
        except ForbiddenError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def cluster_entry(kube_cluster: Cluster, **extra: Any) -> dict[str, Any]:
    assert kube_cluster.pki is not None
    ca = base64.b64encode(Path(kube_cluster.pki.ca_cert).read_bytes()).decode()
    return {
        "name": "envtest",
        "cluster": {"server": kube_cluster.server, "certificate-authority-data": ca, **extra},
    }


def write_config(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [cluster],
                "users": [{"name": "me", "user": user}],
                "contexts": [{"name": "test", "context": {"cluster": "envtest", "user": "me"}}],
            }
        )
    )
    return path


async def test_envtest_kubeconfig_lists(kube_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # the file kubectl uses (client certificate and key inline as -data), given explicitly ...
    cfg = await load_configuration(str(kube_cluster.kubeconfig))
    assert isinstance(cfg, RestConfig) and cfg.host == kube_cluster.server and cfg.cert_data and cfg.key_data
    async with Client(cfg) as client:
        names = {n["metadata"]["name"] for n in await client.list(NAMESPACE)}
    assert {"default", "kube-system"} <= names
    # ... and through $KUBECONFIG, merged after a missing entry
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KUBECONFIG", f"/nonexistent/kubeconfig:{kube_cluster.kubeconfig}")
    async with Client(await load_configuration()) as client:
        assert await client.list_from_api(NAMESPACE, limit=1)


async def test_token_file_rotation(
    kube_cluster: Cluster, admin: Client, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = await service_account_token(admin, namespace, "reader", view=True)
    other = await service_account_token(admin, namespace, "other", view=False)
    token_file = tmp_path / "token"
    token_file.write_text(reader)
    assert kube_cluster.pki is not None
    cfg = RestConfig(
        host=kube_cluster.server, ca_file=str(kube_cluster.pki.ca_cert), token_file=str(token_file)
    )
    async with Client(cfg) as client:
        await eventually_lists(client, namespace)
        # the kubelet rotates the token: the next requests carry the new one, no restart
        (tmp_path / "token.tmp").write_text(other)
        (tmp_path / "token.tmp").replace(token_file)
        deadline = time.monotonic() + 60
        while True:
            try:
                await client.list_from_api(CONFIGMAP, namespace)
            except ForbiddenError as exc:
                assert f"system:serviceaccount:{namespace}:other" in str(exc)
                break
            assert time.monotonic() < deadline, "the rotated token file was never re-read"
            await asyncio.sleep(0.2)

    # A stale cached token answered 401 is re-read at once and the request resent.
    monkeypatch.setattr(kc, "_TOKEN_FILE_RECHECK_S", 3600.0)
    token_file.write_text("not-a-valid-token")
    cfg = RestConfig(
        host=kube_cluster.server, ca_file=str(kube_cluster.pki.ca_cert), token_file=str(token_file)
    )
    async with Client(cfg) as client:
        with pytest.raises(UnauthorizedError):
            await client.list_from_api(CONFIGMAP, namespace)
        token_file.write_text(reader)  # within the recheck window: only the 401 makes it re-read
        await client.list_from_api(CONFIGMAP, namespace)


@pytest.mark.parametrize("api_version", kc.EXEC_API_VERSIONS)
async def test_exec_plugin(
    kube_cluster: Cluster, admin: Client, namespace: str, tmp_path: Path, api_version: str
) -> None:
    reader = await service_account_token(admin, namespace, "reader", view=True)
    (tmp_path / "good").write_text(reader)
    # The plugin's first answer is a token the apiserver refuses, as a credential revoked before
    # its expirationTimestamp would be: the client must run the plugin again on the 401.
    script = tmp_path / "plugin.py"
    script.write_text(
        textwrap.dedent("""
        import json, pathlib, sys
        here = pathlib.Path(sys.argv[0]).parent
        runs = here / "runs"
        n = int(runs.read_text()) + 1 if runs.exists() else 1
        runs.write_text(str(n))
        token = "revoked" if n == 1 else (here / "good").read_text()
        print(json.dumps({"apiVersion": sys.argv[1], "kind": "ExecCredential",
                          "status": {"token": token, "expirationTimestamp": "2999-01-01T00:00:00Z"}}))
    """)
    )
    path = write_config(
        tmp_path / "config",
        cluster_entry(kube_cluster),
        {
            "exec": {
                "apiVersion": api_version,
                "command": sys.executable,
                "args": [str(script), api_version],
                "interactiveMode": "Never",
            }
        },
    )
    cfg = await load_configuration(str(path))
    async with Client(cfg) as client:
        await eventually_lists(client, namespace)
        assert (tmp_path / "runs").read_text() == "2"
        for _ in range(3):
            await client.list_from_api(CONFIGMAP, namespace)
        assert (tmp_path / "runs").read_text() == "2"  # cached until expirationTimestamp


async def test_exec_plugin_failure_reaches_the_caller(kube_cluster: Cluster, tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "config",
        cluster_entry(kube_cluster),
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": sys.executable,
                "args": ["-c", "import sys; sys.stderr.write('token expired, run: login'); sys.exit(1)"],
                "installHint": "see docs/library.md",
            }
        },
    )
    async with Client(await load_configuration(str(path))) as client:
        with pytest.raises(
            KubeconfigError, match="exited with status 1: token expired, run: login; see docs"
        ):
            await client.list_from_api(NAMESPACE)


async def test_tls_server_name(kube_cluster: Cluster, tmp_path: Path) -> None:
    """The apiserver's certificate names localhost, not the address we dial: tls-server-name
    decides which name is checked."""
    assert kube_cluster.pki is not None
    user = {
        "client-certificate": str(kube_cluster.pki.admin_cert),
        "client-key": str(kube_cluster.pki.admin_key),
    }
    good = write_config(
        tmp_path / "good", cluster_entry(kube_cluster, **{"tls-server-name": "localhost"}), user
    )
    async with Client(await load_configuration(str(good))) as client:
        assert await client.list_from_api(NAMESPACE, limit=1)
    bad = write_config(
        tmp_path / "bad", cluster_entry(kube_cluster, **{"tls-server-name": f"x{uuid.uuid4().hex}"}), user
    )
    async with Client(await load_configuration(str(bad))) as client:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await client.list_from_api(NAMESPACE, limit=1)
