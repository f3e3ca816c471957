"""The cluster the e2e suite runs on: any cluster named by the environment, else one made here.

The suite tells one story, the way users run kaito: build the images, push them to a registry the
cluster pulls from, ``helm install`` the chart, use it, ``helm upgrade``, ``helm uninstall``. What
it needs from a cluster is the same everywhere, so the cluster is a parameter:

``KAITO_E2E_KUBECONFIG``
    A cluster to run on (kind: ``hack/kind-e2e.sh`` sets these). It must run kwok's controller
    (which fakes the GPU nodes kaito's node-provisioner makes; kind-e2e installs it) and must not
    hold a kaito release already. The suite installs into ``kaito-system`` and removes what it made.
``KAITO_E2E_REGISTRY``
    Where images are pushed from this machine, ``host[:port]`` (required with the kubeconfig).
``KAITO_E2E_REGISTRY_PULL``
    The same registry as the cluster's nodes name it (default: ``KAITO_E2E_REGISTRY``).
``KAITO_E2E_REGISTRY_CA`` / ``KAITO_E2E_REGISTRY_INSECURE=1``
    The CA that signed the registry's certificate, or plain HTTP (kind's local registry).

Unset, the suite makes its own: the local control plane with kwok, one real node (containerd +
kubelet, ``kaito.envtest.realnode``; root) and a registry on the node's link that the node trusts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaito.envtest.realnode import (
    RealNode,
)

REPO = Path(__file__).resolve().parents[2]


#: hack/images.sh's image name per target, where it differs from the target's.
_IMAGE_NAMES = {"controller": "workspace"}


@dataclass
class E2ECluster:
    """A cluster and a registry it pulls from, however they were obtained."""

    kubeconfig: Path
    kubectl_bin: str
    helm_bin: str
    #: where this machine pushes (``host:port``)
    push_registry: str
    #: where the cluster's nodes pull the same images from
    pull_registry: str
    registry_ca: str | None = None
    registry_insecure: bool = False
    #: the real node the suite made (None on a cluster from the environment)
    node: RealNode | None = None
    #: images pushed so far, by target and tag
    _built: dict[tuple[str, str], str] = field(default_factory=dict)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        proc = subprocess.run([self.helm_bin, *args], capture_output=True, text=True, env=env, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def image(self, target: str, tag: str) -> str:
        """Build ``target`` with hack/images.sh (cached on its inputs), push it as ``tag``, and
        return the name the cluster pulls it by (without the tag)."""
        pull = f"{self.pull_registry}/kaito/{_IMAGE_NAMES.get(target, target)}"
        if (target, tag) in self._built:
            return pull
        env = dict(os.environ, REGISTRY=f"{self.push_registry}/kaito", TAG=tag, PUSH="1")
        if self.registry_ca:
            env["REGISTRY_CA"] = self.registry_ca
        if self.registry_insecure:
            env["REGISTRY_INSECURE"] = "1"
        build = subprocess.run(
            ["bash", str(REPO / "hack" / "images.sh"), target],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert build.returncode == 0, f"hack/images.sh {target} (TAG={tag}) failed:\n{build.stderr[-3000:]}"
        self._built[(target, tag)] = pull
        return pull

    def untag_pushed(self) -> None:
        """Drop the names this suite pushed under from buildah's store: the suite's registry
        listens on a new port each run, so each run's names would otherwise keep that run's
        images (and, through them, their whole builds) alive. The images stay under
        ``localhost/kaito/NAME:TAG`` for the next build to find; hack/images.sh removes a build
        once no name points at it."""
        if not self._built or not shutil.which("buildah"):
            return
        refs = [f"{self.push_registry}/kaito/{_IMAGE_NAMES.get(t, t)}:{tag}" for t, tag in self._built]
        subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", *refs], capture_output=True, timeout=120)


def start_registry(folder: Path, address: str) -> dict[str, str]:
    env = dict(os.environ, REGISTRY_ADDRESS=address, REGISTRY_AUTH="none")
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "registry.sh"), "start", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
