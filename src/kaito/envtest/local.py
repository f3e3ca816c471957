"""A long-lived local cluster in the background: the same :class:`Cluster`, kept by a supervisor.

Why a supervisor process: the control-plane programs must outlive the ``kaito local up`` command,
yet die together when the cluster is taken down or when the supervisor is killed (each child has
PR_SET_PDEATHSIG pointing at it). ``down`` therefore only has to signal one pid.

State lives in a project-local folder (default ``.kaito/local``): PKI and etcd data persist across
``down``/``up``, so objects survive a restart; ``state.json`` says where everything is.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kaito.envtest.cluster import Cluster, ClusterError, ClusterOptions, _Process, iter_processes
from kaito.envtest.noderegistry import RegistryConfig, prepare, wait_ready
from kaito.envtest.realnode import NodeNetwork, RealNode, RealNodeOptions, cluster_options

DEFAULT_STATE_DIR = Path(".kaito/local")


@dataclass
class LocalState:
    supervisor_pid: int
    server: str
    kubeconfig: str
    kubectl: str
    pids: dict[str, int]
    started_at: float
    ready_seconds: float
    #: ``ip:port`` of the registry the real node pulls from (``up(registry=True)``), and its CA
    registry: str = ""
    registry_ca: str = ""
    #: The real node's cluster DNS address (the ``kube-dns`` ClusterIP; "" without one), and why
    #: it is missing or not Ready when it was asked for ("" when it works)
    dns: str = ""
    dns_error: str = ""


def _state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def read_state(state_dir: Path = DEFAULT_STATE_DIR) -> LocalState | None:
    try:
        raw = json.loads(_state_file(state_dir).read_text())
        return LocalState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int) -> bool:
    return bool(list(iter_processes([pid])))


def status(state_dir: Path = DEFAULT_STATE_DIR) -> LocalState | None:
    """The running cluster's state, or None when nothing runs (stale state is ignored)."""
    state = read_state(state_dir)
    if state is None or not _alive(state.supervisor_pid):
        return None
    return state


def up(
    state_dir: Path = DEFAULT_STATE_DIR,
    *,
    timeout: float = 180.0,
    kwok: bool = True,
    extra: dict[str, list[str]] | None = None,
    real_node: bool = False,
    registry: bool = False,
    dns: bool = True,
) -> LocalState:
    """Start the supervisor (or return the running one) and wait until the apiserver is ready.

    ``extra`` names more programs the supervisor starts once the cluster is ready and stops first
    (kaito's node agent): ``{kubeconfig}`` and ``{state_dir}`` in their arguments are filled in.
    They die with the supervisor like the control plane does, so a killed supervisor leaves none.

    ``real_node``: one real node joins the cluster (``kaito.envtest.realnode``: containerd,
    kubelet, kube-proxy in a network namespace of its own; root only); the apiserver then binds
    the host's end of that node's link, which ``server`` in the state says.

    ``registry`` (with ``real_node``): an image registry on that same host address, TLS signed
    by the cluster CA, no credentials (``kaito.envtest.noderegistry``); containerd trusts it, and
    the state's ``registry``/``registry_ca`` say where it is, for pushing.

    ``dns`` (with ``real_node``): cluster DNS on that node (CoreDNS; ``kaito.envtest.clusterdns``),
    built on first use. A node whose CoreDNS cannot be built runs without it; the state's
    ``dns_error`` says why. False when the caller already knows it cannot be built (and said so).
    """
    state_dir = state_dir.resolve()
    current = status(state_dir)
    if current is not None:
        return current
    state_dir.mkdir(parents=True, exist_ok=True)
    _state_file(state_dir).unlink(missing_ok=True)
    error_file = state_dir / "error.txt"
    error_file.unlink(missing_ok=True)
    (state_dir / "extra.json").write_text(json.dumps(extra or {}))
    log = open(state_dir / "supervisor.log", "ab")  # noqa: SIM115 - handed to the child
    cmd = [
        sys.executable, "-m", "kaito.envtest.local", str(state_dir), "1" if kwok else "0",
        "real" if real_node else "none", "registry" if registry and real_node else "",
        "dns" if dns else "nodns",
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        if state is not None and state.supervisor_pid == proc.pid:
            return state
        if proc.poll() is not None:
            reason = error_file.read_text().strip() if error_file.exists() else "see supervisor.log"
            raise ClusterError(f"local cluster failed to start: {reason}")
        time.sleep(0.2)
    proc.terminate()
    raise ClusterError(f"local cluster not ready within {timeout:.0f}s; see {state_dir}/logs/")


def down(state_dir: Path = DEFAULT_STATE_DIR, *, timeout: float = 30.0) -> bool:
    """Stop the supervisor and wait until every control-plane process is gone."""
    state = read_state(state_dir)
    if state is None or not _alive(state.supervisor_pid):
        _state_file(state_dir).unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.supervisor_pid, signal.SIGTERM)
    everything = [state.supervisor_pid, *state.pids.values()]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and list(iter_processes(everything)):
        time.sleep(0.1)
    for pid in iter_processes(everything):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _state_file(state_dir).unlink(missing_ok=True)
    return True


def _supervise(
    state_dir: Path, kwok: bool, real_node: bool = False, registry: bool = False, dns: bool = True
) -> int:
    """Body of the supervisor process: start, publish state, wait for SIGTERM, stop."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()
    options = ClusterOptions(controller_manager=True, scheduler=True, kwok=kwok, workdir=state_dir)
    network: NodeNetwork | None = None
    node: RealNode | None = None
    extras: dict[str, _Process] = {}
    reg: RegistryConfig | None = None
    reg_proc: _Process | None = None

    def teardown() -> None:
        for proc in extras.values():
            proc.stop(60.0)
        if node is not None:
            node.stop()
        if reg_proc is not None:
            reg_proc.stop(10.0)
        cluster.stop()
        if network is not None:
            network.delete()

    try:
        if real_node:
            network = NodeNetwork.create()
            options = cluster_options(network, options)
    except Exception as exc:
        (state_dir / "error.txt").write_text(str(exc))
        return 1
    cluster = Cluster(options)
    try:
        cluster.start()
        if network is not None:
            node_options = RealNodeOptions(workdir=state_dir / "real-node", dns=dns)
            if registry:
                assert cluster.pki is not None
                reg = prepare(cluster.pki, state_dir / "registry", network.host_ip)
                reg_proc = _Process("registry", reg.argv(), state_dir / "registry" / "registry.log", True)
                reg_proc.start()
                wait_ready(reg)
                node_options.registries = {reg.host: str(reg.ca)}
            node = RealNode(cluster, network, node_options)
            node.start()
        wanted = json.loads((state_dir / "extra.json").read_text() or "{}")
        fill = {"kubeconfig": str(cluster.kubeconfig), "state_dir": str(state_dir)}
        for name, argv in wanted.items():
            # SIGTERM (not SIGKILL) on the supervisor's death: the agent cleans up its pods first
            proc = _Process(name, [a.format(**fill) for a in argv], state_dir / f"{name}.log", True)
            proc.death_signal = signal.SIGTERM
            proc.start()
            extras[name] = proc
    except Exception as exc:
        (state_dir / "error.txt").write_text(str(exc))
        teardown()
        return 1
    control_plane = cluster.pids()
    state = LocalState(
        supervisor_pid=os.getpid(),
        server=cluster.server,
        kubeconfig=str(cluster.kubeconfig),
        kubectl=str(cluster.assets / "kubectl"),
        pids={
            **control_plane,
            **(node.pids() if node is not None else {}),
            **{n: p.pid for n, p in extras.items() if p.pid},
            **({"registry": reg_proc.pid} if reg_proc is not None and reg_proc.pid else {}),
        },
        started_at=time.time(),
        ready_seconds=round(time.monotonic() - started, 2),
        registry=reg.host if reg is not None else "",
        registry_ca=str(reg.ca) if reg is not None else "",
        dns=node.dns_ip if node is not None else "",
        dns_error=node.dns_error if node is not None else "",
    )
    tmp = _state_file(state_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(_state_file(state_dir))
    while not stop.wait(1.0):
        dead = [n for n, pid in control_plane.items() if not _alive(pid)]
        if dead:
            (state_dir / "error.txt").write_text(f"{', '.join(dead)} exited; see {state_dir}/logs/")
            break
    teardown()
    _state_file(state_dir).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    args = sys.argv
    sys.exit(
        _supervise(
            Path(args[1]),
            args[2] == "1",
            args[3:4] == ["real"],
            args[4:5] == ["registry"],
            args[5:6] != ["nodns"],
        )
    )
