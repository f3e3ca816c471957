"""Client configuration without kubernetes_asyncio: kubeconfig files, the in-cluster
ServiceAccount and exec credential plugins.

Why not ``kubernetes_asyncio.config``: importing it imports ``kubernetes_asyncio.client`` and its
~900 generated model modules, about 34 MB of RSS in every controller process, although a
dict-based client uses none of them. What a controller needs from a kubeconfig is small: where
the apiserver is, how to trust it and how to authenticate. The public names are re-exported by
:mod:`kaito.runtime`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import json
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")

# A token file is stat()ed at most this often. The kubelet rewrites a projected ServiceAccount
# token at 80% of its lifetime (an hour or more), so a second of staleness costs nothing, while
# a stat per request would cost a syscall on the hot path.
_TOKEN_FILE_RECHECK_S = 1.0


class KubeconfigError(Exception):
    """The configuration cannot be loaded, or credentials cannot be obtained from it. The
    message is one line naming the file, field or context at fault and how to fix it."""


@dataclass(frozen=True)
class ExecConfig:
    """A kubeconfig ``user.exec`` credential plugin (client.authentication.k8s.io v1/v1beta1).

    The command runs without a terminal whenever a token is needed and the cached one has
    passed its ``expirationTimestamp`` (or the apiserver answered 401)."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    api_version: str = EXEC_API_VERSIONS[0]
    provide_cluster_info: bool = False
    install_hint: str = ""
    interactive_mode: str = "IfAvailable"
    timeout: float = 60.0


@dataclass
class RestConfig:
    """Where the apiserver is, how to trust it and how to authenticate to it (client-go's
    ``rest.Config``, without what a controller does not need, such as proxies).

    Data fields win over their file counterparts (``ca_data`` over ``ca_file``). For
    authentication the first set of ``token_provider``, ``exec_provider``, ``token_file`` and
    ``token`` is used; a token file is re-read when it changes, because bound ServiceAccount
    tokens rotate under a running process."""

    host: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    token: str | None = None
    token_file: str | None = None
    insecure_skip_verify: bool = False
    tls_server_name: str | None = None
    exec_provider: ExecConfig | None = None
    #: any async callable returning a bearer token, called before every request (cache inside)
    token_provider: Callable[[], Awaitable[str | None]] | None = None
    #: the context's namespace (in-cluster: the Pod's), for callers that want a default
    namespace: str | None = None
    #: where this came from, for error messages ("/home/me/.kube/config, context kind-a")
    source: str = ""
    check_hostname: bool = field(default=True, repr=False)

    _file_token: str | None = field(default=None, init=False, repr=False, compare=False)
    _file_stat: tuple[int, int, int] | None = field(default=None, init=False, repr=False, compare=False)
    # -inf, not 0.0: time.monotonic() counts from boot, so on a node up for less than the recheck
    # window a 0.0 stamp would still look fresh and a forced re-read would be skipped
    _file_checked: float = field(default=float("-inf"), init=False, repr=False, compare=False)
    _exec_token: str | None = field(default=None, init=False, repr=False, compare=False)
    _exec_expiry: float | None = field(default=None, init=False, repr=False, compare=False)
    _exec_lock: asyncio.Lock | None = field(default=None, init=False, repr=False, compare=False)

    # ----- TLS

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS context for ``https`` hosts (``False``, meaning none, for plain ``http``)."""
        if not self.host.startswith("https"):
            return False
        where = self.source or self.host
        if self.insecure_skip_verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            try:
                if self.ca_data:
                    ctx = ssl.create_default_context(cadata=self.ca_data.decode())
                elif self.ca_file:
                    ctx = ssl.create_default_context(cafile=self.ca_file)
                else:
                    ctx = ssl.create_default_context()
            except (OSError, ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
                field_name = "certificate-authority-data" if self.ca_data else "certificate-authority"
                raise KubeconfigError(
                    f"{where}: {field_name} {'' if self.ca_data else self.ca_file!r} is not a usable "
                    f"PEM CA bundle ({exc}); point it at the cluster's CA certificate"
                ) from None
            ctx.check_hostname = self.check_hostname
        if self.cert_data or self.cert_file:
            self._load_client_cert(ctx, where)
        return ctx

    def _load_client_cert(self, ctx: ssl.SSLContext, where: str) -> None:
        if (self.cert_data or self.cert_file) and not (self.key_data or self.key_file):
            raise KubeconfigError(f"{where}: client-certificate is set without client-key; set both")
        tmp: str | None = None
        try:
            cert, key = self.cert_file, self.key_file
            if self.cert_data or self.key_data:
                # ssl loads certificates from files only: write the data to a private folder.
                tmp = tempfile.mkdtemp(prefix="kaito-kubeconfig-")
                if self.cert_data:
                    cert = os.path.join(tmp, "client.crt")
                    _write_private(cert, self.cert_data)
                if self.key_data:
                    key = os.path.join(tmp, "client.key")
                    _write_private(key, self.key_data)
            assert cert is not None
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise KubeconfigError(
                f"{where}: client-certificate/client-key cannot be loaded ({exc}); "
                "check that both are PEM and belong together"
            ) from None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    # ----- authentication

    @property
    def dynamic_auth(self) -> bool:
        """Whether the Authorization header can change over time (re-asked per request)."""
        return bool(self.token_provider or self.exec_provider or self.token_file)

    def static_authorization(self) -> str | None:
        """The Authorization header when it never changes, else None."""
        if self.dynamic_auth or not self.token:
            return None
        return f"Bearer {self.token}"

    async def authorization(self) -> str | None:
        """The Authorization header to send now (running the exec plugin when needed)."""
        token: str | None
        if self.token_provider is not None:
            token = await self.token_provider()
        elif self.exec_provider is not None:
            token = await self._token_from_exec()
        elif self.token_file:
            token = self._token_from_file()
        else:
            token = self.token
        return f"Bearer {token}" if token else None

    def invalidate_credentials(self) -> bool:
        """Forget cached credentials after a 401; True when asking again may give other ones."""
        if self.token_provider is not None:
            return False
        if self.exec_provider is not None:
            had = self._exec_token is not None
            self._exec_token, self._exec_expiry = None, None
            return had
        if self.token_file:
            old = self._file_token
            self._file_stat, self._file_checked = None, float("-inf")
            try:
                return self._token_from_file() != old
            except KubeconfigError:
                return False
        return False

    def _token_from_file(self) -> str:
        assert self.token_file is not None
        now = time.monotonic()
        if self._file_token is not None and now - self._file_checked < _TOKEN_FILE_RECHECK_S:
            return self._file_token
        self._file_checked = now
        where = self.source or self.host
        try:
            st = os.stat(self.token_file)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            if key != self._file_stat or self._file_token is None:
                token = Path(self.token_file).read_text().strip()
                if not token:
                    raise KubeconfigError(f"{where}: token file {self.token_file} is empty")
                self._file_token, self._file_stat = token, key
        except OSError as exc:
            if self._file_token is not None:
                return self._file_token  # mid-rotation (the kubelet swaps a symlink): keep the last
            raise KubeconfigError(
                f"{where}: token file {self.token_file} cannot be read ({exc.strerror or exc}); "
                "check the path and its permissions"
            ) from None
        return self._file_token

    async def _token_from_exec(self) -> str:
        if self._exec_token is not None and (self._exec_expiry is None or time.time() < self._exec_expiry):
            return self._exec_token
        if self._exec_lock is None:
            self._exec_lock = asyncio.Lock()
        async with self._exec_lock:  # concurrent requests run the plugin once
            expired = self._exec_expiry is not None and time.time() >= self._exec_expiry
            if self._exec_token is None or expired:
                assert self.exec_provider is not None
                self._exec_token, self._exec_expiry = await run_exec_plugin(self.exec_provider, self)
            return self._exec_token


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# ----- exec credential plugins


async def run_exec_plugin(plugin: ExecConfig, config: RestConfig) -> tuple[str, float | None]:
    """Run the plugin once: (token, expiry as a Unix time or None for "until a 401")."""
    where = f"{config.source or config.host}: exec plugin {plugin.command!r}"
    hint = f"; {plugin.install_hint.strip()}" if plugin.install_hint.strip() else ""
    if plugin.interactive_mode == "Always":
        raise KubeconfigError(
            f"{where} has interactiveMode Always, but a controller has no terminal; "
            "use a plugin that can run non-interactively"
        )
    spec: dict[str, Any] = {"interactive": False}
    if plugin.provide_cluster_info:
        cluster: dict[str, Any] = {"server": config.host}
        if config.tls_server_name:
            cluster["tls-server-name"] = config.tls_server_name
        if config.insecure_skip_verify:
            cluster["insecure-skip-tls-verify"] = True
        ca = config.ca_data
        if ca is None and config.ca_file:
            try:
                with open(config.ca_file, "rb") as f:  # noqa: ASYNC230 - a small local file, once per token
                    ca = f.read()
            except OSError:
                ca = None
        if ca:
            cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
        spec["cluster"] = cluster
    env = {**os.environ, **plugin.env}
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec}, separators=(",", ":")
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            plugin.command, *plugin.args, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise KubeconfigError(f"{where} cannot be started ({exc.strerror or exc}){hint}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), plugin.timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise KubeconfigError(f"{where} did not finish within {plugin.timeout:g} s") from None
    if proc.returncode != 0:
        last = (err.decode(errors="replace").strip().splitlines() or [""])[-1][:300]
        raise KubeconfigError(f"{where} exited with status {proc.returncode}: {last or '(no stderr)'}{hint}")
    try:
        cred = json.loads(out)
    except ValueError:
        raise KubeconfigError(f"{where} printed no ExecCredential JSON on stdout") from None
    if not isinstance(cred, dict) or cred.get("kind") != "ExecCredential":
        raise KubeconfigError(f"{where} printed JSON that is not an ExecCredential (kind: ExecCredential)")
    if cred.get("apiVersion") != plugin.api_version:
        raise KubeconfigError(
            f"{where} answered apiVersion {cred.get('apiVersion')!r}, but the kubeconfig asks for "
            f"{plugin.api_version!r}; make them match"
        )
    status = cred.get("status")
    status = status if isinstance(status, dict) else {}
    token = status.get("token")
    if not token or not isinstance(token, str):
        if status.get("clientCertificateData"):
            raise KubeconfigError(
                f"{where} returned a client certificate; kaito.runtime supports token credentials only"
            )
        raise KubeconfigError(f"{where} returned an ExecCredential without status.token")
    expiry: float | None = None
    stamp = status.get("expirationTimestamp")
    if stamp:
        try:
            parsed = datetime.datetime.fromisoformat(str(stamp))
        except ValueError:
            raise KubeconfigError(
                f"{where}: status.expirationTimestamp {stamp!r} is not an RFC 3339 time"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        expiry = parsed.timestamp()
    return token, expiry


# ----- loading


def in_cluster_config(
    environ: Mapping[str, str] | None = None, sa_dir: Path | None = None
) -> RestConfig:
    """The Pod's ServiceAccount: KUBERNETES_SERVICE_HOST/PORT and the mounted token, CA and
    namespace. The token file is re-read as the kubelet rotates it."""
    env = os.environ if environ is None else environ
    sa_dir = SERVICE_ACCOUNT_DIR if sa_dir is None else sa_dir
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeconfigError(
            "not running in a Pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset; "
            "pass a kubeconfig instead"
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    token_file = sa_dir / "token"
    ca = sa_dir / "ca.crt"
    ns_file = sa_dir / "namespace"
    cfg = RestConfig(
        host=f"https://{host}:{port}",
        ca_file=str(ca) if ca.exists() else None,
        token_file=str(token_file),
        namespace=(ns_file.read_text().strip() or None) if ns_file.exists() else None,
        source=f"in-cluster ServiceAccount ({sa_dir})",
    )
    cfg._token_from_file()  # fail now, with the path, rather than at the first request
    return cfg


def kubeconfig_paths(kubeconfig: str | os.PathLike[str] | None = None) -> list[Path]:
    """The files to merge: the given one, else $KUBECONFIG's list, else ~/.kube/config."""
    if kubeconfig is not None and str(kubeconfig) != "":
        return [Path(kubeconfig).expanduser()]
    listed = os.environ.get("KUBECONFIG", "")
    paths: list[Path] = []
    for part in listed.split(os.pathsep):
        if part and Path(part).expanduser() not in paths:
            paths.append(Path(part).expanduser())
    return paths or [Path("~/.kube/config").expanduser()]


def load_kubeconfig(
    paths: Sequence[Path], context: str | None = None, *, explicit: bool = True
) -> RestConfig:
    """Merge kubeconfig files as kubectl does (the first file to define a cluster, user, context
    or current-context wins) and build the configuration of one context. Missing files in a
    $KUBECONFIG list are skipped (``explicit=False``), as kubectl does."""
    import yaml  # here, not at import time: in-cluster controllers never need it

    clusters: dict[str, tuple[dict[str, Any], Path]] = {}
    users: dict[str, tuple[dict[str, Any], Path]] = {}
    contexts: dict[str, tuple[dict[str, Any], Path]] = {}
    current: tuple[str, Path] | None = None
    read: list[Path] = []
    for path in paths:
        try:
            text = path.read_text()
        except FileNotFoundError:
            if explicit:
                raise KubeconfigError(
                    f"kubeconfig {path} does not exist; pass an existing file or set KUBECONFIG"
                ) from None
            continue
        except OSError as exc:
            raise KubeconfigError(f"kubeconfig {path} cannot be read ({exc.strerror or exc})") from None
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise KubeconfigError(f"kubeconfig {path} is not valid YAML{at}") from None
        if not isinstance(doc, dict):
            raise KubeconfigError(f"kubeconfig {path} is not a mapping (apiVersion: v1, kind: Config)")
        read.append(path)
        for key, into, inner in (("clusters", clusters, "cluster"), ("users", users, "user"),
                                 ("contexts", contexts, "context")):
            entries = doc.get(key) or []
            if not isinstance(entries, list):
                raise KubeconfigError(f"kubeconfig {path}: {key} must be a list")
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict) or not entry.get("name"):
                    raise KubeconfigError(f"kubeconfig {path}: {key}[{i}] has no name")
                body = entry.get(inner) or {}
                if not isinstance(body, dict):
                    raise KubeconfigError(
                        f"kubeconfig {path}: {key}[{i}] ({entry['name']}).{inner} must be a mapping"
                    )
                into.setdefault(str(entry["name"]), (body, path))
        if current is None and doc.get("current-context"):
            current = (str(doc["current-context"]), path)
    if not read:
        raise KubeconfigError(
            f"no kubeconfig found (looked for {', '.join(map(str, paths))}); "
            "pass --kubeconfig or set KUBECONFIG"
        )
    files = ", ".join(map(str, read))
    if context:
        name = context
    elif current is not None:
        name = current[0]
    else:
        raise KubeconfigError(
            f"kubeconfig {files} sets no current-context; pass a context "
            f"(one of: {', '.join(sorted(contexts)) or 'none defined'})"
        )
    if name not in contexts:
        raise KubeconfigError(
            f"kubeconfig {files} has no context {name!r}; "
            f"choose one of: {', '.join(sorted(contexts)) or 'none defined'}"
        )
    ctx, ctx_path = contexts[name]
    where = f"kubeconfig {ctx_path}, context {name!r}"
    cluster_name = ctx.get("cluster")
    if not cluster_name:
        raise KubeconfigError(f"{where} names no cluster; set contexts[].context.cluster")
    if cluster_name not in clusters:
        raise KubeconfigError(
            f"{where} names cluster {cluster_name!r}, which no kubeconfig file ({files}) defines"
        )
    cluster, cluster_path = clusters[cluster_name]
    cwhere = f"kubeconfig {cluster_path}, cluster {cluster_name!r}"
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise KubeconfigError(
            f"{cwhere}: server {server or '(unset)'!r} must be an http:// or https:// URL"
        )
    if cluster.get("proxy-url"):
        raise KubeconfigError(f"{cwhere}: proxy-url is not supported by kaito.runtime; remove it")
    cfg = RestConfig(
        host=server,
        ca_file=_path(cluster, "certificate-authority", cluster_path),
        ca_data=_data(cluster, "certificate-authority-data", cwhere),
        insecure_skip_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=cluster.get("tls-server-name") or None,
        namespace=ctx.get("namespace") or None,
        source=where,
    )
    user_name = ctx.get("user")
    if user_name:
        if user_name not in users:
            raise KubeconfigError(
                f"{where} names user {user_name!r}, which no kubeconfig file ({files}) defines"
            )
        user, user_path = users[user_name]
        _apply_user(cfg, user, user_path, f"kubeconfig {user_path}, user {user_name!r}")
    return cfg


def _apply_user(cfg: RestConfig, user: dict[str, Any], path: Path, where: str) -> None:
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name", "?")
        raise KubeconfigError(
            f"{where}: auth-provider {provider!r} is not supported (removed from client-go); "
            "use an exec credential plugin"
        )
    if user.get("username") or user.get("password"):
        raise KubeconfigError(
            f"{where}: basic auth (username/password) is not supported; use a token or a certificate"
        )
    cfg.cert_file = _path(user, "client-certificate", path)
    cfg.key_file = _path(user, "client-key", path)
    cfg.cert_data = _data(user, "client-certificate-data", where)
    cfg.key_data = _data(user, "client-key-data", where)
    if user.get("token"):
        cfg.token = str(user["token"])  # kubectl: an inline token wins over tokenFile
    elif user.get("tokenFile"):
        cfg.token_file = _path(user, "tokenFile", path)
    exec_ = user.get("exec")
    if exec_:
        cfg.exec_provider = _exec_config(exec_, path, where)


def _exec_config(raw: Any, path: Path, where: str) -> ExecConfig:
    if not isinstance(raw, dict) or not raw.get("command"):
        raise KubeconfigError(f"{where}: exec.command is required")
    api_version = raw.get("apiVersion") or ""
    if api_version not in EXEC_API_VERSIONS:
        raise KubeconfigError(
            f"{where}: exec.apiVersion {api_version!r} is not supported; use {' or '.join(EXEC_API_VERSIONS)}"
        )
    command = str(raw["command"])
    if os.sep in command and not os.path.isabs(command):
        command = str((path.parent / command).resolve())  # relative to the kubeconfig, as kubectl
    env: dict[str, str] = {}
    for i, item in enumerate(raw.get("env") or []):
        if not isinstance(item, dict) or not item.get("name"):
            raise KubeconfigError(f"{where}: exec.env[{i}] needs a name and a value")
        env[str(item["name"])] = str(item.get("value", ""))
    args = raw.get("args") or []
    if not isinstance(args, list):
        raise KubeconfigError(f"{where}: exec.args must be a list of strings")
    return ExecConfig(
        command=command,
        args=tuple(str(a) for a in args),
        env=env,
        api_version=api_version,
        provide_cluster_info=bool(raw.get("provideClusterInfo", False)),
        install_hint=str(raw.get("installHint") or ""),
        interactive_mode=str(raw.get("interactiveMode") or "IfAvailable"),
    )


def _path(section: dict[str, Any], key: str, base: Path) -> str | None:
    value = section.get(key)
    if not value:
        return None
    p = Path(str(value)).expanduser()
    return str(p if p.is_absolute() else (base.parent / p))


def _data(section: dict[str, Any], key: str, where: str) -> bytes | None:
    value = section.get(key)
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigError(f"{where}: {key} is not valid base64; encode the PEM with base64 -w0") from None


async def load_configuration(
    kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None
) -> RestConfig:
    """The in-cluster ServiceAccount when running in a Pod (and neither argument is given),
    else the kubeconfig: ``kubeconfig``, $KUBECONFIG (merged) or ~/.kube/config."""
    in_cluster_error: KubeconfigError | None = None
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            return in_cluster_config()
        except KubeconfigError as exc:
            in_cluster_error = exc
    explicit = kubeconfig is not None or not os.environ.get("KUBECONFIG")
    try:
        return load_kubeconfig(kubeconfig_paths(kubeconfig), context, explicit=explicit)
    except KubeconfigError as exc:
        if in_cluster_error is not None:
            raise KubeconfigError(
                f"{exc} (in-cluster configuration failed too: {in_cluster_error})"
            ) from None
        raise


def as_rest_config(config: Any) -> RestConfig:
    """A RestConfig from a RestConfig or, duck-typed, a kubernetes_asyncio ``Configuration``
    (what kaito.envtest and older callers hand over), without importing kubernetes_asyncio."""
    if isinstance(config, RestConfig):
        return config
    host = getattr(config, "host", None)
    if not isinstance(host, str):
        raise TypeError(
            f"expected a RestConfig or a kubernetes_asyncio Configuration, got {type(config).__name__}"
        )
    token = _legacy_bearer(config)
    cfg = RestConfig(
        host=host.rstrip("/"),
        ca_file=getattr(config, "ssl_ca_cert", None) or None,
        cert_file=getattr(config, "cert_file", None) or None,
        key_file=getattr(config, "key_file", None) or None,
        token=token,
        insecure_skip_verify=not getattr(config, "verify_ssl", True),
        tls_server_name=getattr(config, "tls_server_name", None) or None,
        check_hostname=getattr(config, "assert_hostname", None) is not False,
        source=f"{type(config).__name__} for {host}",
    )
    if getattr(config, "refresh_api_key_hook", None) is not None:
        # kubernetes_asyncio's own exec/in-cluster loaders refresh through this hook.
        async def refreshed() -> str | None:
            await config.get_api_key_with_prefix("BearerToken")
            return _legacy_bearer(config)

        cfg.token_provider = refreshed
    return cfg


def _legacy_bearer(config: Any) -> str | None:
    keys: dict[str, Any] = getattr(config, "api_key", None) or {}
    for ident in ("BearerToken", "authorization"):
        value = keys.get(ident)
        if value:
            value = str(value)
            return value[len("Bearer "):] if value.startswith("Bearer ") else value
    return None
