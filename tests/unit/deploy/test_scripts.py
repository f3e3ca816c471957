"""hack/images.sh says plainly when it cannot build (no engine, unknown target), and never claims success."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_images_sh_without_an_engine_says_so_and_fails(tmp_path: Path) -> None:
    # A PATH with the few tools the script needs and no docker/podman/buildah.
    for tool in ("sed", "dirname"):
        found = shutil.which(tool)
        assert found
        (tmp_path / tool).symlink_to(found)
    bash = shutil.which("bash")
    assert bash
    proc = subprocess.run(
        [bash, str(REPO / "hack" / "images.sh"), "controller"],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},
        timeout=30,
    )
    assert proc.returncode == 3
    assert "no container engine" in proc.stderr and "cannot build controller" in proc.stderr


def test_scripts_parse() -> None:
    for script in ("images.sh", "kind-e2e.sh", "registry.sh", "install-inference.sh", "test.sh"):
        subprocess.run(["bash", "-n", str(REPO / "hack" / script)], check=True)


def test_images_sh_refuses_an_unknown_target_naming_the_valid_ones(tmp_path: Path) -> None:
    # No engine on PATH: the target is checked before anything else.
    for tool in ("sed", "dirname"):
        found = shutil.which(tool)
        assert found
        (tmp_path / tool).symlink_to(found)
    bash = shutil.which("bash")
    assert bash
    proc = subprocess.run(
        [bash, str(REPO / "hack" / "images.sh"), "pause", "kaito-controller"],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert "unknown image 'kaito-controller'" in proc.stderr
    for valid in ("controller", "inference", "tuning", "pause", "curl"):
        assert valid in proc.stderr
    assert proc.stdout == ""


def test_dockerfiles_take_the_base_as_a_build_argument() -> None:
    dockerfiles = sorted((REPO / "docker").glob("*.Dockerfile"))
    targets = {"controller", "inference", "tuning", "pause", "curl"}
    # inference-standin: the inference image plus the stand-in weights, built by hack/run-real.sh
    # (its context is the stand-in's folder, not the repository), so not an images.sh target
    assert {d.name.split(".")[0] for d in dockerfiles} == targets | {"inference-standin"}
    for dockerfile in dockerfiles:
        lines = [ln.strip() for ln in dockerfile.read_text().splitlines()]
        instructions = [ln for ln in lines if ln and not ln.startswith("#")]
        first_from = next(i for i, ln in enumerate(instructions) if ln.upper().startswith("FROM "))
        args = [ln for ln in instructions[:first_from] if ln.upper().startswith("ARG BASE=")]
        assert args, f"{dockerfile.name}: no `ARG BASE=...` before the first FROM"
        froms = [ln.split()[1] for ln in instructions if ln.upper().startswith("FROM ")]
        assert all(f == "${BASE}" for f in froms), f"{dockerfile.name}: every FROM names ${{BASE}}: {froms}"
        # Both bases have python3 (Debian's has no `python` unless linked): never call `python -m`.
        assert not re.search(r'(^|[\s"])python -m', dockerfile.read_text()), dockerfile.name


def test_pause_source_is_there() -> None:
    source = (REPO / "src" / "kaito" / "envtest" / "nodeimages" / "pause.c").read_text()
    assert "pause()" in source and "SIGCHLD" in source and "SIGTERM" in source


def _choose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "hack" / "choose-node.sh"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=30,
    )


def test_make_run_names_why_it_falls_back_to_the_agent() -> None:
    """`make run` takes the real node only where it fits; otherwise it says why, and a typo in
    NODE fails naming the valid values."""
    assert _choose("real").stdout.strip() == "real"
    assert _choose("agent").stdout.strip() == "agent: asked for (NODE=agent)"
    bad = _choose("kind")
    assert bad.returncode == 2 and "use auto, real or agent" in bad.stderr
    small = _choose("auto", KAITO_REAL_NODE_MIN_GB="100000000").stdout.strip()
    if os.geteuid() == 0:
        assert small.startswith("agent: ") and "the real node's images need 100000000 GB" in small
    else:
        assert small.startswith("agent: not root")
