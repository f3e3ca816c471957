"""A real Kubernetes node beside the local control plane: containerd, kubelet, kube-proxy, CNI.

kwok fakes nodes and kaito's process agent runs pods as host processes; neither is what a user's
cluster does. This module runs the real thing on one machine, without Docker and without touching
the host's network:

* **Its own network namespace.** ``NodeNetwork`` makes a namespace ``kaito-node<N>`` joined to the
  host by one veth pair (host ``10.77.N.1``, node ``10.77.N.2``), with no default route: the node
  reaches the host's end and nothing else. The host learns one route, to the node's pod range
  (``10.244.N.0/24``), so that the apiserver can dial webhooks at a pod's address. The apiserver
  binds the host's end (``ClusterOptions.apiserver_address``), so the kubelet, kube-proxy and every
  pod (through the ``kubernetes`` Service) reach it.
* **containerd, kube-proxy and the CNI bridge run inside that namespace**, entered with
  ``nsenter --net`` only: they share the host's mount namespace, so what the kubelet mounts for a
  pod (secrets, projected tokens) is what containerd hands the container.
* **The kubelet's kernel tunables stay the host's.** The kubelet sets ``vm.overcommit_memory``,
  ``kernel.panic`` and ``kernel.panic_on_oops`` (and two key quotas) to its liking; those are not
  per network namespace, and a test machine that panics on an oops is not what a test should
  leave behind. The kubelet therefore runs in a private mount namespace where each such file is a
  bind-mounted copy already holding the value it wants; it reads that and writes nothing. Its
  root directory is a shared mount, so its pod mounts still reach containerd.
* **cgroup v1 with cgroupfs**, under a cgroup root of its own; ``restrict_oom_score_adj`` because
  a VM without CAP_SYS_RESOURCE otherwise fails every sandbox ("can't get final child's PID from
  pipe"). The sandbox image is a static ``pause`` built here (``kaito.envtest.oci``).
* **Cluster DNS.** CoreDNS, built from its Go module, runs as a Deployment behind ``kube-dns``
  (``kaito.envtest.clusterdns``) and the kubelet points pods at it. It is optional: when it
  cannot be built the node runs without cluster DNS, and ``dns_error`` says why.

``stop()`` leaves nothing: pods' processes killed by cgroup, their mounts and network namespaces
removed, containerd's shims gone, the node namespace and its veth deleted, the host route with it.

Requirements: root, Debian's ``containerd``, ``runc``, ``containernetworking-plugins``,
``iptables`` and ``conntrack`` (``ensure_packages`` installs them with apt-get), ``gcc`` for the
static images, and the kubelet and kube-proxy binaries (``assets.NODE_BINARIES``, built from the
Kubernetes Go module like the control plane).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from kaito.envtest import clusterdns
from kaito.envtest.assets import DNS_BINARIES, NODE_BINARIES, AssetsError, cache_root, ensure_assets
from kaito.envtest.certs import issue_client_cert
from kaito.envtest.cluster import (
    REAL_NODE_LABEL,
    REAL_NODE_VALUE,
    SERVICE_CIDR,
    Cluster,
    ClusterError,
    _Process,
)
from kaito.envtest.oci import ImageError, binary_image, program_image

if TYPE_CHECKING:
    from kaito.envtest.cluster import ClusterOptions

PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "conntrack")
CNI_BIN = Path("/usr/lib/cni")
PAUSE_IMAGE = "kaito.local/pause:1.0"
HELLO_IMAGE = "kaito.local/hello:1.0"
NETNS_DIR = Path("/run/netns")

log = logging.getLogger(__name__)

#: Kernel tunables the kubelet insists on, and the values it wants (see the module docstring).
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


class NodeError(ClusterError):
    """The real node could not be set up; the message says what is missing and what to do."""


def _run(*argv: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NodeError(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc


def missing_requirements() -> list[str]:
    """What this machine lacks for a real node, each as an instruction; empty when it can run one."""
    out: list[str] = []
    if os.geteuid() != 0:
        out.append("run as root (a node needs network namespaces, mounts and cgroups)")
    for tool, package in (
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("iptables", "iptables"),
        ("conntrack", "conntrack"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
    ):
        if shutil.which(tool) is None:
            out.append(f"install {package} ({tool} is missing)")
    if not (CNI_BIN / "bridge").exists():
        out.append("install containernetworking-plugins (/usr/lib/cni/bridge is missing)")
    if shutil.which("gcc") is None:
        out.append("install gcc and libc6-dev (the node's pause image is compiled here)")
    return out


def ensure_packages() -> None:
    """Install the node's Debian packages with apt-get when some are missing (root only)."""
    if not [r for r in missing_requirements() if r.startswith("install")]:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise NodeError("a real node needs: " + "; ".join(missing_requirements()))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    wanted = [*PACKAGES, "gcc", "libc6-dev", "util-linux", "iproute2"]
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *wanted]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise NodeError(f"apt-get could not install {' '.join(wanted)}: {proc.stderr.strip()[-300:]}")
    left = missing_requirements()
    if left:
        raise NodeError("a real node still needs: " + "; ".join(left))


# -- the network --------------------------------------------------------------------------------


@dataclass
class NodeNetwork:
    """One node's network namespace and its link to the host (see the module docstring)."""

    index: int
    _lock: IO[bytes] | None = field(default=None, repr=False)

    @property
    def netns(self) -> str:
        return f"kaito-node{self.index}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def host_ip(self) -> str:
        return f"10.77.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"10.77.{self.index}.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def host_link(self) -> str:
        return f"ktn{self.index}h"

    def ns(self, *argv: str) -> list[str]:
        """``argv`` run inside the node's network namespace (and nothing else of it)."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    @classmethod
    def create(cls) -> NodeNetwork:
        """Claim the first free index (a lock file per index, held while the node lives) and build
        the namespace; a namespace left by a killed run under a free lock is removed first."""
        lock_dir = Path("/run/lock/kaito-node")
        lock_dir.mkdir(parents=True, exist_ok=True)
        for index in range(1, 250):
            handle = open(lock_dir / f"{index}.lock", "wb")  # noqa: SIM115 - held for the node's life
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            net = cls(index, handle)
            net.delete(keep_lock=True)  # leftovers of a run that was killed
            try:
                net._build()
            except BaseException:
                net.delete()
                raise
            return net
        raise NodeError("no free node network index (1-249); stop other kaito nodes (`kaito local down`)")

    def _build(self) -> None:
        peer = f"ktn{self.index}n"
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", self.netns)
        _run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_link)
        _run("ip", "link", "set", self.host_link, "up")
        inside = ["ip", "-n", self.netns]
        _run(*inside, "link", "set", peer, "name", "eth0")
        _run(*inside, "addr", "add", f"{self.node_ip}/24", "dev", "eth0")
        _run(*inside, "link", "set", "eth0", "up")
        _run(*inside, "link", "set", "lo", "up")
        # Node-originated traffic to a ClusterIP needs a route before kube-proxy's DNAT picks the
        # endpoint; nothing else leaves the node.
        _run(*inside, "route", "add", SERVICE_CIDR, "dev", "eth0")
        _run("ip", "route", "replace", self.pod_cidr, "via", self.node_ip, "dev", self.host_link)
        for key in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
            # Per network namespace: written from inside it, the host's stay as they are.
            _run(*self.ns("sh", "-c", f"[ ! -e /proc/sys/{key} ] || echo 1 > /proc/sys/{key}"))

    def delete(self, keep_lock: bool = False) -> None:
        """Remove the namespace (its end of the veth goes with it, the host's end and route too)."""
        with contextlib.suppress(NodeError):
            _run("ip", "link", "del", self.host_link, check=False)
        if self.netns_path.exists():
            _run("ip", "netns", "del", self.netns, check=False)
        if not keep_lock and self._lock is not None:
            self._lock.close()
            self._lock = None


def cluster_options(network: NodeNetwork, options: ClusterOptions) -> ClusterOptions:
    """``options`` for a control plane a real node on ``network`` can join: the apiserver on the
    host's end of the link, and the scheduler and controller-manager a real node needs."""
    options.apiserver_address = network.host_ip
    options.scheduler = True
    options.controller_manager = True
    return options


# -- the node -----------------------------------------------------------------------------------


@dataclass
class RealNodeOptions:
    """What kind of node to run."""

    #: The Node's name (also its hostname as the kubelet reports it).
    name: str = "kaito-node"
    #: Labels the kubelet registers the Node with.
    labels: dict[str, str] = field(default_factory=dict)
    #: Taints the kubelet registers the Node with (``key=value:Effect``).
    taints: list[str] = field(default_factory=list)
    #: Where the node keeps its state (containerd's root, the kubelet's, logs); a fresh temporary
    #: folder under /var/tmp when None (overlayfs needs a real filesystem, not tmpfs).
    workdir: Path | None = None
    #: Seconds to wait for the Node to turn Ready.
    ready_timeout: float = 120.0
    #: Registries containerd may pull from over plain HTTP or with the given CA:
    #: ``{"10.77.1.1:5000": "/path/ca.crt" | None}``.
    registries: dict[str, str | None] = field(default_factory=dict)
    #: Run cluster DNS (CoreDNS, built on first use; see ``kaito.envtest.clusterdns``). When it
    #: cannot be built the node still starts, without it, and ``RealNode.dns_error`` says why.
    dns: bool = True
    #: Seconds ``start()`` waits for CoreDNS to turn Ready after the node does (0: not at all;
    #: ``wait_dns_ready()`` waits later). A few seconds on a warm machine; see ``start()``.
    dns_ready_timeout: float = 30.0


class RealNode:
    """containerd + kubelet + kube-proxy + CNI for ``cluster`` on ``network``; a context manager."""

    def __init__(
        self, cluster: Cluster, network: NodeNetwork, options: RealNodeOptions | None = None
    ) -> None:
        self.cluster = cluster
        self.network = network
        self.options = options or RealNodeOptions()
        self.workdir = Path()
        self._tmp: str | None = None
        self._procs: dict[str, _Process] = {}
        self.assets = Path()
        #: The ``kube-dns`` ClusterIP pods resolve names at; "" without cluster DNS.
        self.dns_ip = ""
        #: Why cluster DNS is missing (not built, not deployed) or not Ready although
        #: ``options.dns`` asked for it; "" when it works.
        self.dns_error = ""
        self._dns_image: Path | None = None

    def __enter__(self) -> RealNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def name(self) -> str:
        return self.options.name

    @property
    def short_dir(self) -> Path:
        """Where the node keeps its unix sockets (containerd's, and the kubelet's under its root
        directory): a path of its own, short because a socket's path is limited to 107 bytes,
        which a deep workdir exceeds. Named after the workdir, so a later node on the same
        workdir finds what a killed one left."""
        digest = hashlib.sha256(str(self.workdir.resolve()).encode()).hexdigest()[:10]
        return Path("/var/lib/kaito-node") / digest

    @property
    def socket_dir(self) -> Path:
        return self.short_dir / "run"

    @property
    def kubelet_root(self) -> Path:
        return self.short_dir / "kubelet"

    @property
    def containerd_socket(self) -> Path:
        return self.socket_dir / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        """Named after the workdir like ``short_dir``: a later node finds a killed one's pods."""
        return f"/kaito-node-{self.short_dir.name}"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        left = missing_requirements()
        if left:
            raise NodeError("a real node needs: " + "; ".join(left))
        self.assets = ensure_assets(NODE_BINARIES, build=True)
        if self.options.workdir is not None:
            self.workdir = Path(self.options.workdir)
        else:
            import tempfile

            self._tmp = tempfile.mkdtemp(prefix="kaito-node-", dir="/var/tmp")
            self.workdir = Path(self._tmp)
        for sub in ("logs", "containerd", "cni/net.d", "cni/ipam", "pki", "images", "sysctl"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.kubelet_root.mkdir(mode=0o700, exist_ok=True)
        self._clear_leftovers()
        try:
            self._prepare_dns()
            self._write_files()
            self._start_containerd()
            self._import_images()
            self._start_kubelet()
            self._start_kube_proxy()
            self.wait_ready()
            if self.dns_ip and self.options.dns_ready_timeout > 0:
                # The pod was created before the kubelet started and its image is already in
                # containerd, so this is a few seconds; a caller's first pod then resolves names
                # instead of failing on a Service without endpoints. A CoreDNS that is slow or
                # broken is reported, not fatal: the node itself is fine.
                try:
                    self.wait_dns_ready(self.options.dns_ready_timeout)
                except NodeError as exc:
                    self.dns_error = str(exc)
                    log.warning("%s", self.dns_error)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything and leave nothing behind; idempotent."""
        pod_netns = self._pod_netns_inodes()
        for name in ("kube-proxy", "kubelet"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        self._kill_cgroup_tree()
        proc = self._procs.pop("containerd", None)
        if proc is not None:
            proc.stop()
        self._kill_shims()
        self._unmount_under(self.short_dir)
        self._unmount_under(self.workdir)
        self._remove_pod_netns(pod_netns)
        self._remove_cgroups()
        if self.workdir != Path():
            shutil.rmtree(self.short_dir, ignore_errors=True)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self._procs.items() if p.pid is not None and p.running()}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        while time.monotonic() < deadline:
            for proc in self._procs.values():
                if not proc.running():
                    raise NodeError(f"{proc.name} exited (log {proc.log_path}): {proc.log_tail(5)}")
            got = self.cluster.kubectl(
                "get",
                "node",
                self.name,
                "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                check=False,
            )
            if got.returncode == 0 and got.stdout.strip() == "True":
                return
            time.sleep(0.5)
        raise NodeError(
            f"node {self.name} not Ready within {self.options.ready_timeout:.0f}s; "
            f"kubelet log {self.workdir / 'logs' / 'kubelet.log'}: "
            + (self._procs["kubelet"].log_tail(5) if "kubelet" in self._procs else "")
        )

    # -- cluster DNS ----------------------------------------------------------------------------
    def _prepare_dns(self) -> None:
        """Find or build CoreDNS, write its image and create its objects, before the kubelet
        starts (so the kubelet's ``clusterDNS`` is set only when there is a server to point at,
        and the pod is bound as soon as the node registers). A failure leaves the node without
        cluster DNS and is logged once, with the reason in ``dns_error``."""
        self.dns_ip, self.dns_error, self._dns_image = "", "", None
        if not self.options.dns:
            self._remove_dns()
            return
        try:
            binary = ensure_assets(DNS_BINARIES, build=True) / "coredns"
            # In kaito's asset cache, not beside the node: compressing the 55 MB binary takes
            # seconds, once per machine rather than once per fresh state folder.
            image = binary_image(binary, clusterdns.IMAGE, cache_root() / "node-images")
            service_ip = clusterdns.dns_service_ip(SERVICE_CIDR)
            self.cluster.kubectl(
                "apply", "-f", "-", input=clusterdns.manifests_json(service_ip, self.name), timeout=120
            )
        except (AssetsError, ImageError, ClusterError, OSError, subprocess.SubprocessError) as exc:
            self.dns_error = f"no cluster DNS on node {self.name}: {exc}"
            log.warning("%s", self.dns_error)
            self._remove_dns()
            return
        self.dns_ip, self._dns_image = service_ip, image

    def _remove_dns(self) -> None:
        """A Deployment left by an earlier run on the same state (``kaito local`` keeps etcd's
        data) would leave a pod failing on a missing image; the Service goes with it so pods'
        lookups fail at once instead of waiting on a ClusterIP without endpoints."""
        for kind, name in (("deployment", clusterdns.NAME), ("service", clusterdns.SERVICE)):
            self.cluster.kubectl(
                "delete",
                kind,
                name,
                "-n",
                clusterdns.NAMESPACE,
                "--ignore-not-found",
                "--wait=false",
                check=False,
            )

    def dns_ready(self) -> bool:
        """Whether a CoreDNS pod on this node is Ready with its container running in this node's
        containerd. The second half matters after a killed supervisor: the pod's status in etcd
        still says Ready from the dead run until the new kubelet has started it again."""
        got = self.cluster.kubectl(
            "get", "pods", "-n", clusterdns.NAMESPACE, "-l", "k8s-app=kube-dns", "-o", "json", check=False
        )
        if got.returncode != 0:
            return False
        tasks = self.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]
        running = {t.split()[0] for t in tasks if t.split()[2:3] == ["RUNNING"]}
        for pod in json.loads(got.stdout)["items"]:
            status = pod.get("status") or {}
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
            )
            ids = {
                c.get("containerID", "").removeprefix("containerd://")
                for c in status.get("containerStatuses") or []
            }
            if pod["spec"].get("nodeName") == self.name and ready and ids & running:
                return True
        return False

    def wait_dns_ready(self, timeout: float = 60.0) -> None:
        """Wait until CoreDNS answers (its pod Ready); NodeError naming its pod's state if not."""
        if not self.dns_ip:
            raise NodeError(self.dns_error or f"node {self.name} runs without cluster DNS (options.dns)")
        deadline = time.monotonic() + timeout
        while not self.dns_ready():
            if time.monotonic() > deadline:
                pods = self.cluster.kubectl(
                    "get",
                    "pods",
                    "-n",
                    clusterdns.NAMESPACE,
                    "-l",
                    "k8s-app=kube-dns",
                    "-o",
                    "wide",
                    check=False,
                )
                raise NodeError(f"CoreDNS not Ready within {timeout:.0f}s: {pods.stdout.strip()}")
            time.sleep(0.3)

    def add_registry(self, host: str, ca: str | None = None) -> None:
        """Let containerd pull from ``host`` (``ip:port``): over TLS checked against ``ca``, or
        plain HTTP without one. containerd reads its ``certs.d`` at each pull, so a registry
        started after the node is usable at once."""
        folder = self.workdir / "containerd" / "certs.d" / host
        folder.mkdir(parents=True, exist_ok=True)
        scheme = "https" if ca else "http"
        lines = [f'server = "{scheme}://{host}"', "", f'[host."{scheme}://{host}"]']
        lines.append('  capabilities = ["pull", "resolve"]')
        if ca:
            lines.append(f'  ca = "{ca}"')
        (folder / "hosts.toml").write_text("\n".join(lines) + "\n")

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """containerd's own CLI against this node's containerd, in the CRI's namespace."""
        return _run(
            "ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args, check=check, timeout=300
        )

    def import_image(self, archive: Path) -> None:
        """Load an OCI archive into the node's containerd (no registry involved)."""
        self.ctr("images", "import", "--no-unpack", str(archive))

    # -- configuration --------------------------------------------------------------------------
    def _write_files(self) -> None:
        net, wd = self.network, self.workdir
        assert self.cluster.pki is not None
        pki = self.cluster.pki
        kubelet_cert, kubelet_key = issue_client_cert(
            pki, wd / "pki", f"system:node:{self.name}", ["system:nodes"]
        )
        proxy_cert, proxy_key = issue_client_cert(pki, wd / "pki", "system:kube-proxy", [])
        for who, cert, key in (("kubelet", kubelet_cert, kubelet_key), ("kube-proxy", proxy_cert, proxy_key)):
            self._kubeconfig(wd / f"{who}.kubeconfig", cert, key)
        certs_d = wd / "containerd" / "certs.d"
        certs_d.mkdir(parents=True, exist_ok=True)
        for host, ca in self.options.registries.items():
            self.add_registry(host, ca)
        registries = f'config_path = "{certs_d}"'
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (wd / "containerd" / "config.toml").write_text(
            f"""version = 2
root = "{wd / "containerd" / "root"}"
state = "{wd / "containerd" / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{self.socket_dir / "containerd.sock.ttrpc"}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    # a pulled layer is kept unpacked only, not also as its compressed blob (a multi-GB image
    # would otherwise take its size twice on the node's disk)
    discard_unpacked_layers = true
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{wd / "cni" / "net.d"}"
  [{cri}.registry]
    {registries}
"""
        )
        conflist = {
            "cniVersion": "0.4.0",
            "name": "kaito",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": f"kcni{net.index}",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": net.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(wd / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (wd / "cni" / "net.d" / "10-kaito.conflist").write_text(json.dumps(conflist, indent=2))
        kubelet_config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": net.node_ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podCIDR": net.pod_cidr,
            "resolvConf": "/etc/resolv.conf",
            "registerNode": True,
            "serializeImagePulls": False,
            "maxPods": 60,
            # The machine's disk is shared with everything else: never evict for it here.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "registerWithTaints": [_taint(t) for t in self.options.taints],
            "staticPodPath": "",
            # Every kubelet's container GC deletes the pod log folders of pods it does not know,
            # so two real nodes on one machine (make test's lanes) sharing /var/log/pods would
            # delete each other's logs.
            "podLogsDir": str((wd / "pod-logs").resolve()),
            **(
                {"clusterDNS": [self.dns_ip], "clusterDomain": clusterdns.CLUSTER_DOMAIN}
                if self.dns_ip
                else {}
            ),
            "nodeStatusReportFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
        }
        (wd / "pod-logs").mkdir(exist_ok=True)
        (wd / "kubelet-config.json").write_text(json.dumps(kubelet_config, indent=2))
        proxy_config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(wd / "kube-proxy.kubeconfig")},
            "mode": "iptables",
            "clusterCIDR": net.pod_cidr,
            "hostnameOverride": self.name,
            "bindAddress": net.node_ip,
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
            # Conntrack limits are the host's (not per namespace): leave them alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        (wd / "kube-proxy-config.json").write_text(json.dumps(proxy_config, indent=2))
        for tunable, value in KUBELET_SYSCTLS.items():
            (wd / "sysctl" / tunable.replace("/", "_")).write_text(value + "\n")

    def _kubeconfig(self, path: Path, cert: Path, key: Path) -> None:
        assert self.cluster.pki is not None
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.cluster.server,
                        "certificate-authority": str(self.cluster.pki.ca_cert),
                    },
                }
            ],
            "users": [{"name": "node", "user": {"client-certificate": str(cert), "client-key": str(key)}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "node"}}],
            "current-context": "local",
        }
        path.write_text(json.dumps(doc, indent=2))
        path.chmod(0o600)

    # -- processes ------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> _Process:
        # Node programs are not killed with this process: stop() must tear pods down in order.
        proc = _Process(name, argv, self.workdir / "logs" / f"{name}.log", die_with_parent=False)
        proc.start()
        self._procs[name] = proc
        return proc

    def _start_containerd(self) -> None:
        config = self.workdir / "containerd" / "config.toml"
        proc = self._spawn("containerd", self.network.ns("containerd", "--config", str(config)))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not proc.running():
                raise NodeError(f"containerd exited (log {proc.log_path}): {proc.log_tail(5)}")
            if self.containerd_socket.exists() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise NodeError(f"containerd did not answer within 30s (log {proc.log_path}): {proc.log_tail(5)}")

    def _import_images(self) -> None:
        for source, name in (("pause", PAUSE_IMAGE), ("hello", HELLO_IMAGE)):
            self.import_image(program_image(source, name, self.workdir.parent / "kaito-node-images"))
        if self._dns_image is not None:
            self.import_image(self._dns_image)

    def _make_cgroups(self) -> None:
        """The kubelet's cgroup root must exist in every hierarchy; cgroup v1's cpuset starts
        with no CPUs and no memory nodes, so they are copied from the parent."""
        base = Path("/sys/fs/cgroup")
        for hierarchy in base.iterdir():
            if not hierarchy.is_dir() or hierarchy.name == "unified":
                continue
            root = hierarchy / self.cgroup_root.lstrip("/")
            root.mkdir(exist_ok=True)
            for key in ("cpuset.cpus", "cpuset.mems"):
                if (root / key).exists() and not (root / key).read_text().strip():
                    (root / key).write_text((hierarchy / key).read_text())

    def _start_kubelet(self) -> None:
        self._make_cgroups()
        root = self.kubelet_root
        # A shared mount: the kubelet's own (private) mount namespace propagates pod mounts here.
        _run("mount", "--bind", str(root), str(root))
        _run("mount", "--make-shared", str(root))
        masks = " && ".join(
            f"mount --bind {self.workdir / 'sysctl' / key.replace('/', '_')} /proc/sys/{key}"
            for key in KUBELET_SYSCTLS
            if Path(f"/proc/sys/{key}").exists()
        )
        wanted = {**self.options.labels, REAL_NODE_LABEL: REAL_NODE_VALUE}
        labels = ",".join(f"{k}={v}" for k, v in sorted(wanted.items()))
        kubelet = [
            str(self.assets / "kubelet"),
            f"--config={self.workdir / 'kubelet-config.json'}",
            f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.network.node_ip}",
            f"--root-dir={root}",
            f"--cert-dir={self.workdir / 'pki' / 'kubelet'}",
            f"--node-labels={labels}",
            "--v=1",
        ]
        script = f"{masks} && exec {' '.join(kubelet)}"
        self._spawn(
            "kubelet",
            self.network.ns("unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c", script),
        )

    def _start_kube_proxy(self) -> None:
        self._spawn(
            "kube-proxy",
            self.network.ns(
                str(self.assets / "kube-proxy"), f"--config={self.workdir / 'kube-proxy-config.json'}"
            ),
        )

    # -- teardown -------------------------------------------------------------------------------
    def _cgroup_dirs(self) -> Iterator[Path]:
        base = Path("/sys/fs/cgroup")
        if not base.is_dir():
            return
        for hierarchy in base.iterdir():
            root = hierarchy / self.cgroup_root.lstrip("/")
            if root.is_dir():
                yield root

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for root in self._cgroup_dirs():
            for folder in _folders(root):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        return pids

    def _pod_netns_inodes(self) -> set[int]:
        inodes: set[int] = set()
        for pid in self._cgroup_pids():
            with contextlib.suppress(OSError):
                inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
        return inodes

    def _kill_cgroup_tree(self) -> None:
        for _ in range(50):
            pids = self._cgroup_pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _kill_shims(self) -> None:
        """containerd's shims outlive it by design; ours work in a bundle under our workdir."""
        self._kill_marked(b"containerd-shim", str(self.workdir.resolve()).encode(), cwd=True)

    @staticmethod
    def _kill_marked(program: bytes, marker: bytes, cwd: bool = False) -> int:
        """SIGKILL every process running ``program`` whose command line (or working directory,
        with ``cwd``) holds ``marker``."""
        killed = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if program not in cmdline:
                    continue
                where = os.readlink(entry / "cwd").encode() if cwd else cmdline
                if marker in where:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed += 1
        return killed

    def _clear_leftovers(self) -> None:
        """What a node killed without its ``stop()`` (its supervisor SIGKILLed) left in this
        workdir and cgroup root: its programs, its pods' processes, mounts and cgroups."""
        marker = str(self.workdir.resolve()).encode()
        for program in (b"kube-proxy", b"kubelet", b"containerd"):
            self._kill_marked(program, marker)
        pod_netns = self._pod_netns_inodes()
        self._kill_cgroup_tree()
        self._kill_shims()
        self._unmount_under(self.short_dir)
        self._unmount_under(self.workdir)
        self._remove_pod_netns(pod_netns)
        self._remove_cgroups()

    @staticmethod
    def _unmount_under(folder: Path) -> None:
        if not str(folder) or folder == Path():
            return
        prefix = str(folder.resolve())
        for _ in range(3):
            mounts = [
                line.split()[4]
                for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4] == prefix or line.split()[4].startswith(prefix + "/")
            ]
            if not mounts:
                return
            for target in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", target], capture_output=True)

    @staticmethod
    def _remove_pod_netns(inodes: set[int]) -> None:
        if not NETNS_DIR.is_dir():
            return
        for entry in NETNS_DIR.glob("cni-*"):
            with contextlib.suppress(OSError):
                if entry.stat().st_ino in inodes:
                    subprocess.run(["umount", str(entry)], capture_output=True)
                    entry.unlink()

    def _remove_cgroups(self) -> None:
        for root in self._cgroup_dirs():
            for folder in sorted(_folders(root), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            with contextlib.suppress(OSError):
                root.rmdir()


def _folders(root: Path) -> list[Path]:
    """``root`` and every folder under it. The kubelet and the kernel remove cgroups while we
    walk (a container exiting during teardown), so a folder gone between listing and entering is
    skipped: os.walk ignores the scandir error, where Path.rglob raised FileNotFoundError."""
    return [Path(folder) for folder, _, _ in os.walk(root)]


def _taint(spec: str) -> dict[str, str]:
    """``key=value:Effect`` (or ``key:Effect``) as a Taint object."""
    head, _, effect = spec.rpartition(":")
    key, _, value = head.partition("=")
    if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise NodeError(
            f"taint {spec!r}: write key=value:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute"
        )
    return {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}


@contextlib.contextmanager
def real_node_cluster(
    options: ClusterOptions | None = None, node: RealNodeOptions | None = None
) -> Iterator[tuple[Cluster, RealNode]]:
    """A control plane and one real node joined to it, all stopped on exit."""
    from kaito.envtest.cluster import ClusterOptions as _Options

    network = NodeNetwork.create()
    try:
        with (
            Cluster(cluster_options(network, options or _Options())) as cluster,
            RealNode(cluster, network, node) as real,
        ):
            yield cluster, real
    finally:
        network.delete()


__all__: Sequence[str] = (
    "NodeError",
    "NodeNetwork",
    "RealNode",
    "RealNodeOptions",
    "cluster_options",
    "ensure_packages",
    "missing_requirements",
    "real_node_cluster",
)
