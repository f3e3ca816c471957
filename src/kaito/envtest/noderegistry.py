"""An image registry the real node pulls from: Debian's ``docker-registry`` (CNCF distribution)
bound on the host's end of the node's link (``10.77.N.1``), TLS signed by the cluster CA, no
credentials.

``kaito local up --node real --registry`` starts it under the supervisor (it dies with the
cluster) and gives containerd its host and CA (``RealNodeOptions.registries``), so a Pod naming
``10.77.N.1:5000/kaito/inference:TAG`` is pulled by the kubelet like from any registry. Its
storage lives under the state folder and survives ``down``/``up``, like etcd's data: an image
pushed once is there the next time (the node's address is the same while its index is).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kaito.envtest.certs import Pki, issue_serving_cert

#: The port tried first: a stable image reference across restarts.
DEFAULT_PORT = 5000


class RegistryError(RuntimeError):
    pass


@dataclass
class RegistryConfig:
    """Where the registry listens and what a client needs to trust it."""

    host: str  # ``ip:port``
    ca: Path
    config: Path
    storage: Path

    def argv(self) -> list[str]:
        return [registry_binary(), "serve", str(self.config)]


def registry_binary() -> str:
    found = shutil.which("docker-registry")
    if found is None:
        raise RegistryError("docker-registry is missing: apt-get install docker-registry")
    return found


def ensure_registry_package() -> None:
    """Install Debian's docker-registry when it is missing (root only)."""
    if shutil.which("docker-registry"):
        return
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker-registry"],
        check=True,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def _port(address: str) -> int:
    """DEFAULT_PORT when it is free on ``address``, else any free one."""
    for port in (DEFAULT_PORT, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((address, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RegistryError(f"no free port on {address}")


def prepare(pki: Pki, folder: Path, address: str) -> RegistryConfig:
    """Write the registry's certificate (cluster CA, ``address`` and 127.0.0.1 as names) and its
    configuration into ``folder``; the caller runs :meth:`RegistryConfig.argv`."""
    folder.mkdir(parents=True, exist_ok=True)
    storage = folder / "storage"
    storage.mkdir(exist_ok=True)
    cert, key = issue_serving_cert(pki, folder, "registry", [address, "127.0.0.1"])
    port = _port(address)
    config = folder / "config.yml"
    config.write_text(
        f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {address}:{port}
  tls:
    certificate: {cert}
    key: {key}
"""
    )
    return RegistryConfig(host=f"{address}:{port}", ca=pki.ca_cert, config=config, storage=storage)


def wait_ready(config: RegistryConfig, timeout: float = 20.0) -> None:
    """Until ``/v2/`` answers 200 over TLS checked against the cluster CA."""
    import ssl
    import time
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(config.ca))
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"https://{config.host}/v2/", timeout=2, context=ctx) as r:
                if r.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise RegistryError(f"registry at {config.host} not ready within {timeout:.0f}s: {last}")
