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
  any path (``/mnt/config``, ``/workspace/model``) without writing to the host's tree; of the
  host it shows only what an image would bring (see ``_enter``), and the process then runs
  without any capability (see ``_drop_privileges``): the agent is root, its pods are not.
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
import platform
import signal
import socket
import stat
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

    @property
    def ipcns(self) -> str:
        """The pod's IPC namespace (System V shared memory, message queues), shared by its
        containers as in a real pod and apart from the host's."""
        assert self.pause is not None
        return f"/proc/{self.pause.pid}/ns/ipc"

    @classmethod
    async def create(cls, ip: str, link: str) -> PodNetwork:
        """Started from the event loop's thread: PR_SET_PDEATHSIG follows the creating thread."""
        net = cls(ip=ip, link=link)
        net.pause = await asyncio.create_subprocess_exec(
            "unshare",
            "--net",
            "--ipc",
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
    #: host paths bound read-write at the same place (caches shared across restarts)
    shared: list[str] = field(default_factory=list)
    #: host paths the image's files come from (its interpreter, the checkout's src), bound
    #: read-only at the same place into a root that otherwise hides the host's own folders
    image_paths: list[str] = field(default_factory=list)
    #: the pod's /dev/shm (a host folder shared by its containers); "" for a private tmpfs
    shm: str = ""
    #: the process's user, group and supplementary groups (securityContext, else root)
    user: int = 0
    group: int = 0
    groups: list[int] = field(default_factory=list)
    #: capability numbers the container keeps (securityContext.capabilities.add); none by default
    capabilities: list[int] = field(default_factory=list)
    read_only_root: bool = False


def launch_argv(netns: str, ipcns: str, spec_file: Path) -> list[str]:
    """Join the pod's network and IPC namespaces, then new mount, PID and UTS namespaces, then
    the spec."""
    return [
        "nsenter",
        f"--net={netns}",
        f"--ipc={ipcns}",
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


def unprivileged_argv(user: int, group: int, groups: list[int], argv: list[str]) -> list[str]:
    """``argv`` run by util-linux's setpriv as the container's own process is: its user and
    groups, no capability in any set, no_new_privs. For exec probes, which nsenter starts as the
    agent's root inside the container; setpriv is found in the container's /usr, the host's."""
    group_opt = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    return [
        "setpriv", f"--reuid={user}", f"--regid={group}", group_opt, "--inh-caps=-all",
        "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *argv,
    ]  # fmt: skip


async def run_in(pid: int, argv: list[str], env: dict[str, str], timeout: float) -> int:  # noqa: ASYNC109
    """Run ``argv`` (see unprivileged_argv) in the namespaces and root of the container whose
    PID 1 is ``pid``."""
    proc = await asyncio.create_subprocess_exec(
        "nsenter",
        "-t",
        str(pid),
        "-m",
        "-n",
        "-i",
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


# ----- inside the container (runs as the container's PID 1 until it execs the command)
#
# Why a root built like this: the container's files are this host's (the images are its
# interpreters), so the root is an overlay of the host's root filesystem, but only the parts an
# image would bring stay visible: the system's programs and libraries and /etc, less what only
# root may read there (/etc/shadow, SSH host keys, kubeconfigs). Every other top-level folder
# (/root, /home, /var, /opt, /work, ...) is an empty tmpfs, into which the image's own folders
# (its interpreter, the checkout's src, the shared caches) and the pod's volumes are bound back.
# Host paths are opened before pivot_root and bound from their descriptors afterwards, so every
# mount target resolves inside the container's tree (a symlink there cannot point a bind at the
# host's). Then the process gives up root's powers before exec: no capability in any set,
# no_new_privs, the pod's user and groups.

_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MNT_DETACH = 0x2
_PR_SET_KEEPCAPS = 8
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522
#: pivot_root has no libc wrapper; its syscall number per architecture
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
#: The host's top-level folders a container sees (through the overlay): programs, libraries,
#: /etc. Anything else at the top of the host's root is hidden (an allowlist, so a folder added
#: to the host later, say /srv/backups, is hidden too).
IMAGE_DIRS = frozenset({"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc"})
#: mounted by the sandbox itself: the container's own proc, sys, dev, tmp and run
_OWN_DIRS = frozenset({"proc", "sys", "dev", "tmp", "run"})
#: /proc entries the kernel lets uid 0 write without a capability check: read-only
_PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
#: /proc entries readable by all that still describe the host (kernel keys, timers): hidden
_PROC_HIDDEN = ("keys", "timer_list", "sched_debug", "acpi", "scsi")
#: /dev: the nodes a container gets (major, minor), all 0666
_DEVICES = {
    "null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0),
}  # fmt: skip
#: capabilities a container may add (securityContext.capabilities.add): the pod's own network
#: namespace is the only thing NET_BIND_SERVICE reaches
GRANTABLE_CAPABILITIES = {"NET_BIND_SERVICE": 10}


_LIBC: list[ctypes.CDLL] = []


def _libc() -> ctypes.CDLL:
    """libc with the prototypes used here, loaded once (before pivot_root: no file to find after)."""
    if _LIBC:
        return _LIBC[0]
    libc = ctypes.CDLL(None, use_errno=True)
    _LIBC.append(libc)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise SandboxError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    rc = _libc().mount(enc(source), target.encode(), enc(fstype), flags, enc(data))
    _check(rc, f"mount {fstype or 'bind'} {source or ''} on {target}")


def _bind(source: str, target: str, *, read_only: bool) -> None:
    """Bind ``source`` at ``target``, never with devices or set-uid programs (a hostPath of /dev
    would otherwise hand out the host's disks: opening a device node needs no capability)."""
    _mount(source, target, None, _MS_BIND)
    flags = _MS_REMOUNT | _MS_BIND | _MS_NOSUID | _MS_NODEV | (_MS_RDONLY if read_only else 0)
    _mount(None, target, None, flags)


def _hide(path: str) -> None:
    """Hide ``path`` (a folder: an empty read-only tmpfs; a proc file: /dev/null over it)."""
    if os.path.isdir(path):
        _mount("tmpfs", path, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "mode=0755")
    else:
        _mount("/dev/null", path, None, _MS_BIND)


def _others_can_read(st: os.stat_result) -> bool:
    need = 0o005 if stat.S_ISDIR(st.st_mode) else 0o004
    return st.st_mode & need == need


def _hide_root_only_files(top: str) -> None:
    """Remove from the overlay every file under ``top`` that other users may not read, and hide
    such folders: the container's uid 0 has no capability, but it still owns what root owns."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in list(dirnames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) and not _others_can_read(st):
                _hide(path)
                dirnames.remove(name)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and not _others_can_read(st):
                os.unlink(path)  # a whiteout in the overlay's upper layer: gone, not just empty


#: where the host's root sits inside the container while its folders are bound from it
_OLD_ROOT = "/.kaito-host"


def _pivot_root(root: Path) -> None:
    """Make ``root`` the mount namespace's root, the host's at _OLD_ROOT until _detach_host:
    unlike chroot, nothing of the host's tree stays reachable (or listed in mountinfo) after."""
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise SandboxError(f"pivot_root: no syscall number known for {platform.machine()}")
    os.chdir(root)
    os.mkdir(_OLD_ROOT.lstrip("/"), 0o700)
    _check(_libc().syscall(number, b".", _OLD_ROOT.lstrip("/").encode()), "pivot_root")
    os.chdir("/")


def _detach_host() -> None:
    _check(_libc().umount2(_OLD_ROOT.encode(), _MNT_DETACH), "detaching the host's root")
    os.rmdir(_OLD_ROOT)


def _make_dev(shm: str | None) -> None:
    """A small /dev of the container's own: the usual character devices, its own pty instance and
    the pod's /dev/shm; no host device is reachable from it."""
    _mount("tmpfs", "/dev", "tmpfs", _MS_NOSUID | _MS_NOEXEC, "mode=0755,size=1024k")
    for name, (major, minor) in _DEVICES.items():
        os.mknod(f"/dev/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(f"/dev/{name}", 0o666)
    os.mkdir("/dev/pts")
    _mount("devpts", "/dev/pts", "devpts", _MS_NOSUID | _MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", "/dev/ptmx")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/shm")
    if shm is None:
        _mount("tmpfs", "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777")
    else:
        _bind(shm, "/dev/shm", read_only=False)


def _harden_proc() -> None:
    for name in _PROC_READ_ONLY:
        path = f"/proc/{name}"
        if os.path.exists(path):
            _bind(path, path, read_only=True)
    for name in os.listdir("/proc"):
        path = f"/proc/{name}"
        st = os.lstat(path)
        if name in _PROC_READ_ONLY or stat.S_ISLNK(st.st_mode):
            continue
        if name in _PROC_HIDDEN or (stat.S_ISREG(st.st_mode) and not _others_can_read(st)):
            _hide(path)  # kcore, kmsg, kpage*, slabinfo...: root-only reads of the host's kernel


def _target(path: str, source_is_dir: bool) -> str:
    """``path`` inside the container, created as a folder or an empty file to bind over."""
    if source_is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    return path


def _open_source(path: str) -> tuple[int, bool]:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise SandboxError(f"mount {path}: {exc.strerror}") from None
    return fd, stat.S_ISDIR(os.fstat(fd).st_mode)


def _enter(spec: ContainerSpec) -> list[str]:  # pragma: no cover - runs as the container's PID 1
    """Build the container's root and enter it; returns the top-level folders it hid."""
    # (container path, read-only, host descriptor, is a folder): opened while the host is visible
    binds: list[tuple[str, bool, int, bool]] = []
    for host in spec.image_paths:
        real = os.path.realpath(host)
        for where in dict.fromkeys((host, real)):  # a symlinked venv: both spellings
            fd, is_dir = _open_source(real)
            binds.append((where, True, fd, is_dir))
    for host in spec.shared:
        fd, is_dir = _open_source(host)
        binds.append((host, False, fd, is_dir))
    for src, dst, ro in spec.mounts:
        fd, is_dir = _open_source(src)
        binds.append((dst, ro, fd, is_dir))
    shm_fd = _open_source(spec.shm)[0] if spec.shm else None
    _libc()
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    scratch = Path(spec.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    _mount("tmpfs", str(scratch), "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
    root, upper, work = scratch / "root", scratch / "upper", scratch / "work"
    for d in (root, upper, work):
        d.mkdir()
    layers = f"lowerdir=/,upperdir={upper},workdir={work}"
    _mount("overlay", str(root), "overlay", _MS_NOSUID | _MS_NODEV, layers)
    _pivot_root(root)
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    _make_dev(None if shm_fd is None else f"/proc/self/fd/{shm_fd}")
    _harden_proc()
    _mount("sysfs", "/sys", "sysfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777")
    _mount("tmpfs", "/run", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
    hidden = []
    for entry in os.scandir("/"):
        keep = entry.name in IMAGE_DIRS or entry.name in _OWN_DIRS or entry.path == _OLD_ROOT
        if keep or entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            _mount("tmpfs", entry.path, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
            hidden.append(entry.path)
        else:
            os.unlink(entry.path)  # a swap file, a marker: gone from the container's root
    os.makedirs("/var/tmp", mode=0o1777, exist_ok=True)
    os.chmod("/var/tmp", 0o1777)
    _hide_root_only_files("/etc")
    for where, ro, fd, is_dir in binds:
        _bind(f"/proc/self/fd/{fd}", _target(where, is_dir), read_only=ro)
        os.close(fd)
    if shm_fd is not None:
        os.close(shm_fd)
    _detach_host()
    socket.sethostname(spec.hostname)
    if spec.read_only_root:
        for path in ["/", *hidden]:
            _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    os.makedirs(spec.workdir or "/", exist_ok=True)
    os.chdir(spec.workdir or "/")
    _drop_privileges(spec.user, spec.group, spec.groups, spec.capabilities, last_cap)
    return hidden


def _prctl(option: int, arg: int = 0, arg3: int = 0) -> None:
    _check(_libc().prctl(option, arg, arg3, 0, 0), f"prctl({option}, {arg})")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _drop_privileges(uid: int, gid: int, groups: list[int], keep: list[int], last_cap: int) -> None:
    """Leave the process uid ``uid`` with only the capabilities in ``keep`` (none by default) in
    every set, bounding and ambient included, and no_new_privs, so neither exec nor a set-uid
    program can give any back. Order matters: the bounding set is emptied while the process
    still has CAP_SETPCAP, and the user changes last, with KEEPCAPS when something is kept."""
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    for cap in range(last_cap + 1):
        if not mask >> cap & 1:
            _prctl(_PR_CAPBSET_DROP, cap)
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    if mask:
        _prctl(_PR_SET_KEEPCAPS, 1)
    os.setresuid(uid, uid, uid)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = data[i].inheritable = word
    _check(_libc().capset(ctypes.byref(header), data), "capset")
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in keep:  # ambient: what a non-root user's exec keeps
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, cap)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)


def main(argv: list[str]) -> int:  # pragma: no cover - runs as the container's PID 1
    spec = ContainerSpec(**json.loads(Path(argv[0]).read_text()))
    try:
        _enter(spec)
    except Exception as exc:
        print(f"kaito local node: container setup failed: {exc}", file=sys.stderr, flush=True)
        return 128
    os.umask(0o022)
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
