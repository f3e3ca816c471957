"""Control-plane binaries for the Python envtest: find them, or build them from Go modules.

Why build at all: this project must run on machines that reach a Go module proxy but no release
download site and no Docker engine. Every control-plane program (etcd, kube-apiserver, ...) is a
Go ``main`` package, so ``go build`` against a tiny wrapper module produces the real thing.

``k8s.io/kubernetes`` cannot be ``go install``-ed directly: its go.mod replaces every
``k8s.io/<staging>`` module with a path inside the repository, and replace directives of a
dependency are ignored.  The wrapper module therefore re-states those replaces, pointing each
staging module at its published ``v0.<minor>.<patch>`` tag.  etcd's server module has the same
problem with its sibling modules.

Lookup order (first hit wins):

1. ``KUBEBUILDER_ASSETS`` -- the envtest convention; every binary must be there.
2. ``KAITO_ASSETS`` or ``~/.cache/kaito/assets/<versions>/`` -- our own cache.
3. Build into that cache with the local Go toolchain (only when building is allowed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "1.37.2"
ETCD_VERSION = "3.7.3"
KWOK_VERSION = "0.8.0"
#: Its go.mod asks for Go 1.26 and the k8s.io v0.37 modules, the ones the node's programs use.
COREDNS_VERSION = "1.15.0"
GO_DIRECTIVE = "1.26.0"

CONTROL_PLANE = ("etcd", "kube-apiserver")
ALL_BINARIES = (
    "etcd",
    "etcdctl",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)

#: A real node's programs (``kaito local up --node real``): built on demand only, so a machine
#: that never runs a real node never pays their build (about 13 minutes of CPU cold).
NODE_BINARIES = ("kubelet", "kube-proxy")

#: The real node's cluster DNS, built on demand like the node's programs. Optional: a node whose
#: CoreDNS cannot be built still runs, without cluster DNS.
DNS_BINARIES = ("coredns",)

#: CoreDNS's plugins a cluster's DNS needs, in the execution order of CoreDNS's own
#: ``plugin.cfg`` (a plugin only sees the queries the ones before it pass on). The upstream
#: ``coredns`` main links every plugin, cloud DNS clients included; this list keeps the build to
#: what a Corefile for ``cluster.local`` can use.
COREDNS_PLUGINS = (
    "reload",
    "ready",
    "health",
    "errors",
    "log",
    "loadbalance",
    "cache",
    "kubernetes",
    "loop",
    "forward",
    "whoami",
)

Progress = Callable[[str], None]


class AssetsError(RuntimeError):
    """A binary is missing or cannot be built; the message says what to do, on one line."""


@dataclass(frozen=True)
class _Component:
    name: str
    module: str
    version: str
    packages: dict[str, str]  # binary name -> Go package
    ldflags: str = ""
    #: A ``main.go`` for the wrapper module itself (then a package is ``.``): for a program
    #: whose upstream main links more than we want.
    main_source: str = ""
    #: Extra ``require`` lines (``module version``): raise shared dependencies to the versions
    #: the other programs already use, so the module and build caches serve them.
    pins: tuple[str, ...] = ()


def versions_tag() -> str:
    return f"k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}"


def cache_root() -> Path:
    env = os.environ.get("KAITO_ASSETS")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaito" / "assets"


def cache_dir() -> Path:
    """Where our own build puts the binaries: one folder per version set."""
    root = cache_root()
    # KAITO_ASSETS may point straight at a folder of binaries.
    if os.environ.get("KAITO_ASSETS") and (root / "kube-apiserver").exists():
        return root
    return root / versions_tag()


def _missing(folder: Path, names: Sequence[str]) -> list[str]:
    return [n for n in names if not os.access(folder / n, os.X_OK)]


def find_assets(required: Sequence[str] = ALL_BINARIES) -> Path | None:
    """Return a folder holding every ``required`` binary, or None when only a build would do.

    Raises AssetsError when ``KUBEBUILDER_ASSETS`` is set but wrong: a user who set it means it,
    and silently building something else would hide the mistake.
    """
    kb = os.environ.get("KUBEBUILDER_ASSETS")
    if kb:
        folder = Path(kb).expanduser()
        if not folder.is_dir():
            raise AssetsError(
                f"KUBEBUILDER_ASSETS={kb} is not a directory; point it at a folder holding "
                f"{', '.join(required)} or unset it to let kaito build them"
            )
        missing = _missing(folder, required)
        if missing:
            raise AssetsError(
                f"KUBEBUILDER_ASSETS={kb} lacks {', '.join(missing)}; add them there "
                "or unset KUBEBUILDER_ASSETS to let kaito build them with Go"
            )
        return folder
    folder = cache_dir()
    if not _missing(folder, required):
        return folder
    return None


def ensure_assets(
    required: Sequence[str] = ALL_BINARIES,
    *,
    build: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Find the binaries or build the missing ones; idempotent and resumable."""
    found = find_assets(required)
    if found is not None:
        return found
    target = cache_dir()
    if not build:
        raise AssetsError(
            f"control-plane binaries missing in {target}; run `kaito local assets` "
            "or set KUBEBUILDER_ASSETS to a folder holding them"
        )
    build_assets(target, required, progress=progress)
    return target


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise AssetsError(
            "no Go toolchain on PATH to build the control plane; install Go >= "
            f"{GO_DIRECTIVE} or set KUBEBUILDER_ASSETS to a folder holding {', '.join(ALL_BINARIES)}"
        )
    return go


def _run(cmd: Sequence[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise AssetsError(
            f"`{' '.join(cmd)}` failed in {cwd}: " + " | ".join(tail)
            + " -- fix the Go environment or set KUBEBUILDER_ASSETS"
        )
    return proc.stdout


def _version_ldflags() -> str:
    major, minor, _ = K8S_VERSION.split(".")
    pairs = {
        "gitVersion": f"v{K8S_VERSION}",
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in pairs.items()]
    return " ".join(["-s", "-w", *flags])


def _components() -> list[_Component]:
    return [
        _Component(
            "etcd",
            "go.etcd.io/etcd/server/v3",
            f"v{ETCD_VERSION}",
            {"etcd": "go.etcd.io/etcd/server/v3"},
            "-s -w",
        ),
        _Component(
            "etcdctl",
            "go.etcd.io/etcd/etcdctl/v3",
            f"v{ETCD_VERSION}",
            {"etcdctl": "go.etcd.io/etcd/etcdctl/v3"},
            "-s -w",
        ),
        _Component(
            "kubernetes",
            "k8s.io/kubernetes",
            f"v{K8S_VERSION}",
            {
                "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
                "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
                "kubectl": "k8s.io/kubernetes/cmd/kubectl",
                "kubelet": "k8s.io/kubernetes/cmd/kubelet",
                "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
            },
            _version_ldflags(),
        ),
        _Component(
            "coredns",
            "github.com/coredns/coredns",
            f"v{COREDNS_VERSION}",
            {"coredns": "."},
            "-s -w",
            main_source=_coredns_main(),
            pins=tuple(f"k8s.io/{m} {_k8s_staging_tag()}" for m in ("api", "apimachinery", "client-go")),
        ),
        _Component(
            "kwok",
            "sigs.k8s.io/kwok",
            f"v{KWOK_VERSION}",
            {"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
            f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v{KWOK_VERSION}",
        ),
    ]


def _coredns_main() -> str:
    """The wrapper's ``main.go``: coremain with :data:`COREDNS_PLUGINS` linked in and set as the
    server's directives (``dnsserver.SetDirectives``), instead of CoreDNS's generated full list."""
    imports = "\n".join(f'\t_ "github.com/coredns/coredns/plugin/{p}"' for p in sorted(COREDNS_PLUGINS))
    order = ", ".join(f'"{p}"' for p in COREDNS_PLUGINS)
    return f"""// Generated by kaito.envtest.assets: CoreDNS with only the plugins a cluster's DNS needs.
package main

import (
\t"fmt"
\t"os"

\t"github.com/coredns/coredns/core/dnsserver"
\t"github.com/coredns/coredns/coremain"

{imports}
)

func main() {{
\tif err := dnsserver.SetDirectives([]string{{{order}}}); err != nil {{
\t\tfmt.Fprintln(os.Stderr, err)
\t\tos.Exit(2)
\t}}
\tcoremain.Run()
}}
"""


_REPLACE_BLOCK = re.compile(r"^replace \($(.*?)^\)$", re.M | re.S)


def _relative_replaces(gomod: str) -> list[str]:
    """Modules a go.mod replaces with a local path: the ones we must pin to published tags."""
    block = _REPLACE_BLOCK.search(gomod)
    lines = block.group(1).splitlines() if block else []
    lines += [m.group(1) for m in re.finditer(r"^replace (.+)$", gomod, re.M) if "(" not in m.group(1)]
    out = []
    for line in lines:
        parts = line.split("=>")
        if len(parts) == 2 and parts[1].strip().startswith("."):
            out.append(parts[0].split()[0])
    return out


def _k8s_staging_tag() -> str:
    """The tag of the ``k8s.io/<staging>`` modules published with ``K8S_VERSION``."""
    _, minor, patch = K8S_VERSION.split(".")
    return f"v0.{minor}.{patch}"


def _staging_version(module: str, main: _Component) -> str:
    if main.module == "k8s.io/kubernetes":
        return _k8s_staging_tag()
    return main.version  # etcd's sibling modules share its tag


def _wrapper_gomod(comp: _Component, go: str, workdir: Path, env: dict[str, str]) -> str:
    info = json.loads(_run([go, "mod", "download", "-json", f"{comp.module}@{comp.version}"], workdir, env))
    upstream = Path(info["GoMod"]).read_text()
    replaces = [m for m in _relative_replaces(upstream) if m != comp.module]
    lines = [f"module kaito.local/assets/{comp.name}", "", f"go {GO_DIRECTIVE}", ""]
    lines.append(f"require {comp.module} {comp.version}")
    lines += [f"require {pin}" for pin in comp.pins]
    if replaces:
        lines += ["", "replace ("]
        lines += [f"\t{m} => {m} {_staging_version(m, comp)}" for m in replaces]
        lines.append(")")
    return "\n".join(lines) + "\n"


def build_assets(
    target: Path,
    required: Sequence[str] = ALL_BINARIES,
    *,
    progress: Progress | None = None,
) -> None:
    """Build every missing binary into ``target``; finished binaries are never rebuilt."""
    say = progress or (lambda _msg: None)
    go = _go()
    target.mkdir(parents=True, exist_ok=True)
    work_root = target.parent / "build"
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0", GOTOOLCHAIN="local")
    started = time.monotonic()
    missing = _missing(target, required)
    if missing:
        # Said once, before the wait: a first run otherwise looks hung for many minutes.
        say(
            f"building {', '.join(missing)} from their Go modules into {target}: a cold build takes "
            f"minutes with {os.cpu_count() or 1} cores (measured on 2 shared cores: kubelet 13 min, "
            "CoreDNS 86 s with kubelet's packages cached); later runs find them in the cache"
        )
    for comp in _components():
        wanted = [b for b in comp.packages if b in required and _missing(target, [b])]
        if not wanted:
            continue
        workdir = work_root / comp.name
        workdir.mkdir(parents=True, exist_ok=True)
        say(f"[{time.monotonic() - started:5.0f}s] resolving {comp.module}@{comp.version}")
        gomod = _wrapper_gomod(comp, go, workdir, env)
        stamp = workdir / "wrapper.mod"
        if not stamp.exists() or stamp.read_text() != gomod:
            (workdir / "go.mod").write_text(gomod)
            (workdir / "go.sum").unlink(missing_ok=True)
            _run([go, "get", f"{comp.module}@{comp.version}"], workdir, env)
            stamp.write_text(gomod)
        if comp.main_source:
            (workdir / "main.go").write_text(comp.main_source)
        for b in wanted:
            say(f"[{time.monotonic() - started:5.0f}s] building {b} (go build; cached between runs)")
            tmp = target / f".{b}.partial"
            cmd = [go, "build", "-trimpath", "-ldflags", comp.ldflags, "-o", str(tmp), comp.packages[b]]
            _run(cmd, workdir, env)
            os.replace(tmp, target / b)
        say(f"[{time.monotonic() - started:5.0f}s] done {', '.join(wanted)}")
    missing = _missing(target, required)
    if missing:
        raise AssetsError(f"build finished but {', '.join(missing)} is missing in {target}")
