"""A real local Kubernetes control plane, started from plain processes: the Python envtest.

Why real processes and not a fake client: admission, RBAC, watch semantics, resourceVersion
conflicts, 410 Gone, status subresources and server-side apply are exactly the behaviours a
controller gets wrong, and only the real apiserver has them.

Every process is started in its own session (so a Ctrl-C in the terminal does not race our
own shutdown) and, by default, with ``PR_SET_PDEATHSIG``: if the Python process dies without
running its cleanup (SIGKILL, a crashed test run), the kernel kills the children too.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import json
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kaito.envtest.assets import ensure_assets
from kaito.envtest.certs import Pki, create_pki, ensure_apiserver_ips, issue_client_cert, issue_serving_cert

if TYPE_CHECKING:
    from kubernetes_asyncio.client import Configuration

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service; never contacted
LOOPBACK = "127.0.0.1"


#: Nodes carrying this label (value AGENT_NODE_VALUE) belong to kaito's local node agent, which
#: runs their pods for real; kwok fakes every other node. kaito.localnode repeats the names
#: (envtest imports nothing from kaito) and a test keeps the two equal.
AGENT_NODE_LABEL = "kaito.sh/node-agent"
AGENT_NODE_VALUE = "local"
#: Nodes carrying this label (value REAL_NODE_VALUE) run a real kubelet (kaito.envtest.realnode);
#: kwok leaves them alone too.
REAL_NODE_LABEL = "kaito.sh/kubelet"
REAL_NODE_VALUE = "real"


class ClusterError(RuntimeError):
    """The control plane could not start or stopped unexpectedly; the message says what to do."""


@dataclass
class ClusterOptions:
    """What to run. etcd and kube-apiserver always run; the rest is opt-in."""

    controller_manager: bool = False
    scheduler: bool = False
    kwok: bool = False
    #: Fixed loopback port for the apiserver (None: any free port). A busy port fails fast.
    apiserver_port: int | None = None
    #: The address the apiserver binds and advertises, an address of this host. Loopback by
    #: default; a real node in a network namespace (``kaito.envtest.realnode``) needs the host's
    #: end of its link instead, so that its kubelet and its pods (through the ``kubernetes``
    #: Service, whose endpoint is then maintained) reach the apiserver.
    apiserver_address: str = LOOPBACK
    #: Keep state (PKI, etcd data) here instead of a temp dir that is removed on stop.
    workdir: Path | None = None
    #: The apiserver's watch cache hides etcd compaction from watchers; tests that need a
    #: real "410 Gone" on a watch turn it off.
    watch_cache: bool = True
    extra_apiserver_args: list[str] = field(default_factory=list)
    #: kube-controller-manager runs each of its controllers as its own ServiceAccount in
    #: kube-system (``--use-service-account-credentials=true``), as kubeadm, AKS and every real
    #: cluster do: each controller is then held to its bootstrap RBAC role and shows in the audit
    #: log as ``system:serviceaccount:kube-system:<controller>``. The apiserver's service-account
    #: signing key and issuer and kcm's private key and root CA (set below) make the tokens.
    #: False (the default for now) runs every controller as the admin user of the kubeconfig:
    #: the whole test suite has been verified in that mode; ``bench/workspace.py`` and
    #: ``test_kcm_controllers_run_as_their_own_serviceaccounts`` run the real-cluster mode.
    kcm_service_account_credentials: bool = False
    #: Extra kube-controller-manager flags, appended last (a later flag wins), e.g. its client
    #: limits ``["--kube-api-qps=200", "--kube-api-burst=300"]`` (defaults: 20/s, burst 30).
    extra_controller_manager_args: list[str] = field(default_factory=list)
    #: An audit Policy (YAML text); when set, the apiserver writes JSON audit events to
    #: ``Cluster.audit_log`` (blocking mode: an event is on disk before the response is sent).
    audit_policy: str | None = None
    startup_timeout: float = 90.0
    #: Children are killed by the kernel when this process dies (see module docstring).
    die_with_parent: bool = True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _check_port_free(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError as exc:
            raise ClusterError(
                f"{what} port {port} on {LOOPBACK} is already in use ({exc.strerror}); "
                "stop the process holding it or choose another port"
            ) from None


def _die_with_parent(sig: int = signal.SIGKILL) -> None:  # pragma: no cover - forked child
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, sig)


class _Process:
    """One control-plane program: its command line, its log file and its lifecycle."""

    def __init__(self, name: str, argv: list[str], log_path: Path, die_with_parent: bool) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.death_signal: int = signal.SIGKILL
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: _die_with_parent(self.death_signal)) if self.die_with_parent else None,
        )

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip()[:300] for line in text[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.popen
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


_LIVE: set[Cluster] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """Last line of defence: an interrupted test run still takes its clusters down."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for cluster in live:
        cluster.stop()


class Cluster:
    """etcd + kube-apiserver (+ controller-manager, scheduler, kwok) on loopback ports.

    Usable as a context manager. Two clusters in one process never share ports or certificates.
    """

    def __init__(self, options: ClusterOptions | None = None) -> None:
        self.options = options or ClusterOptions()
        self._tmp: str | None = None
        self._procs: dict[str, _Process] = {}
        self.workdir: Path = Path()
        self.pki: Pki | None = None
        self.apiserver_port = 0
        self.etcd_port = 0
        self.etcd_peer_port = 0
        self.assets: Path = Path()
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _required_binaries(self) -> list[str]:
        names = ["etcd", "etcdctl", "kube-apiserver", "kubectl"]
        if self.options.controller_manager:
            names.append("kube-controller-manager")
        if self.options.scheduler:
            names.append("kube-scheduler")
        if self.options.kwok:
            names.append("kwok")
        return names

    def start(self) -> None:
        if self._started:
            return
        opts = self.options
        if opts.apiserver_port is not None:
            _check_port_free(opts.apiserver_port, "kube-apiserver")
        self.assets = ensure_assets(self._required_binaries(), build=True)
        if opts.workdir is not None:
            self.workdir = Path(opts.workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.mkdtemp(prefix="kaito-cluster-")
            self.workdir = Path(self._tmp)
        (self.workdir / "logs").mkdir(exist_ok=True)
        pki_dir = self.workdir / "pki"
        if (pki_dir / "ca.crt").exists():
            self.pki = Pki.in_folder(pki_dir)
            ensure_apiserver_ips(self.pki, SERVICE_IP, [opts.apiserver_address])
        else:
            self.pki = create_pki(pki_dir, SERVICE_IP, [opts.apiserver_address])
        self.apiserver_port = opts.apiserver_port or self._previous_apiserver_port() or _free_port()
        (self.workdir / "apiserver-port").write_text(f"{self.apiserver_port}\n")
        self.etcd_port = _free_port()
        self.etcd_peer_port = _free_port()
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._started = True
        try:
            self._write_kubeconfig(self.kubeconfig, self.pki.admin_cert, self.pki.admin_key)
            self._start_etcd()
            self._start_apiserver()
            if opts.controller_manager:
                self._start_component("kube-controller-manager", self._kcm_args)
            if opts.scheduler:
                self._start_component("kube-scheduler", self._scheduler_args)
            if opts.kwok:
                self._start_kwok()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process (reverse start order) and remove temporary state; idempotent."""
        for proc in reversed(list(self._procs.values())):
            proc.stop()
        self._procs.clear()
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._started = False

    # -- public properties -----------------------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://{self.options.apiserver_address}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{LOOPBACK}:{self.etcd_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        """The apiserver's audit log (written only with ``ClusterOptions.audit_policy``)."""
        return self.workdir / "logs" / "audit.log"

    def _audit_args(self) -> list[str]:
        if self.options.audit_policy is None:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(self.options.audit_policy)
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--audit-log-maxsize=1000",
        ]

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self._procs.items() if p.pid is not None and p.running()}

    def client_configuration(self) -> Configuration:
        """An admin (system:masters) kubernetes_asyncio configuration for this cluster."""
        from kubernetes_asyncio.client import Configuration

        assert self.pki is not None, "cluster not started"
        cfg = Configuration(host=self.server)
        cfg.ssl_ca_cert = str(self.pki.ca_cert)
        cfg.cert_file = str(self.pki.admin_cert)
        cfg.key_file = str(self.pki.admin_key)
        cfg.verify_ssl = True
        return cfg

    def token_configuration(self, token: str) -> Configuration:
        """A configuration that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        from kubernetes_asyncio.client import Configuration

        assert self.pki is not None, "cluster not started"
        cfg = Configuration(host=self.server, api_key={"BearerToken": token})
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        cfg.ssl_ca_cert = str(self.pki.ca_cert)
        cfg.verify_ssl = True
        return cfg

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for a client-certificate user, to test RBAC as someone other than admin."""
        assert self.pki is not None, "cluster not started"
        cert, key = issue_client_cert(self.pki, self.workdir / "pki", user, list(groups))
        path = self.workdir / f"kubeconfig-{user.replace(':', '_')}"
        self._write_kubeconfig(path, cert, key, user=user)
        return path

    def serving_cert(self, name: str, hosts: Sequence[str] = (LOOPBACK, "localhost")) -> tuple[Path, Path]:
        """(cert, key) for a server this apiserver will trust, e.g. a webhook on loopback; use
        the cluster CA (``self.pki.ca_cert``) as the webhook's ``caBundle``."""
        assert self.pki is not None, "cluster not started"
        return issue_serving_cert(self.pki, self.workdir / "pki", name, list(hosts))

    def _previous_apiserver_port(self) -> int | None:
        """The port the apiserver had on this workdir's last run, when it is free again.

        Why: the ``kubernetes`` Service's endpoint carries the apiserver's port, and the lease
        endpoint reconciler corrects only the address afterwards, never the port (it assumes
        apiservers keep theirs). On kept etcd data (``kaito local up`` after ``down``, or after a
        killed supervisor) a new port would leave every in-cluster client (CoreDNS, an operator
        on the real node) dialling the old one."""
        try:
            port = int((self.workdir / "apiserver-port").read_text())
            # As the apiserver binds (SO_REUSEADDR): a killed run's connections in TIME_WAIT
            # do not keep the port, only a listener does.
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((self.options.apiserver_address, port))
        except (OSError, ValueError):
            return None
        return port

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster."""
        cmd = [str(self.assets / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    # -- fault injection for tests -----------------------------------------------------------
    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port (clients must reconnect)."""
        self._procs.pop("kube-apiserver").stop()
        self._start_apiserver()

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision, so any older resourceVersion is gone (410)."""
        endpoint = ["--endpoints", self.etcd_url]
        etcdctl = str(self.assets / "etcdctl")
        out = subprocess.run(
            [etcdctl, *endpoint, "endpoint", "status", "-w", "json"],
            capture_output=True, text=True, check=True,
        )
        revision = int(json.loads(out.stdout)[0]["Status"]["header"]["revision"])
        subprocess.run(
            [etcdctl, *endpoint, "compact", str(revision), "--physical"],
            capture_output=True, text=True, check=True,
        )
        return revision

    # -- processes -----------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> _Process:
        proc = _Process(name, argv, self.workdir / "logs" / f"{name}.log", self.options.die_with_parent)
        proc.start()
        self._procs[name] = proc
        return proc

    def _wait(self, proc: _Process, probe: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.options.startup_timeout
        while time.monotonic() < deadline:
            if not proc.running():
                raise ClusterError(
                    f"{proc.name} exited during start-up (log {proc.log_path}): {proc.log_tail()}"
                )
            if probe():
                return
            time.sleep(0.1)
        raise ClusterError(
            f"{proc.name} did not become {what} within {self.options.startup_timeout:.0f}s "
            f"(log {proc.log_path}): {proc.log_tail()}"
        )

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd"
        peer = f"http://{LOOPBACK}:{self.etcd_peer_port}"
        proc = self._spawn(
            "etcd",
            [
                str(self.assets / "etcd"),
                "--name", "kaito",
                "--data-dir", str(data),
                "--listen-client-urls", self.etcd_url,
                "--advertise-client-urls", self.etcd_url,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"kaito={peer}",
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
        )
        self._wait(proc, lambda: _http_ok(f"{self.etcd_url}/health"), "healthy")

    def _start_apiserver(self) -> None:
        assert self.pki is not None
        p = self.pki
        # Without the controller-manager nobody creates the "default" ServiceAccount that this
        # admission plugin insists on, so every Pod would be rejected.
        admission_off = (
            [] if self.options.controller_manager else ["--disable-admission-plugins=ServiceAccount"]
        )
        address = self.options.apiserver_address
        args = [
            str(self.assets / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={address}",
            f"--advertise-address={address}",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={p.serving_cert}",
            f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca_cert}",
            # Node: a real kubelet (system:node:<name>) gets exactly its node's objects.
            "--authorization-mode=Node,RBAC",
            # Logs, exec and port-forward reach a real kubelet as a system:masters client.
            f"--kubelet-client-certificate={p.admin_cert}",
            f"--kubelet-client-key={p.admin_key}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cert-dir={self.workdir / 'pki'}",
            "--allow-privileged=true",
            # The endpoint reconciler refuses a loopback advertise address, and with only kwok's
            # fake pods nothing needs the `kubernetes` Service to have endpoints; a real node's
            # pods do (the advertise address is then the host's end of the node's link).
            f"--endpoint-reconciler-type={'none' if address == LOOPBACK else 'lease'}",
            # Webhooks and aggregated APIs are dialled at a pod's address, not a ClusterIP (only a
            # real node's kube-proxy knows ClusterIPs; the host has a route to its pods).
            "--enable-aggregator-routing=true",
            "--profiling=false",
            f"--watch-cache={'true' if self.options.watch_cache else 'false'}",
            *admission_off,
            *self._audit_args(),
            *self.options.extra_apiserver_args,
        ]
        proc = self._spawn("kube-apiserver", args)
        ctx = self._ssl_context()
        self._wait(proc, lambda: _http_ok(f"{self.server}/readyz", ctx), "ready")

    def _component_args(self, name: str, port: int) -> list[str]:
        """Flags kube-controller-manager and kube-scheduler share: admin kubeconfig, loopback
        serving with their own self-signed certs, and no leader election (one replica)."""
        kc = str(self.kubeconfig)
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'pki' / name}",
            "--leader-elect=false",
        ]

    def _kcm_args(self, port: int) -> list[str]:
        assert self.pki is not None
        return [
            *self._component_args("kcm", port),
            f"--service-account-private-key-file={self.pki.sa_key}",
            f"--root-ca-file={self.pki.ca_cert}",
            f"--cluster-signing-cert-file={self.pki.ca_cert}",
            f"--cluster-signing-key-file={self.pki.ca_key}",
            f"--use-service-account-credentials={str(self.options.kcm_service_account_credentials).lower()}",
            "--controllers=*",
            *self.options.extra_controller_manager_args,
        ]

    def _scheduler_args(self, port: int) -> list[str]:
        return self._component_args("scheduler", port)

    def _start_component(self, name: str, args: Callable[[int], list[str]]) -> None:
        port = _free_port()
        proc = self._spawn(name, [str(self.assets / name), *args(port)])
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # component serving certs are self-signed; loopback only
        self._wait(proc, lambda: _http_ok(f"https://{LOOPBACK}:{port}/healthz", insecure), "healthy")

    def _start_kwok(self) -> None:
        port = _free_port()
        proc = self._spawn(
            "kwok",
            [
                str(self.assets / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                # every node except those a kaito node agent runs for real (kaito.localnode)
                f"--manage-nodes-with-label-selector={AGENT_NODE_LABEL}!={AGENT_NODE_VALUE},"
                f"{REAL_NODE_LABEL}!={REAL_NODE_VALUE}",
                f"--config={Path(__file__).with_name('kwok-stages.yaml')}",
                f"--server-address={LOOPBACK}:{port}",
                "--node-lease-duration-seconds=40",
            ],
        )
        self._wait(proc, lambda: _http_ok(f"http://{LOOPBACK}:{port}/healthz"), "healthy")

    # -- files ---------------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _write_kubeconfig(self, path: Path, cert: Path, key: Path, user: str = "kaito-admin") -> None:
        assert self.pki is not None

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        doc: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kaito-local",
                    "cluster": {"server": self.server, "certificate-authority-data": b64(self.pki.ca_cert)},
                }
            ],
            "users": [
                {"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
            ],
            "contexts": [{"name": "kaito-local", "context": {"cluster": "kaito-local", "user": user}}],
            "current-context": "kaito-local",
        }
        path.write_text(json.dumps(doc, indent=2))  # JSON is valid YAML for every kubeconfig reader
        path.chmod(0o600)


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def iter_processes(pids: Sequence[int]) -> Iterator[int]:
    """The given pids that still exist (zombies excluded), for leak checks."""
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            yield pid
