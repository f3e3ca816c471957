"""A container on the local node is not host root (issue 19 item 6).

Each test runs a real pod on the agent whose command attacks the host the way a process that is
uid 0 with every capability could: mount, write /sys and /proc/sys, read root-only files the test
plants where the old root (an overlay of the whole host) showed them, read the agent's
kubeconfig, open or create the host's disk device. The pod prints one line per attempt and the
test asserts every one was denied, and that the process has no capability and no_new_privs.
"""

from __future__ import annotations

import base64
import os
import pwd
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, AgentProcess, container_status, get_pod, pod_manifest, wait_for
from kaito.runtime import GVK, POD, Client

SERVICE_ACCOUNT = GVK("", "v1", "ServiceAccount")
pytestmark = pytest.mark.usefixtures("agent")

#: each attempt: NAME=ALLOWED or NAME=denied; the environment names the host's targets
ATTACKS = r"""
attempt() {
  name=$1; shift
  if "$@" >/dev/null 2>&1; then echo "$name=ALLOWED"; else echo "$name=denied"; fi
}
attempt mount mount -t tmpfs none /mnt
attempt sys-write sh -c 'cat /sys/kernel/mm/ksm/run > /sys/kernel/mm/ksm/run'
attempt sysctl-write sh -c 'cat /proc/sys/vm/overcommit_ratio > /proc/sys/vm/overcommit_ratio'
attempt sysrq sh -c 'printf "" > /proc/sysrq-trigger'
attempt chroot chroot / true
attempt shadow grep -q root: /etc/shadow
for f in $PLANTED; do attempt "planted:$f" grep -q "$TOKEN" "$f"; done
attempt kubeconfig grep -q certificate "$AGENT_KUBECONFIG"
attempt block-device head -c 512 "$BLOCK"
attempt mknod mknod /tmp/disk b "$MAJOR" "$MINOR"
attempt block-device-made head -c 512 /tmp/disk
attempt kaito-assets touch "$HOME/.cache/kaito/assets/x"
echo "uid=$(id -u)"
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status
grep ' /sys ' /proc/mounts
echo attacks-done
"""


@pytest.fixture
async def ns(kclient: Client) -> str:
    name = f"sec-{uuid.uuid4().hex[:6]}"
    await kclient.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def _block_device() -> tuple[str, int, int]:
    """The host's disk under its root filesystem: its /dev path and numbers."""
    dev = os.stat("/").st_dev
    for entry in os.scandir("/dev"):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISBLK(st.st_mode) and st.st_rdev == dev:
            return entry.path, os.major(dev), os.minor(dev)
    pytest.fail(f"no block device node for {os.major(dev)}:{os.minor(dev)} under /dev")


@pytest.fixture
def planted(agent: AgentProcess) -> Iterator[tuple[str, list[Path]]]:
    """Root-only (0600) files holding a token, where the container's old root showed them: root's
    home, /etc, a node's state folder under /var/lib, the checkout's .kaito and the agent's own
    state folder."""
    token = "planted-" + uuid.uuid4().hex
    made: list[Path] = []
    files: list[Path] = []
    for folder in (Path("/root"), Path("/etc"), Path("/var/lib/kaito-node"), REPO / ".kaito", agent.root):
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
            made.append(folder)
        path = folder / f"kaito-test-{token}"
        path.write_text(token)
        path.chmod(0o600)
        files.append(path)
    try:
        yield token, files
    finally:
        for path in files:
            path.unlink(missing_ok=True)
        for folder in reversed(made):
            folder.rmdir()


async def _log(kclient: Client, agent: AgentProcess, ns: str, pod: str, until: str) -> str:
    """The container's first log once it holds ``until``; on a timeout, the log and the pod's
    container status so far."""
    seen: list[Any] = []

    async def done() -> str:
        logs = list((agent.state_dir / "pods").glob(f"{ns}_{pod}_*/logs/main/0.log"))
        text = logs[0].read_text(errors="replace") if logs else ""
        seen[:] = [text, container_status(await get_pod(kclient, pod, ns))]
        return text if until in text else ""

    try:
        return await wait_for(done, f"{pod}'s log to say {until}", timeout=180)
    except AssertionError:
        raise AssertionError(f"{pod}: no {until!r} in its log; log and status: {seen}") from None


async def test_a_root_container_cannot_reach_the_host(
    kclient: Client, local_node: str, ns: str, agent: AgentProcess, planted: tuple[str, list[Path]]
) -> None:
    token, files = planted
    block, major, minor = _block_device()
    env = {
        "PLANTED": " ".join(map(str, files)),
        "TOKEN": token,
        "AGENT_KUBECONFIG": str(agent.kubeconfig),
        "BLOCK": block,
        "MAJOR": str(major),
        "MINOR": str(minor),
    }
    container = {"command": ["sh", "-c", ATTACKS], "env": [{"name": k, "value": v} for k, v in env.items()]}
    pod = pod_manifest("attack", local_node, container, restartPolicy="Never")
    pod["metadata"]["namespace"] = ns
    await kclient.create(pod)
    log = await _log(kclient, agent, ns, "attack", "attacks-done")
    results = dict(line.split("=", 1) for line in log.splitlines() if line.endswith(("=ALLOWED", "=denied")))
    assert len(results) == 11 + len(files), log
    assert all(v == "denied" for v in results.values()), log
    assert "uid=0" in log  # the image's user is root: root without root's powers
    status = dict(line.split(":\t", 1) for line in log.splitlines() if ":\t" in line)
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[field] == "0000000000000000", log
    assert status["NoNewPrivs"] == "1", log
    sys_line = next(line for line in log.splitlines() if " /sys " in line)
    assert sys_line.split()[3].split(",")[0] == "ro", sys_line
    # the host still has everything the pod could not reach
    assert all(f.read_text() == token for f in files)

    async def finished() -> str:
        phase = str(((await get_pod(kclient, "attack", ns)) or {}).get("status", {}).get("phase", ""))
        return phase if phase in ("Succeeded", "Failed") else ""

    assert await wait_for(finished, "the attack pod to finish") == "Succeeded"


async def test_run_as_user_reads_its_secret_and_token_and_probes_run_as_it(
    kclient: Client, local_node: str, ns: str, agent: AgentProcess
) -> None:
    planted = "s3cret-" + uuid.uuid4().hex[:8]
    secret_data = {"token": base64.b64encode(planted.encode()).decode()}
    await kclient.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mine", "namespace": ns},
            "data": secret_data,
        }
    )
    # the token request needs the namespace's default ServiceAccount (kube-controller-manager's)
    await wait_for(lambda: _exists(kclient, SERVICE_ACCOUNT, "default", ns), "the default ServiceAccount")
    script = (
        'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"; '
        'test "$(cat /mnt/sec/token)" = "$WANT" && echo secret-read; '
        "test -s /var/run/secrets/tokens/token && echo token-read; "
        "grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; "
        "touch /root/x 2>/dev/null || echo root-folder-not-writable; echo started; exec sleep 300"
    )
    as_pod = "test $(id -u) = 1000 && grep -q '^CapEff:.0\\{16\\}' /proc/self/status"
    probe = {"exec": {"command": ["sh", "-c", as_pod]}, "periodSeconds": 1}
    container = {
        "command": ["sh", "-c", script],
        "env": [{"name": "WANT", "value": planted}],
        "readinessProbe": probe,
        "volumeMounts": [
            {"name": "sec", "mountPath": "/mnt/sec", "readOnly": True},
            {"name": "tok", "mountPath": "/var/run/secrets/tokens", "readOnly": True},
        ],
    }
    volumes = [
        {"name": "sec", "secret": {"secretName": "mine"}},
        {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
    ]
    pod = pod_manifest(
        "runas", local_node, container, volumes=volumes,
        securityContext={"runAsUser": 1000, "runAsNonRoot": True, "supplementalGroups": [4000]},
    )  # fmt: skip
    pod["metadata"]["namespace"] = ns
    await kclient.create(pod)
    log = await _log(kclient, agent, ns, "runas", "started")
    try:  # no runAsGroup: the user's group in the image's (this host's) /etc/passwd, else 0
        gid = pwd.getpwuid(1000).pw_gid
    except KeyError:
        gid = 0
    assert f"uid=1000 gid={gid} groups={gid} 4000" in log, log
    assert "secret-read" in log and "token-read" in log, log
    assert "CapEff:\t0000000000000000" in log and "NoNewPrivs:\t1" in log, log
    assert "root-folder-not-writable" in log, log

    async def ready() -> bool:
        return bool(container_status(await get_pod(kclient, "runas", ns)).get("ready"))

    await wait_for(ready, "the exec probe (as uid 1000, no capability) to pass", timeout=60)
    pod_dir = next((agent.state_dir / "pods").glob(f"{ns}_runas_*"))
    for name in ("sec", "tok"):
        folder = pod_dir / "volumes" / name
        token = folder / "token"
        assert (folder.stat().st_uid, token.stat().st_uid) == (1000, 1000), name
        assert (folder.stat().st_mode & 0o777, token.stat().st_mode & 0o777) == (0o700, 0o400), name
    assert (pod_dir.stat().st_uid, pod_dir.stat().st_mode & 0o777) == (0, 0o700)
    await kclient.delete(POD, "runas", ns)


async def _exists(kclient: Client, gvk: GVK, name: str, ns: str) -> bool:
    return any(o["metadata"]["name"] == name for o in await kclient.list(gvk, ns))


@pytest.mark.parametrize(
    ("security", "field"),
    [
        ({"runAsNonRoot": True}, "runAsNonRoot"),
        ({"privileged": True}, "securityContext.privileged"),
        ({"capabilities": {"add": ["SYS_ADMIN"]}}, "securityContext.capabilities.add: SYS_ADMIN"),
    ],
)
async def test_what_the_node_cannot_give_is_refused_naming_the_field(
    kclient: Client, local_node: str, ns: str, security: dict[str, Any], field: str
) -> None:
    container = {"command": ["sh", "-c", "echo should-not-run; sleep 300"], "securityContext": security}
    pod = pod_manifest("refused", local_node, container)
    pod["metadata"]["namespace"] = ns
    await kclient.create(pod)

    async def refused() -> dict[str, Any]:
        state = container_status(await get_pod(kclient, "refused", ns)).get("state") or {}
        waiting = state.get("waiting") or {}
        return dict(waiting) if waiting.get("reason") == "CreateContainerConfigError" else {}

    waiting = await wait_for(refused, "CreateContainerConfigError", timeout=60)
    assert field in waiting["message"], waiting
    assert "refused_" + ns in waiting["message"], waiting  # the kubelet's pod name_namespace(uid)
    await kclient.delete(POD, "refused", ns)
