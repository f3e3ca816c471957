"""What an image means on the local node: which interpreter runs it and which files it brings.

A real node pulls layers; the local node has no container runtime, so only images whose contents
this project already holds can run: kaito's inference and tuning images are this checkout's
``.venv-inference`` interpreters, plus the model weights the image would carry (a local copy, or a
labelled random-weight stand-in). An image in a registry on this machine's loopback (the local
registry of hack/registry.sh, where tuning pushes adapters) is pulled by kaito's own tuning
program (``python -m kaito.tuning pull``) and its ``/data`` files are bind-mounted at ``/data``,
so the adapter init container's ``cp -r /data/. ...`` finds them. Any other image fails the pod
like an unpullable image does, with the image named, never a silent success.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kaito.contract.pod import DEFAULT_MODEL_DIR, IMAGE_ADAPTER_DIR

#: Image repositories (tag ignored) whose programs this checkout holds.
KAITO_REPOSITORIES = (
    "ghcr.io/kaito-project/kaito/inference",
    "ghcr.io/kaito-project/kaito/tuning",
)
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: vLLM on a small CPU machine, offline: what kaito's CPU image would set in its ENV.
_CPU_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "OMP_NUM_THREADS": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


class ImagePullError(Exception):
    """The image cannot run here; the message is the kubelet-style one the pod status shows."""


@dataclass
class ImagePlan:
    """An image resolved to this machine: its ENV, files mounted into the root, entrypoint."""

    image: str
    env: dict[str, str] = field(default_factory=dict)
    #: (host path, container path, read-only)
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    #: a note for every surface when the weights are a stand-in ("" for real weights)
    standin: str = ""
    #: the image's files come from the local registry (``ImageResolver.pull`` fetches them)
    pull: bool = False
    #: host folders that hold the image's programs (its interpreter and what it imports); the
    #: container sees them read-only, and of the host's own folders only /usr, /etc and the like
    paths: list[str] = field(default_factory=list)


def repository(image: str) -> str:
    """``host/path/name`` without ``:tag`` or ``@digest``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


#: Registry hosts that are this machine (the only registries the local node pulls from).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def registry_host(image: str) -> str | None:
    first, sep, _ = image.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return None  # a Docker Hub short name
    return first


def is_local_registry(image: str) -> bool:
    host = registry_host(image)
    if host is None:
        return False
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in LOOPBACK_HOSTS


def interpreter_paths(venv: Path) -> list[str]:
    """The folders a venv's python needs: the venv, the installation it was made from (pyvenv.cfg's
    ``home``, e.g. under ~/.pyenv) and the folders its .pth files add (an editable install's src)."""
    paths = [str(venv)]
    with contextlib.suppress(OSError):
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                paths.append(str(Path(value.strip()).parent))  # .../versions/3.11.7/bin -> its prefix
    for pth in sorted(venv.glob("lib/python*/site-packages/*.pth")):
        with contextlib.suppress(OSError):
            for line in pth.read_text().splitlines():
                entry = line.strip()
                if entry.startswith("/") and Path(entry).is_dir():
                    paths.append(entry)
    return list(dict.fromkeys(paths))


def _preset_of(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return None


@dataclass
class ImageResolver:
    """Maps images to this checkout; ``model_root`` holds real weights as ``<preset>/``."""

    venv: Path
    model_root: Path | None
    standin_dir: Path
    #: the local registry's CA (hack/registry.sh's REGISTRY_CA); None: the system's
    registry_ca: str | None = None

    def resolve(self, image: str, argv: list[str]) -> ImagePlan:
        repo = repository(image)
        if repo not in KAITO_REPOSITORIES and is_local_registry(image):
            return ImagePlan(image=image, env={"PATH": _SYSTEM_PATH, "HOME": "/root"}, pull=True)
        if repo not in KAITO_REPOSITORIES:
            raise ImagePullError(
                f'Failed to pull image "{image}": the local node runs only kaito\'s own images '
                f"({', '.join(KAITO_REPOSITORIES)}); {repo} is not one of them"
            )
        if not (self.venv / "bin" / "python").exists():
            raise ImagePullError(
                f'Failed to pull image "{image}": its interpreter {self.venv}/bin/python is missing; '
                "run `make inference-venv`"
            )
        plan = ImagePlan(
            image=image,
            env={
                **_CPU_ENV,
                "PATH": f"{self.venv}/bin:{_SYSTEM_PATH}",
                "HOME": os.environ.get("HOME", "/root"),
            },
            entrypoint=["python", "-m", "kaito." + repo.rsplit("/", 1)[1]],
            paths=interpreter_paths(self.venv),
        )
        preset = _preset_of(argv)
        if repo.endswith("/inference") and preset:
            local = self.model_root / preset if self.model_root else None
            if local is not None and (local / "config.json").exists():
                plan.mounts.append((str(local), DEFAULT_MODEL_DIR, True))
            else:
                plan.mounts.append((str(self.standin_dir), DEFAULT_MODEL_DIR, True))
                plan.standin = (
                    f"random-weight stand-in: no local weights for {preset} "
                    f"(set KAITO_MODEL_DIR to a folder holding {preset}/); serving a small "
                    "random-weight Phi-3-family model, its answers are not meaningful"
                )
        return plan

    @property
    def image_cache(self) -> Path:
        return self.standin_dir.parent.parent / "images"

    async def pull(self, plan: ImagePlan, docker_config: Path | None) -> None:
        """Fetch the image's ``/data`` once (cached by image reference) and mount it at /data."""
        dest = self.image_cache / hashlib.sha256(plan.image.encode()).hexdigest()[:24]
        if not dest.is_dir():
            tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
            argv = [str(self.venv / "bin" / "python"), "-m", "kaito.tuning", "pull", "--image", plan.image,
                    "--dest", str(tmp)]  # fmt: skip
            if docker_config is not None:
                argv += ["--docker-config", str(docker_config)]
            if self.registry_ca:
                argv += ["--ca-file", self.registry_ca]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            _, err = await proc.communicate()
            if proc.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
                raise ImagePullError(f'Failed to pull image "{plan.image}": {lines[-1]}')
            tmp.rename(dest)
        plan.mounts.append((str(dest), IMAGE_ADAPTER_DIR, True))
