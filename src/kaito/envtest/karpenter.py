"""Real Karpenter (its kwok cloud provider) as a test peer: build it, configure it, run it.

Why a real Karpenter: kaito's ``karpenter`` NodeProvisioner backend writes NodePools for
Karpenter-core to fulfil; only the real controller shows whether those NodePools are right
(an instance-type requirement it can resolve, static ``replicas``, taints and labels it copies).

The binary is built from its Go module into kaito's asset cache, like the control plane
(see :mod:`kaito.envtest.assets`), under ``<cache>/karpenter-<version>/``: ``karpenter-kwok``
plus the CRDs shipped inside the module. Karpenter needs a newer Go than the control plane; the
``go`` command fetches that toolchain from the module proxy by itself (``GOTOOLCHAIN``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kaito.envtest.assets import AssetsError, cache_root

KARPENTER_VERSION = "1.15.0"
#: The Go release Karpenter's go.mod asks for (>= 1.26.9); fetched by ``go`` through the proxy.
KARPENTER_GOTOOLCHAIN = "go1.27.3"
KARPENTER_MODULE = "sigs.k8s.io/karpenter"
BINARY = "karpenter-kwok"

Progress = Callable[[str], None]


def karpenter_dir(version: str = KARPENTER_VERSION) -> Path:
    return cache_root() / f"karpenter-{version}"


def find_karpenter(version: str = KARPENTER_VERSION) -> Path | None:
    """The cache folder when the binary and its CRDs are there; ``KAITO_KARPENTER`` overrides."""
    env = os.environ.get("KAITO_KARPENTER")
    folder = Path(env).expanduser() if env else karpenter_dir(version)
    if os.access(folder / BINARY, os.X_OK) and any((folder / "crds").glob("*.yaml")):
        return folder
    if env:
        raise AssetsError(
            f"KAITO_KARPENTER={env} lacks {BINARY} or crds/*.yaml; "
            "unset it to let kaito build Karpenter's kwok provider"
        )
    return None


def _run(cmd: Sequence[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        raise AssetsError(
            f"`{' '.join(cmd)}` failed: "
            + " | ".join(tail)
            + f" -- Karpenter {KARPENTER_VERSION} needs Go >= 1.26.9 (GOTOOLCHAIN="
            f"{KARPENTER_GOTOOLCHAIN} lets `go` fetch it) or set KAITO_KARPENTER to a built copy"
        )
    return proc.stdout


def ensure_karpenter(
    version: str = KARPENTER_VERSION,
    *,
    build: bool = True,
    toolchain: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Find or build ``karpenter-kwok`` (+ CRDs); idempotent, and the Go build cache is reused."""
    found = find_karpenter(version)
    if found is not None:
        return found
    target = karpenter_dir(version)
    if not build:
        raise AssetsError(
            f"Karpenter's kwok provider is missing in {target}; run `kaito local assets --karpenter`"
        )
    go = shutil.which("go")
    if go is None:
        raise AssetsError("no Go toolchain on PATH to build Karpenter; install Go or set KAITO_KARPENTER")
    say = progress or (lambda _m: None)
    started = time.monotonic()
    tc = toolchain or os.environ.get("KAITO_KARPENTER_GOTOOLCHAIN") or KARPENTER_GOTOOLCHAIN
    env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN=tc, GOFLAGS="-mod=mod")
    target.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="karpenter-build-", dir=target.parent))
    try:
        say(
            f"[{time.monotonic() - started:5.0f}s] building {KARPENTER_MODULE}/kwok@v{version} "
            f"(go install, toolchain {tc})"
        )
        env["GOBIN"] = str(work)
        _run(
            [go, "install", "-trimpath", "-ldflags", "-s -w", f"{KARPENTER_MODULE}/kwok@v{version}"],
            work,
            env,
        )
        say(f"[{time.monotonic() - started:5.0f}s] copying CRDs from the module")
        info = json.loads(_run([go, "mod", "download", "-json", f"{KARPENTER_MODULE}@v{version}"], work, env))
        src = Path(info["Dir"])
        crds = target / "crds"
        crds.mkdir(exist_ok=True)
        for sub in ("pkg/apis/crds", "kwok/apis/crds"):
            for f in sorted((src / sub).glob("*.yaml")):
                shutil.copyfile(f, crds / f.name)
        os.replace(work / "kwok", target / BINARY)
        (target / BINARY).chmod(0o755)
        say(f"[{time.monotonic() - started:5.0f}s] done {BINARY} in {target}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


# ------------------------------------------------------------------------------- running it


@dataclass
class InstanceTypeSpec:
    """One entry of Karpenter kwok's instance-types file (its ``INSTANCE_TYPES_FILE_PATH``)."""

    name: str
    cpu: int
    memory_gib: int
    gpus: int
    price: float
    zones: tuple[str, ...] = ("test-zone-a",)
    extra_labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        offerings = [
            {
                "Price": self.price,
                "Available": True,
                "requirements": [
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [ct]},
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]},
                ],
            }
            for zone in self.zones
            for ct in ("on-demand",)
        ]
        resources = {
            "cpu": str(self.cpu),
            "memory": f"{self.memory_gib}Gi",
            "pods": "110",
            "ephemeral-storage": "2000Gi",
        }
        if self.gpus:
            resources["nvidia.com/gpu"] = str(self.gpus)
        return {
            "name": self.name,
            "offerings": offerings,
            "architecture": "amd64",
            "operatingSystems": ["linux"],
            "resources": resources,
        }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KarpenterProcess:
    """``karpenter-kwok`` running out of cluster against a kubeconfig (one replica, no election).

    ``install_crds`` must run first (``kubectl apply`` of the module's CRDs). Nodes it makes are
    plain Nodes that the cluster's kwok (``--manage-all-nodes``) turns Ready.
    """

    def __init__(
        self,
        kubeconfig: Path,
        instance_types: Sequence[InstanceTypeSpec],
        *,
        workdir: Path,
        folder: Path | None = None,
        namespace: str = "kube-system",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.folder = folder or ensure_karpenter()
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.namespace = namespace
        self.instance_types = list(instance_types)
        self.extra_env = dict(extra_env or {})
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0

    @property
    def crd_files(self) -> list[Path]:
        return sorted((self.folder / "crds").glob("*.yaml"))

    @property
    def log_path(self) -> Path:
        return self.workdir / "karpenter.log"

    def start(self, timeout: float = 90.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        types_file = self.workdir / "instance-types.json"
        types_file.write_text(json.dumps([t.to_json() for t in self.instance_types], indent=1))
        self.metrics_port, self.health_port = _free_port(), _free_port()
        env = dict(
            os.environ,
            KUBECONFIG=str(self.kubeconfig),
            SYSTEM_NAMESPACE=self.namespace,
            DISABLE_LEADER_ELECTION="true",
            METRICS_PORT=str(self.metrics_port),
            HEALTH_PROBE_PORT=str(self.health_port),
            FEATURE_GATES="StaticCapacity=true",
            INSTANCE_TYPES_FILE_PATH=str(types_file),
            LOG_LEVEL="info",
            **self.extra_env,
        )
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.popen = subprocess.Popen(
            [str(self.folder / BINARY)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        import urllib.error
        import urllib.request

        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssetsError(f"karpenter-kwok exited at start-up: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise AssetsError(f"karpenter-kwok not healthy within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line[:400] for line in text[-lines:])

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
