"""Pods on a local node run for real: addresses, ports, probes, restarts, failures, volumes, env.

No vLLM here: kaito's inference image maps to `.venv-inference`, whose python serves HTTP with
the standard library, so each pod starts in seconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    AgentProcess,
    container_status,
    get_pod,
    netns_pids,
    pod_manifest,
    still_running,
    wait_for,
)
from kaito.localnode.sandbox import NETWORK
from kaito.runtime import CONFIGMAP, GVK, POD, SECRET, SERVICE, Client

ENDPOINTSLICE = GVK("discovery.k8s.io", "v1", "EndpointSlice")
CLI = [sys.executable, "-m", "kaito.cli.main", "local"]
HTTP = ["python", "-m", "http.server", "5000", "--bind", "0.0.0.0"]
READY_PROBE = {"httpGet": {"path": "/", "port": 5000}, "periodSeconds": 1}
pytestmark = pytest.mark.usefixtures("agent")


def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read().decode(errors="replace")


def _ready(pod: dict[str, Any] | None) -> bool:
    conds = {c["type"]: c["status"] for c in ((pod or {}).get("status") or {}).get("conditions") or []}
    return conds.get("Ready") == "True"


@pytest.fixture
async def ns(kclient: Client) -> str:
    name = f"ln-{uuid.uuid4().hex[:6]}"
    await kclient.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


async def _create(kclient: Client, ns: str, pod: dict[str, Any]) -> None:
    pod["metadata"]["namespace"] = ns
    await kclient.create(pod)


async def _ready_pod(kclient: Client, name: str, ns: str) -> dict[str, Any] | None:
    pod = await get_pod(kclient, name, ns)
    return pod if _ready(pod) else None


async def test_two_pods_bind_port_5000_and_deletion_leaves_nothing(
    kclient: Client, local_node: str, ns: str, agent: AgentProcess
) -> None:
    for name in ("web-a", "web-b"):
        await _create(
            kclient, ns, pod_manifest(name, local_node, {"command": HTTP, "readinessProbe": READY_PROBE})
        )
    ips, sandboxes = [], []
    for name in ("web-a", "web-b"):
        pod = await wait_for(lambda n=name: _ready_pod(kclient, n, ns), f"{name} Ready", timeout=90)
        ip = pod["status"]["podIP"]
        assert ip in {str(h) for h in NETWORK.hosts()}
        status, body = _get(f"http://{ip}:5000/")
        assert status == 200 and "Directory listing" in body
        ips.append(ip)
        cs = container_status(pod)
        assert cs["ready"] is True and cs["restartCount"] == 0 and "running" in cs["state"]
        pod_dir = next((agent.state_dir / "pods").glob(f"{ns}_{name}_*"))
        sandboxes.append((json.loads((pod_dir / "pids.json").read_text()), pod_dir))
    assert ips[0] != ips[1]
    pids = [p for sb, _ in sandboxes for p in netns_pids(sb["pause"])]
    assert len(pids) >= 4  # pause + server per pod, at least
    for name in ("web-a", "web-b"):
        await kclient.delete(POD, name, ns)
    for name in ("web-a", "web-b"):
        await wait_for(lambda n=name: _gone(kclient, n, ns), f"{name} deleted", timeout=60)
    await wait_for(lambda: not still_running(pids), "pod processes ended", timeout=30)
    links = await _ip_links()
    mounts = _mounts()
    for sb, pod_dir in sandboxes:
        assert sb["link"] not in links
        assert str(pod_dir) not in mounts
        assert not pod_dir.exists()


async def _ip_links() -> str:
    proc = await asyncio.create_subprocess_exec("ip", "-o", "link", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode()


def _mounts() -> str:
    return Path("/proc/mounts").read_text()


async def _gone(kclient: Client, name: str, ns: str) -> bool:
    return await get_pod(kclient, name, ns) is None


async def test_wrong_command_crash_loops_with_back_off_and_exit_code(
    kclient: Client, local_node: str, ns: str
) -> None:
    await _create(
        kclient, ns, pod_manifest("crash", local_node, {"command": ["sh", "-c", "echo boom >&2; exit 3"]})
    )

    async def backing_off() -> dict[str, Any]:
        cs = container_status(await get_pod(kclient, "crash", ns))
        waiting = (cs.get("state") or {}).get("waiting") or {}
        return cs if waiting.get("reason") == "CrashLoopBackOff" and cs.get("restartCount", 0) >= 1 else {}

    cs = await wait_for(backing_off, "CrashLoopBackOff after a restart", timeout=90)
    term = cs["lastState"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"
    assert "boom" in term.get("message", "")
    assert "back-off 20s" in cs["state"]["waiting"]["message"]  # doubled after the first restart
    missing = "missing-binary-xyz"
    await _create(kclient, ns, pod_manifest("noexec", local_node, {"command": [missing]}))

    async def exit_127() -> dict[str, Any]:
        last = container_status(await get_pod(kclient, "noexec", ns)).get("lastState") or {}
        return dict(last.get("terminated") or {}) if (last.get("terminated") or {}).get("exitCode") else {}

    term = await wait_for(exit_127, "the missing executable's exit code", timeout=60)
    assert term["exitCode"] == 127 and missing in term["message"]


async def test_unknown_image_is_err_image_pull_naming_it(kclient: Client, local_node: str, ns: str) -> None:
    image = "registry.example.invalid/team/not-kaito:1.0"
    await _create(kclient, ns, pod_manifest("pull", local_node, {"image": image, "command": HTTP}))

    async def pull_error() -> dict[str, Any]:
        waiting = (container_status(await get_pod(kclient, "pull", ns)).get("state") or {}).get(
            "waiting"
        ) or {}
        return waiting if waiting.get("reason") == "ErrImagePull" else {}

    waiting = await wait_for(pull_error, "ErrImagePull", timeout=60)
    assert image in waiting["message"]
    pod = await get_pod(kclient, "pull", ns)
    assert pod is not None and pod["status"]["phase"] == "Pending"


async def test_liveness_failure_restarts_the_container(kclient: Client, local_node: str, ns: str) -> None:
    probe = {"httpGet": {"path": "/no-such-page", "port": 5000}, "periodSeconds": 1, "failureThreshold": 2}
    await _create(kclient, ns, pod_manifest("live", local_node, {"command": HTTP, "livenessProbe": probe}))

    async def restarted() -> dict[str, Any]:
        cs = container_status(await get_pod(kclient, "live", ns))
        return cs if cs.get("restartCount", 0) >= 1 else {}

    cs = await wait_for(restarted, "a liveness restart", timeout=120)
    assert "Liveness probe failed" in cs["lastState"]["terminated"]["message"]


async def test_readiness_gates_the_service_endpoints(
    kclient: Client, local_node: str, ns: str, agent: AgentProcess
) -> None:
    # ready once /srv/ready exists: the test creates it through the pod's own HTTP PUT-less way,
    # an emptyDir the container writes after a signal file appears (a probe the test controls)
    script = "mkdir -p /srv && cd /srv && exec python -m http.server 5000 --bind 0.0.0.0"
    probe = {"httpGet": {"path": "/ready", "port": 5000}, "periodSeconds": 1}
    pod = pod_manifest(
        "gated",
        local_node,
        {
            "command": ["sh", "-c", script],
            "readinessProbe": probe,
            "volumeMounts": [{"name": "srv", "mountPath": "/srv"}],
        },
        volumes=[{"name": "srv", "emptyDir": {}}],
    )
    await _create(kclient, ns, pod)
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "gated", "namespace": ns},
        "spec": {"selector": {"app": "gated"}, "ports": [{"port": 80, "targetPort": 5000}]},
    }
    await kclient.create(svc)

    seen: list[Any] = []

    async def endpoint(ready: bool) -> dict[str, Any]:
        slices = await kclient.list(ENDPOINTSLICE, ns, label_selector="kubernetes.io/service-name=gated")
        seen[:] = [slices, container_status(await get_pod(kclient, "gated", ns))]
        for sl in slices:
            for ep in sl.get("endpoints") or []:
                if bool((ep.get("conditions") or {}).get("ready")) is ready:
                    return dict(ep)
        return {}

    try:
        ep = await wait_for(lambda: endpoint(False), "a not-ready endpoint", timeout=90)
    except AssertionError:
        raise AssertionError(f"no not-ready endpoint; slices and container: {seen}") from None
    running = await get_pod(kclient, "gated", ns)
    assert running is not None and ep["addresses"] == [running["status"]["podIP"]]
    assert container_status(running)["ready"] is False
    # make /ready exist inside the pod's emptyDir (the agent's host folder for it)
    srv = next((agent.state_dir / "pods").glob(f"{ns}_gated_*")) / "volumes" / "srv"
    (srv / "ready").write_text("ok")
    ep = await wait_for(lambda: endpoint(True), "the endpoint Ready", timeout=60)
    assert ep["addresses"] == [running["status"]["podIP"]]
    # port-forward follows the Service to the ready pod
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "port-forward", "svc/gated", f"{port}:80", "-n", ns, "--kubeconfig", str(agent.kubeconfig),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        body = await wait_for(
            lambda: _try_get(f"http://127.0.0.1:{port}/ready"), "port-forward answer", timeout=30
        )
        assert body == "ok"
    finally:
        proc.terminate()
        await proc.wait()


def _try_get(url: str) -> str:
    try:
        return _get(url, timeout=3)[1]
    except OSError:
        return ""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_volumes_env_and_logs(kclient: Client, local_node: str, ns: str, agent: AgentProcess) -> None:
    script = (
        'echo "cm=$(cat /mnt/config/greeting) secret=$TOKEN pod=$POD_NAME ns=$POD_NS app=$APP '
        'expanded=$(EXPANDED) shm=$(test -w /dev/shm && echo rw) host=$(hostname)"'
    )
    container = {
        "command": ["sh", "-c", script.replace("$(EXPANDED)", "$EXPANDED")],
        "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "EXPANDED", "value": "$(POD_NAME)-x"},
        ],
        "volumeMounts": [
            {"name": "config", "mountPath": "/mnt/config", "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    pod = pod_manifest(
        "vols", local_node, container, restartPolicy="Never",
        volumes=[
            {"name": "config", "configMap": {"name": "cfg"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
    )  # fmt: skip
    # the pod comes first: its volume waits (ContainerCreating) until the ConfigMap exists
    await _create(kclient, ns, pod)

    async def mount_waiting() -> bool:
        waiting = (container_status(await get_pod(kclient, "vols", ns)).get("state") or {}).get(
            "waiting"
        ) or {}
        return waiting.get("reason") == "ContainerCreating" and "MountVolume" in waiting.get("message", "")

    await wait_for(mount_waiting, "ContainerCreating while the ConfigMap is missing", timeout=60)
    meta = {"name": "cfg", "namespace": ns}
    await kclient.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"greeting": "hi cm"}}
    )
    secret = {"token": base64.b64encode(b"s3cret").decode()}
    await kclient.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": ns}, "data": secret}
    )

    async def succeeded() -> dict[str, Any] | None:
        p = await get_pod(kclient, "vols", ns)
        return p if (p or {}).get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    done = await wait_for(succeeded, "the pod to finish", timeout=60)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    proc = await asyncio.create_subprocess_exec(
        *CLI, "logs", "vols", "-n", ns, "--state-dir", str(agent.root), stdout=asyncio.subprocess.PIPE
    )
    out = (await proc.communicate())[0].decode()
    assert "cm=hi cm secret=s3cret pod=vols" in out
    assert f"ns={ns} app=vols expanded=vols-x shm=rw host=vols" in out
    assert (await kclient.get(CONFIGMAP, "cfg", ns))["data"]["greeting"]
    assert (await kclient.get(SECRET, "sec", ns))["data"]["token"]
    assert (await kclient.get(SERVICE, "kubernetes", "default"))["spec"]["ports"]


async def test_exec_probe_runs_inside_the_container(kclient: Client, local_node: str, ns: str) -> None:
    # /tmp is the container's own (a tmpfs in its mount namespace): only an exec probe that
    # enters the container's namespaces and root sees the file
    script = "touch /tmp/ok && exec python -m http.server 5000 --bind 0.0.0.0"
    for name, path in (("exec-ok", "/tmp/ok"), ("exec-no", "/tmp/missing")):
        probe = {"exec": {"command": ["test", "-f", path]}, "periodSeconds": 1}
        await _create(
            kclient,
            ns,
            pod_manifest(name, local_node, {"command": ["sh", "-c", script], "readinessProbe": probe}),
        )
    await wait_for(lambda: _ready_pod(kclient, "exec-ok", ns), "exec-ok Ready", timeout=90)

    async def running_not_ready() -> dict[str, Any]:
        cs = container_status(await get_pod(kclient, "exec-no", ns))
        return cs if "running" in (cs.get("state") or {}) else {}

    cs = await wait_for(running_not_ready, "exec-no running", timeout=60)
    assert cs["ready"] is False


async def test_secret_env_and_volume_files_are_private_on_the_host(
    kclient: Client, local_node: str, ns: str, agent: AgentProcess
) -> None:
    """Issue 21 hole 8: the agent wrote each container's spec (Secret env values included) with
    the umask's 0644 and Secret volume files 0644 in a 0755 pod folder, so any user on the machine
    could read them. Now, as the kubelet keeps them: pod folder and Secret volume folder 0700,
    spec file 0600, Secret files 0400, and the container still reads both."""
    planted = "s3cret-" + uuid.uuid4().hex[:8]
    await kclient.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "priv", "namespace": ns},
            "data": {"token": base64.b64encode(planted.encode()).decode()},
        }
    )
    script = 'test "$(cat /mnt/sec/token)" = "$TOKEN" && echo read-ok && exec sleep 300'
    container = {
        "command": ["sh", "-c", script],
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "priv", "key": "token"}}}],
        "volumeMounts": [{"name": "sec", "mountPath": "/mnt/sec", "readOnly": True}],
    }
    volumes = [{"name": "sec", "secret": {"secretName": "priv"}}]
    pod = pod_manifest("priv", local_node, container, volumes=volumes)
    await _create(kclient, ns, pod)
    await wait_for(lambda: _ready_pod(kclient, "priv", ns), "priv Ready", timeout=90)
    pod_dir = next((agent.state_dir / "pods").glob(f"{ns}_priv_*"))

    def mode(path: Path) -> int:
        return path.stat().st_mode & 0o777

    log = pod_dir / "logs" / "main" / "0.log"
    await wait_for(lambda: "read-ok" in log.read_text(errors="replace"), "the container to read the Secret")
    spec = pod_dir / "main.spec.json"
    assert planted in spec.read_text()  # the file does hold the Secret's value
    assert mode(pod_dir) == 0o700, oct(mode(pod_dir))
    assert mode(spec) == 0o600, oct(mode(spec))
    volume = pod_dir / "volumes" / "sec"
    assert mode(volume) == 0o700, oct(mode(volume))
    assert mode(volume / "token") == 0o400, oct(mode(volume / "token"))
    assert (volume / "token").read_text() == planted
    for projected in (pod_dir / "volumes").iterdir():  # the service-account token volume, if any
        token = projected / "token"
        if token.exists():
            assert mode(projected) == 0o700 and mode(token) == 0o400, projected
    await kclient.delete(POD, "priv", ns)
    await wait_for(lambda: _gone(kclient, "priv", ns), "priv deleted", timeout=60)
    assert not pod_dir.exists()
