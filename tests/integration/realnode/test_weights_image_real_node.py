"""A weights image pulled by the real ``oras`` in a real container, and not pulled again by a
restarted pod whose cache claim survived (issue 23, item 1).

Real: the control plane (apiserver, kube-controller-manager's StatefulSet and PV binder,
scheduler), one real node (containerd, kubelet), a TLS registry with htpasswd on the node's host
address (hack/registry.sh), the tiny model pushed with ``kaito models push``'s client, and oras
1.3.6 built from its Go module. The StatefulSet is the one kaito's builder writes for a Workspace
with ``kaito.sh/weights-image`` on an NVMe SKU: its init container, its ``volumeClaimTemplate`` on
``kaito-local-nvme-disk`` (bound here to a local PV), its pull secret.

Not real: the serving container. The node has no GPU and no kaito inference image (building one
needs hack/images.sh and minutes of buildah), so the server container is replaced by the static
``hello`` peer with kaito's weights mount left in place; what vLLM would load is checked as files
on the claim's host folder instead.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kaito.api.workspace import Workspace
from kaito.contract.weights import CACHE_MARKER
from kaito.controllers.workspace import WorkspaceControllerOptions, inference
from kaito.controllers.workspace.inference.configmap import DEFAULT_CONFIG_NAME
from kaito.controllers.workspace.inference.weights import INIT_CONTAINER, VOLUME
from kaito.envtest import Cluster
from kaito.envtest.cluster import ClusterOptions
from kaito.envtest.oci import write_archive
from kaito.envtest.orascli import ensure_oras
from kaito.envtest.realnode import (
    HELLO_IMAGE,
    NodeNetwork,
    RealNode,
    RealNodeOptions,
    cluster_options,
    missing_requirements,
)
from kaito.envtest.waiting import eventually_blocking
from kaito.weights import RegistryClient, push_folder

pytestmark = [pytest.mark.cluster]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[3]
PULLER_IMAGE = "kaito.local/oras:1.3.6"
NS = "weights"
NAME = "tiny"


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 180.0) -> T:
    return eventually_blocking(probe, what, timeout=timeout)  # type: ignore[return-value]


@dataclass
class Env:
    cluster: Cluster
    node: RealNode
    registry_host: str
    registry_ca: str
    docker_config: str
    work: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    missing = missing_requirements()
    assert not missing, "a real node needs: " + "; ".join(missing)
    if not Path("/bin/busybox").is_file() and os.geteuid() == 0 and shutil.which("apt-get"):
        # The puller image's shell, as hack/registry.sh installs docker-registry: on first use.
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "busybox-static"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True)
    assert Path("/bin/busybox").is_file(), (
        "the puller image needs a static shell: apt-get install busybox-static"
    )
    work = tmp_path_factory.mktemp("weights-real")
    network = NodeNetwork.create()
    state = work / "registry"
    script = ROOT / "hack" / "registry.sh"
    try:
        out = subprocess.run(
            ["bash", str(script), "start", str(state)],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "REGISTRY_ADDRESS": network.host_ip},
        )
        assert out.returncode == 0, out.stderr
        reg = dict(line.split("=", 1) for line in (state / "registry.env").read_text().split())
        auth = base64.b64encode(f"{reg['REGISTRY_USER']}:{reg['REGISTRY_PASSWORD']}".encode()).decode()
        config = work / "auth.json"
        config.write_text(json.dumps({"auths": {reg["REGISTRY_HOST"]: {"auth": auth}}}))
        options = ClusterOptions(controller_manager=True, scheduler=True)
        with (
            Cluster(cluster_options(network, options)) as cluster,
            RealNode(cluster, network, RealNodeOptions(name="real-weights", dns=False)) as node,
        ):
            yield Env(cluster, node, reg["REGISTRY_HOST"], reg["REGISTRY_CA"], config.read_text(), work)
    finally:
        subprocess.run(["bash", str(script), "stop", str(state)], timeout=60)
        network.delete()


def puller_image(work: Path, ca: str) -> Path:
    """oras and a static busybox (``sh``, ``cat``, ``rm``) as one image, trusting the registry's CA
    the way a private registry's puller image would: in the system bundle Go reads."""
    busybox = Path("/bin/busybox").read_bytes()
    files = {
        "/oras": (ensure_oras().read_bytes(), 0o755),
        "/sh": (busybox, 0o755),
        "/cat": (busybox, 0o755),
        "/rm": (busybox, 0o755),
        "/etc/ssl/certs/ca-certificates.crt": (Path(ca).read_bytes(), 0o644),
    }
    return write_archive(work / "oras.oci.tar", PULLER_IMAGE, files, ["/oras"])


def kaito_statefulset() -> dict[str, Any]:
    """kaito's StatefulSet for a weights-image Workspace on an NVMe SKU, with the serving
    container swapped for ``hello`` (see the module docstring) and no GPU or node affinity."""
    ws_obj: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "uid": "00000000-0000-0000-0000-000000000001",
            "annotations": {"kaito.sh/weights-image": "REPLACED"},
        },
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"w": "x"}},
        },
        "inference": {
            "preset": {"name": "phi-3-mini-4k-instruct", "presetOptions": {"imagePullSecrets": ["regcred"]}}
        },
    }
    return ws_obj


def build(image: str) -> dict[str, Any]:
    ws_obj = kaito_statefulset()
    ws_obj["metadata"]["annotations"]["kaito.sh/weights-image"] = image
    model = Workspace.from_manifest(ws_obj)
    plan = inference.plan_for(model)
    options = WorkspaceControllerOptions(weights_puller_image=PULLER_IMAGE)
    sts = inference.build_statefulset(ws_obj, model, plan, affinity={}, revision=1, options=options)
    sts["metadata"].pop("ownerReferences", None)  # no Workspace object here: the GC would delete it
    spec = sts["spec"]["template"]["spec"]
    server = spec["containers"][0]
    assert server["command"][server["command"].index("--model") + 1] == "/workspace/weights"
    server.update(image=HELLO_IMAGE, command=["/hello", "serve", "5000"])
    for key in ("resources", "startupProbe", "livenessProbe", "readinessProbe"):
        server.pop(key, None)
    spec.pop("affinity", None)
    return sts


def tiny_model(target: Path) -> Path:
    """The tiny random-weight model, built in the inference venv (torch lives there; this suite
    runs in the core one), as kaito's local node builds its stand-in."""
    venv = ROOT / ".venv-inference" if (ROOT / ".venv-inference").is_dir() else Path(sys.prefix)
    code = (
        "import sys; from pathlib import Path; from kaito.contract.tinymodel import build_tiny_model; "
        "build_tiny_model(Path(sys.argv[1]))"
    )
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, str(target)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, f"building the tiny model needs `make inference-venv`: {proc.stderr[-800:]}"
    return target


def kubectl(env: Env, *args: str, input: str | None = None) -> str:
    return env.cluster.kubectl(*args, input=input).stdout


def pod_uid(env: Env) -> str | None:
    out = env.cluster.kubectl("-n", NS, "get", "pod", f"{NAME}-0", "-o", "json", check=False)
    if out.returncode != 0:
        return None
    pod = json.loads(out.stdout)
    running = any(
        c.get("state", {}).get("running") for c in (pod.get("status") or {}).get("containerStatuses") or []
    )
    return str(pod["metadata"]["uid"]) if running and not pod["metadata"].get("deletionTimestamp") else None


def files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_weights_image_pulled_once_into_a_surviving_claim(env: Env) -> None:
    model_dir = tiny_model(env.work / "model")
    image = f"{env.registry_host}/weights/tiny:v1"
    (env.work / "auth.json").write_text(env.docker_config)
    pushed = push_folder(
        RegistryClient.for_image(
            image, registry_config=env.work / "auth.json", ca_file=Path(env.registry_ca)
        ),
        model_dir,
    )
    env.node.import_image(puller_image(env.work, env.registry_ca))

    claim_dir = env.work / "nvme-pv"
    claim_dir.mkdir()
    kubectl(env, "create", "namespace", NS)
    kubectl(
        env,
        "-n",
        NS,
        "create",
        "secret",
        "generic",
        "regcred",
        "--type=kubernetes.io/dockerconfigjson",
        f"--from-literal=.dockerconfigjson={env.docker_config}",
    )
    kubectl(env, "-n", NS, "create", "configmap", DEFAULT_CONFIG_NAME)
    storage = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "kaito-local-nvme-disk"},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "nvme-0"},
            "spec": {
                "capacity": {"storage": "2Ti"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "kaito-local-nvme-disk",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(claim_dir), "type": "Directory"},
            },
        },
    ]
    for obj in [*storage, build(image)]:
        kubectl(env, "apply", "-f", "-", input=json.dumps(obj))

    first = wait_for(lambda: pod_uid(env), f"{NAME}-0 running after its init container pulled")
    logs = kubectl(env, "-n", NS, "logs", f"{NAME}-0", "-c", INIT_CONTAINER)
    assert f"{pushed.digest} pulled" in logs, logs
    pulled = files(claim_dir)
    marker = pulled.pop(CACHE_MARKER)
    assert marker[0].decode().strip() == pushed.digest
    assert {k: v[0] for k, v in pulled.items()} == {k: v[0] for k, v in files(model_dir).items()}
    pvc = json.loads(kubectl(env, "-n", NS, "get", "pvc", f"{VOLUME}-{NAME}-0", "-o", "json"))
    assert pvc["spec"]["volumeName"] == "nvme-0"

    # The pod goes; the StatefulSet makes a new one on the same claim: resolve only, no pull.
    kubectl(env, "-n", NS, "delete", "pod", f"{NAME}-0", "--wait=true")
    wait_for(lambda: (uid := pod_uid(env)) and uid != first and uid, "a new pod running on the same claim")
    logs = kubectl(env, "-n", NS, "logs", f"{NAME}-0", "-c", INIT_CONTAINER)
    assert "already in the cache; nothing pulled" in logs, logs
    again = files(claim_dir)
    again.pop(CACHE_MARKER)
    assert again == pulled  # same bytes, same mtimes: nothing was written
    shutil.rmtree(env.work / "model", ignore_errors=True)
