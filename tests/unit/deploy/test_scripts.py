"""hack/images.sh says plainly when it cannot build (no engine), and never claims success."""

from __future__ import annotations

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
    for script in ("images.sh", "kind-e2e.sh"):
        subprocess.run(["bash", "-n", str(REPO / "hack" / script)], check=True)
