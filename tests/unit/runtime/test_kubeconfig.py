"""The slim kubeconfig loader: merging, error messages, in-cluster, token files, exec plugins.

Requests against a real apiserver are in tests/integration/runtime/test_kubeconfig_apiserver.py.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito.runtime import Client, ExecConfig, KubeconfigError, RestConfig, load_configuration
from kaito.runtime._internal import kubeconfig as kc

SRC = Path(__file__).resolve().parents[3] / "src"


def write_kubeconfig(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def config_doc(
    *,
    cluster: str = "c",
    user: str = "u",
    context: str = "ctx",
    server: str = "https://127.0.0.1:6443",
    current: str | None = "ctx",
    user_body: dict[str, Any] | None = None,
    cluster_body: dict[str, Any] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    ctx: dict[str, Any] = {"cluster": cluster, "user": user}
    if namespace:
        ctx["namespace"] = namespace
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, **(cluster_body or {})}}],
        "users": [{"name": user, "user": user_body or {"token": "t-" + user}}],
        "contexts": [{"name": context, "context": ctx}],
    }
    if current:
        doc["current-context"] = current
    return doc


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither in-cluster variables nor $KUBECONFIG, and a HOME without ~/.kube."""
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


async def test_single_file_context_and_fields(tmp_path: Path, no_env: None) -> None:
    ca = b"-----BEGIN CERTIFICATE-----\nnot used here\n-----END CERTIFICATE-----\n"
    path = write_kubeconfig(
        tmp_path / "config",
        config_doc(
            cluster_body={
                "certificate-authority-data": base64.b64encode(ca).decode(),
                "tls-server-name": "kube",
            },
            user_body={"client-certificate": "certs/u.crt", "client-key": "/abs/u.key"},
            namespace="team-a",
        ),
    )
    cfg = await load_configuration(path)
    assert cfg.host == "https://127.0.0.1:6443"
    assert cfg.ca_data == ca and cfg.tls_server_name == "kube" and cfg.namespace == "team-a"
    # relative paths are relative to the kubeconfig file, as kubectl resolves them
    assert cfg.cert_file == str(tmp_path / "certs" / "u.crt") and cfg.key_file == "/abs/u.key"
    assert cfg.token is None and cfg.static_authorization() is None
    assert "context 'ctx'" in cfg.source and str(path) in cfg.source


async def test_kubeconfig_list_merges_first_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_kubeconfig(
        tmp_path / "a" / "config",
        config_doc(
            cluster="shared",
            user="alice",
            context="one",
            current=None,
            server="https://first:1",
            user_body={"tokenFile": "alice.token"},
        ),
    )
    second_doc = config_doc(
        cluster="shared", user="bob", context="two", current="two", server="https://second:2"
    )
    second_doc["contexts"].append({"name": "one", "context": {"cluster": "shared", "user": "bob"}})
    second = write_kubeconfig(tmp_path / "b" / "config", second_doc)
    missing = tmp_path / "missing"
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(missing), str(first), "", str(second)]))

    # current-context only set by the second file; its cluster "shared" comes from the first.
    cfg = await load_configuration()
    assert cfg.host == "https://first:1"
    assert cfg.token == "t-bob"  # user bob exists only in the second file
    # context "one" is defined by both: the first file's wins (user alice, token file next to it)
    one = await load_configuration(context="one")
    assert one.token_file == str(tmp_path / "a" / "alice.token") and one.token is None


@pytest.mark.parametrize(
    ("doc", "context", "message"),
    [
        (config_doc(current=None), None, "sets no current-context; pass a context (one of: ctx)"),
        (config_doc(), "nope", "has no context 'nope'; choose one of: ctx"),
        (
            config_doc(cluster="c", current="ctx") | {"clusters": []},
            None,
            "names cluster 'c', which no kubeconfig",
        ),
        (config_doc() | {"users": []}, None, "names user 'u', which no kubeconfig"),
        (
            config_doc(server="127.0.0.1:6443"),
            None,
            "server '127.0.0.1:6443' must be an http:// or https:// URL",
        ),
        (
            config_doc(cluster_body={"certificate-authority-data": "%%%"}),
            None,
            "cluster 'c': certificate-authority-data is not valid base64",
        ),
        (
            config_doc(user_body={"auth-provider": {"name": "gcp"}}),
            None,
            "user 'u': auth-provider 'gcp' is not supported",
        ),
        (
            config_doc(
                user_body={"exec": {"command": "x", "apiVersion": "client.authentication.k8s.io/v1alpha1"}}
            ),
            None,
            "exec.apiVersion 'client.authentication.k8s.io/v1alpha1' is not supported",
        ),
        (
            config_doc(user_body={"exec": {"apiVersion": "client.authentication.k8s.io/v1"}}),
            None,
            "user 'u': exec.command is required",
        ),
        (config_doc(cluster_body={"proxy-url": "http://proxy:3128"}), None, "proxy-url is not supported"),
    ],
)
async def test_bad_input_one_line_errors(
    tmp_path: Path, no_env: None, doc: dict[str, Any], context: str | None, message: str
) -> None:
    path = write_kubeconfig(tmp_path / "config", doc)
    with pytest.raises(KubeconfigError) as info:
        await load_configuration(path, context)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert str(path) in text


async def test_missing_and_malformed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    with pytest.raises(KubeconfigError, match=r"kubeconfig .*/absent does not exist"):
        await load_configuration(tmp_path / "absent")
    with pytest.raises(
        KubeconfigError, match=r"kubeconfig .*/home/.kube/config does not exist; .* set KUBECONFIG"
    ):
        await load_configuration()
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/x{os.pathsep}{tmp_path}/y")
    with pytest.raises(
        KubeconfigError, match=r"no kubeconfig found \(looked for .*/x, .*/y\); pass --kubeconfig"
    ):
        await load_configuration()
    bad = tmp_path / "bad"
    bad.write_text("apiVersion: v1\nclusters:\n  - name: [unclosed\n")
    with pytest.raises(KubeconfigError, match=r"bad is not valid YAML at line \d"):
        await load_configuration(bad)
    nameless = write_kubeconfig(tmp_path / "nameless", {"clusters": [{"cluster": {"server": "https://x"}}]})
    with pytest.raises(KubeconfigError, match=r"nameless: clusters\[0\] has no name"):
        await load_configuration(nameless)


def service_account_dir(tmp_path: Path, token: str = "sa-token-1") -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(token + "\n")
    (sa / "namespace").write_text("kaito-system")
    return sa


async def test_in_cluster(tmp_path: Path) -> None:
    sa = service_account_dir(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    cfg = kc.in_cluster_config(env, sa)
    assert cfg.host == "https://[fd00::1]:443"
    assert cfg.namespace == "kaito-system" and cfg.ca_file is None  # no ca.crt mounted here
    assert cfg.dynamic_auth and await cfg.authorization() == "Bearer sa-token-1"
    (sa / "token").unlink()
    with pytest.raises(
        KubeconfigError, match=r"in-cluster ServiceAccount .*token file .*/sa/token cannot be read"
    ):
        kc.in_cluster_config(env, sa)
    with pytest.raises(
        KubeconfigError, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset"
    ):
        kc.in_cluster_config({}, sa)


async def test_in_cluster_failure_falls_back_to_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    # KUBERNETES_SERVICE_HOST is set but no token is mounted here: the kubeconfig is used, and
    # when it is missing too the error names both.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(kc, "SERVICE_ACCOUNT_DIR", tmp_path / "nowhere")
    with pytest.raises(KubeconfigError, match="in-cluster configuration failed too"):
        await load_configuration()
    path = write_kubeconfig(tmp_path / "config", config_doc())
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert (await load_configuration()).host == "https://127.0.0.1:6443"


async def test_token_file_reread_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    cfg = RestConfig(host="https://h", token_file=str(token))
    assert await cfg.authorization() == "Bearer first"
    monkeypatch.setattr(kc, "_TOKEN_FILE_RECHECK_S", 0.0)
    # the kubelet's rotation: a new file renamed over the old one
    (tmp_path / "token.new").write_text("second\n")
    os.replace(tmp_path / "token.new", token)
    assert await cfg.authorization() == "Bearer second"
    # gone for a moment (mid-rotation): keep the last good token rather than failing requests
    token.unlink()
    assert await cfg.authorization() == "Bearer second"
    # after a 401, invalidate() re-reads at once and tells whether the token changed
    monkeypatch.setattr(kc, "_TOKEN_FILE_RECHECK_S", 3600.0)
    token.write_text("third")
    assert await cfg.authorization() == "Bearer second"  # within the recheck window
    assert cfg.invalidate_credentials() is True
    assert await cfg.authorization() == "Bearer third"
    assert cfg.invalidate_credentials() is False  # same token: retrying would not help


def exec_plugin(tmp_path: Path, body: str) -> Path:
    """A plugin script that counts its runs in ``runs`` next to itself."""
    script = tmp_path / "plugin.py"
    script.write_text(
        textwrap.dedent("""
        import json, os, pathlib, sys
        here = pathlib.Path(__file__).parent
        runs = here / "runs"
        n = int(runs.read_text()) + 1 if runs.exists() else 1
        runs.write_text(str(n))
        (here / f"info-{n}.json").write_text(os.environ.get("KUBERNETES_EXEC_INFO", ""))
    """)
        + textwrap.dedent(body)
    )
    return script


def runs(tmp_path: Path) -> int:
    p = tmp_path / "runs"
    return int(p.read_text()) if p.exists() else 0


def stamp(delta: datetime.timedelta) -> str:
    return (datetime.datetime.now(datetime.UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("api_version", kc.EXEC_API_VERSIONS)
async def test_exec_plugin_cached_until_expiry(tmp_path: Path, no_env: None, api_version: str) -> None:
    script = exec_plugin(
        tmp_path,
        """
        expiry = os.environ["EXPIRY"] if n == 1 else "2999-01-01T00:00:00Z"
        print(json.dumps({"apiVersion": sys.argv[1], "kind": "ExecCredential",
                          "status": {"token": f"tok-{n}-{os.environ['GREETING']}",
                                     "expirationTimestamp": expiry}}))
    """,
    )
    doc = config_doc(
        cluster_body={"certificate-authority-data": base64.b64encode(b"CA PEM").decode()},
        user_body={
            "exec": {
                "apiVersion": api_version,
                "command": sys.executable,
                "args": [str(script), api_version],
                "env": [
                    {"name": "GREETING", "value": "hi"},
                    {"name": "EXPIRY", "value": stamp(-datetime.timedelta(1))},
                ],
                "provideClusterInfo": True,
                "interactiveMode": "Never",
            }
        },
    )
    cfg = await load_configuration(write_kubeconfig(tmp_path / "config", doc))
    assert runs(tmp_path) == 0  # nothing runs at load time
    # the first credential had already expired: the next request runs the plugin again
    assert await cfg.authorization() == "Bearer tok-1-hi"
    assert await cfg.authorization() == "Bearer tok-2-hi"
    assert await cfg.authorization() == "Bearer tok-2-hi"
    assert runs(tmp_path) == 2
    info = json.loads((tmp_path / "info-1.json").read_text())
    assert info["apiVersion"] == api_version and info["kind"] == "ExecCredential"
    assert info["spec"]["interactive"] is False
    assert info["spec"]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(info["spec"]["cluster"]["certificate-authority-data"]) == b"CA PEM"
    # a 401 drops the cached token: the plugin runs again
    assert cfg.invalidate_credentials() is True
    assert await cfg.authorization() == "Bearer tok-3-hi"


async def test_exec_plugin_concurrent_requests_run_it_once(tmp_path: Path) -> None:
    import asyncio

    script = exec_plugin(
        tmp_path,
        """
        print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                          "status": {"token": "only"}}))
    """,
    )
    cfg = RestConfig(host="https://h", exec_provider=ExecConfig(sys.executable, (str(script),)))
    got = await asyncio.gather(*(cfg.authorization() for _ in range(8)))
    assert got == ["Bearer only"] * 8 and runs(tmp_path) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "sys.stderr.write('login expired\\nrun: mycloud login\\n'); sys.exit(3)",
            "exited with status 3: run: mycloud login; install mycloud",
        ),
        ("print('not json')", "printed no ExecCredential JSON on stdout"),
        (
            "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',"
            " 'kind': 'ExecCredential', 'status': {'token': 'x'}}))",
            "answered apiVersion 'client.authentication.k8s.io/v1beta1'",
        ),
        (
            "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential',"
            " 'status': {'clientCertificateData': 'PEM', 'clientKeyData': 'PEM'}}))",
            "returned a client certificate; kaito.runtime supports token credentials only",
        ),
        (
            "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential',"
            " 'status': {'token': 'x', 'expirationTimestamp': 'tomorrow'}}))",
            "status.expirationTimestamp 'tomorrow' is not an RFC 3339 time",
        ),
    ],
)
async def test_exec_plugin_failures(tmp_path: Path, body: str, message: str) -> None:
    script = exec_plugin(tmp_path, body + "\n")
    cfg = RestConfig(
        host="https://h",
        source="kubeconfig /x, context 'c'",
        exec_provider=ExecConfig(sys.executable, (str(script),), install_hint="install mycloud"),
    )
    with pytest.raises(KubeconfigError) as info:
        await cfg.authorization()
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(f"kubeconfig /x, context 'c': exec plugin {sys.executable!r}")


async def test_exec_plugin_not_found_and_interactive(tmp_path: Path) -> None:
    cfg = RestConfig(
        host="https://h", exec_provider=ExecConfig("/no/such/plugin", install_hint="brew install it")
    )
    with pytest.raises(KubeconfigError, match=r"'/no/such/plugin' cannot be started .*; brew install it"):
        await cfg.authorization()
    cfg = RestConfig(host="https://h", exec_provider=ExecConfig("true", interactive_mode="Always"))
    with pytest.raises(KubeconfigError, match="interactiveMode Always, but a controller has no terminal"):
        await cfg.authorization()


def self_signed(tmp_path: Path) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeconfig-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def test_ssl_context(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    assert RestConfig(host="http://127.0.0.1:8080").ssl_context() is False
    ctx = RestConfig(host="https://h", ca_data=cert, cert_data=cert, key_data=key).ssl_context()
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "kubeconfig-test"),),)]
    insecure = RestConfig(host="https://h", insecure_skip_verify=True).ssl_context()
    assert isinstance(insecure, ssl.SSLContext) and insecure.verify_mode == ssl.CERT_NONE
    with pytest.raises(
        KubeconfigError, match=r"certificate-authority '/nope/ca\.crt' is not a usable PEM CA bundle"
    ):
        RestConfig(host="https://h", ca_file="/nope/ca.crt", source="kubeconfig k").ssl_context()
    with pytest.raises(KubeconfigError, match="client-certificate/client-key cannot be loaded"):
        RestConfig(host="https://h", cert_data=cert, key_data=b"not a key").ssl_context()
    with pytest.raises(KubeconfigError, match="client-certificate is set without client-key"):
        RestConfig(host="https://h", cert_data=cert).ssl_context()


async def test_client_accepts_kubernetes_asyncio_configuration() -> None:
    from kubernetes_asyncio.client import Configuration

    legacy = Configuration(host="https://10.0.0.1:6443/", api_key={"BearerToken": "abc"})
    legacy.api_key_prefix = {"BearerToken": "Bearer"}
    legacy.verify_ssl = False
    async with Client(legacy) as client:
        assert client.config is legacy and client.base_url == "https://10.0.0.1:6443"
        assert client.rest_config.insecure_skip_verify and not client.rest_config.dynamic_auth
        assert client.session.headers["Authorization"] == "Bearer abc"
    rest = RestConfig(host="https://10.0.0.1:6443", token="xyz")
    async with Client(rest) as client:
        assert client.rest_config is rest and client.session.headers["Authorization"] == "Bearer xyz"
    with pytest.raises(
        TypeError, match="expected a RestConfig or a kubernetes_asyncio Configuration, got dict"
    ):
        Client({"host": "https://x"})  # type: ignore[arg-type]


def test_operator_never_imports_kubernetes_asyncio_client(tmp_path: Path, no_env: None) -> None:
    """The reason this loader exists: kubernetes_asyncio.client costs ~34 MB RSS per process."""
    path = write_kubeconfig(tmp_path / "config", config_doc(server="http://127.0.0.1:1"))
    code = textwrap.dedent(f"""
        import asyncio, sys
        import kaito.cli.main, kaito.operator
        from kaito.operator import OperatorOptions, build_operator
        from kaito.runtime import load_configuration

        async def main():
            config = await load_configuration({str(path)!r})
            build_operator(config, OperatorOptions())

        asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio"))
        print("LOADED", loaded)
        sys.exit(1 if loaded else 0)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG")}
    env["PYTHONPATH"] = str(SRC)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "LOADED []" in proc.stdout
