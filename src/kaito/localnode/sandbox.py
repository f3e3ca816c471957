"""Pod sandboxes from plain Linux tools: a network namespace per pod, and per container a mount,
PID and UTS namespace whose root is an overlay of the host's.

Why these choices:
- The pod's network namespace is pinned by a tiny ``unshare --net sleep`` process (Kubernetes'
  pause container) rather than ``ip netns add``: a bind-mounted netns outlives a killed agent,
  a pinned one vanishes with its last process, and the veth pair with it.
- Addresses come from 198.18.123.0/24, inside the range RFC 2544 reserves for benchmarking
  (never routed on the internet). Link-local or loopback would be simpler, but EndpointSlice
  validation rejects both, and Services must list these pods. Each pod gets a /32 route over
  its veth; the rest of the /24 is an ``unreachable`` route on the host, and pods have no
  default route: nothing addressed to a pod leaves this machine.
- Each container's root is an overlay of ``/`` with a tmpfs upper layer, so volumes can appear at
  any path (``/mnt/config``, ``/workspace/model``) without writing to the host's tree.
- ``unshare --pid --fork --kill-child`` makes the container's main process PID 1 of its own
  namespace: when it ends, the kernel ends every process it started (vLLM's engine workers too),
  and when the agent dies, PR_SET_PDEATHSIG ends ``unshare`` and so the whole namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

NETWORK = ipaddress.ip_network("198.18.123.0/24")
#: The host end of every veth (the same /32 on each, routes are per pod).
GATEWAY = str(NETWORK.network_address + 1)
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:  # pragma: no cover - forked child
    """preexec_fn: the child gets ``sig`` when the agent's thread that started it ends."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig)
    os.setsid()


class SandboxError(RuntimeError):
    """A namespace or link could not be set up; the message names the step."""


class AddressTaken(SandboxError):
    """Another agent on this machine routed the same pod address between our check and our route:
    the host's route table is the only lock two `kaito local` agents share, so the loser retries."""


async def _arun(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SandboxError(f"`{' '.join(argv)}` failed: {err.decode(errors='replace').strip()}")


def _routed_hosts() -> set[str]:
    done = subprocess.run(
        ["ip", "-o", "route", "show", "root", str(NETWORK)], capture_output=True, text=True, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line and not line.startswith("unreachable")]
    return {line.split()[0] for line in lines}


async def guard_network() -> None:
    """The host's ``unreachable`` route for NETWORK (pod /32 routes are more specific), so a
    stale pod address never falls through to the default route."""
    with contextlib.suppress(SandboxError):
        await _arun("ip", "route", "replace", "unreachable", str(NETWORK))


async def unguard_network() -> None:
    with contextlib.suppress(SandboxError):
        await _arun("ip", "route", "del", "unreachable", str(NETWORK))


class AddressPool:
    """Pod IPs from NETWORK, handed out lowest first and given back when a pod ends."""

    def __init__(self) -> None:
        self._free = [str(h) for h in list(NETWORK.hosts())[1:]]
        self._used: set[str] = set()

    def take(self) -> str:
        routed = _routed_hosts()  # another agent on this machine (a second `kaito local`)
        for ip in self._free:
            if ip not in self._used and ip not in routed:
                self._used.add(ip)
                return ip
        raise SandboxError(f"no free pod address left in {NETWORK}")

    def give_back(self, ip: str) -> None:
        self._used.discard(ip)


@dataclass
class PodNetwork:
    """One pod's network namespace, pinned by ``pause``; ``ip`` is its eth0 address."""

    ip: str
    link: str
    pause: asyncio.subprocess.Process | None = None

    @property
    def netns(self) -> str:
        assert self.pause is not None
        return f"/proc/{self.pause.pid}/ns/net"

    @classmethod
    async def create(cls, ip: str, link: str) -> PodNetwork:
        """Started from the event loop's thread: PR_SET_PDEATHSIG follows the creating thread."""
        net = cls(ip=ip, link=link)
        net.pause = await asyncio.create_subprocess_exec(
            "unshare",
            "--net",
            "sleep",
            "infinity",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        try:
            pid = str(net.pause.pid)
            # wait until the child is in its own namespace before moving the peer there
            for _ in range(500):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                        break
                await asyncio.sleep(0.01)
            await _arun("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", pid)
            await _arun("ip", "addr", "add", f"{GATEWAY}/32", "dev", link)
            await _arun("ip", "link", "set", link, "up")
            try:
                await _arun("ip", "route", "add", f"{ip}/32", "dev", link)
            except SandboxError as exc:
                if "File exists" in str(exc):
                    msg = f"pod address {ip} is routed by another agent on this machine"
                    raise AddressTaken(msg) from exc
                raise
            inside = ("nsenter", "-t", pid, "-n", "ip")
            await _arun(*inside, "link", "set", "lo", "up")
            await _arun(*inside, "addr", "add", f"{ip}/32", "dev", "eth0")
            await _arun(*inside, "link", "set", "eth0", "up")
            await _arun(*inside, "route", "add", f"{GATEWAY}/32", "dev", "eth0")
        except Exception:
            await net.destroy()
            raise
        return net

    async def destroy(self) -> None:
        """Ending the pause process frees the namespace once the pod's processes are gone; the
        kernel then deletes both veth ends. The explicit delete covers a still-busy namespace."""
        if self.pause is not None and self.pause.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.pause.kill()
            await self.pause.wait()
        with contextlib.suppress(SandboxError):
            await _arun("ip", "link", "del", self.link)


@dataclass
class ContainerSpec:
    """What ``python -m kaito.localnode.sandbox SPEC`` sets up inside the new namespaces."""

    argv: list[str]
    env: dict[str, str]
    scratch: str
    hostname: str
    workdir: str = "/"
    #: (host path, container path, read-only)
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)
    #: host paths bound at the same place (caches shared across restarts, e.g. ~/.cache)
    shared: list[str] = field(default_factory=list)


def launch_argv(netns: str, spec_file: Path) -> list[str]:
    """Join the pod's network namespace, then new mount, PID and UTS namespaces, then the spec."""
    return [
        "nsenter",
        f"--net={netns}",
        "--",
        "unshare",
        "--mount",
        "--uts",
        "--pid",
        "--fork",
        "--kill-child=SIGKILL",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-m",
        "kaito.localnode.sandbox",
        str(spec_file),
    ]


def write_spec(spec: ContainerSpec, path: Path) -> None:
    """The container's spec for its launcher, readable by the agent's user only (0600): its env
    holds the values of the Secrets the pod names (``secretKeyRef``, ``envFrom``)."""
    write_private(path, json.dumps(spec.__dict__).encode(), 0o600)


def write_private(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode``, never readable by others on the way: the file is
    created with ``mode`` (not the umask's 0644 and a chmod after, which leaves a window). A file
    (or a symlink) already there is removed first, so a read-only 0400 file can be rewritten when
    a volume is set up again, and a link cannot send the bytes elsewhere."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def container_pid(unshare_pid: int) -> int | None:
    """The container's PID 1 (the forked child of ``unshare``), as the host numbers it."""
    with contextlib.suppress(OSError, ValueError):
        for task in os.listdir(f"/proc/{unshare_pid}/task"):
            children = Path(f"/proc/{unshare_pid}/task/{task}/children").read_text().split()
            if children:
                return int(children[0])
    return None


async def run_in(pid: int, argv: list[str], env: dict[str, str], timeout: float) -> int:  # noqa: ASYNC109
    """Run ``argv`` in the namespaces and root of the container whose PID 1 is ``pid``."""
    proc = await asyncio.create_subprocess_exec(
        "nsenter",
        "-t",
        str(pid),
        "-m",
        "-n",
        "-p",
        "-u",
        "-r",
        "-w",
        "--",
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SandboxError(f"mount {' '.join(args)}: {done.stderr.strip()}")


def _enter(spec: ContainerSpec) -> None:  # pragma: no cover - runs as the container's PID 1
    scratch = Path(spec.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(scratch))
    root, upper, work = scratch / "root", scratch / "upper", scratch / "work"
    for d in (root, upper, work):
        d.mkdir()
    _mount("-t", "overlay", "overlay", "-o", f"lowerdir=/,upperdir={upper},workdir={work}", str(root))
    _mount("-t", "proc", "proc", str(root / "proc"))
    for host in ("/sys", "/dev"):
        _mount("--rbind", host, str(root / host.lstrip("/")))
    _mount("-t", "tmpfs", "-o", "mode=1777", "tmpfs", str(root / "tmp"))
    for host in spec.shared:
        if Path(host).is_dir():
            target = root / host.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            _mount("--rbind", host, str(target))
    for src, dst, ro in spec.mounts:
        target = root / dst.lstrip("/")
        if Path(src).is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        _mount("--bind", src, str(target))
        if ro:
            _mount("-o", "remount,bind,ro", str(target))
    socket.sethostname(spec.hostname)
    os.chroot(root)
    os.chdir(spec.workdir or "/")


def main(argv: list[str]) -> int:  # pragma: no cover - runs as the container's PID 1
    spec = ContainerSpec(**json.loads(Path(argv[0]).read_text()))
    try:
        _enter(spec)
    except Exception as exc:
        print(f"kaito local node: container setup failed: {exc}", file=sys.stderr, flush=True)
        return 128
    path = spec.env.get("PATH", "/usr/bin:/bin")
    try:
        os.execvpe(spec.argv[0], spec.argv, {**spec.env, "PATH": path})
    except OSError as exc:
        # what runc says for a missing executable, and its exit code
        print(
            f'exec: "{spec.argv[0]}": {exc.strerror}: executable file not found in $PATH',
            file=sys.stderr,
            flush=True,
        )
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
