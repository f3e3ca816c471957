"""`make run`'s path end to end: a background local cluster, the CRDs, the README's Workspaces."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SEED_COLUMNS = ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]


def test_local_up_then_demo_shows_workspaces(tmp_path: Path) -> None:
    state = tmp_path / "local"
    kaito = [sys.executable, "-m", "kaito.cli.main", "local"]
    up = subprocess.run(
        [*kaito, "up", "--state-dir", str(state)], capture_output=True, text=True, timeout=300
    )
    assert up.returncode == 0, up.stderr
    try:
        demo = subprocess.run(
            ["bash", "hack/run-demo.sh", str(state)], cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        out = demo.stdout
        # no Node existed beforehand: each Workspace's NodeClaim was made and turned Ready on demand
        assert "No resources found" in out.split("== applying", 1)[0]
        for name in ("workspace-phi-3-mini", "workspace-phi-3-mini-adapter"):
            assert re.search(rf"nodeclaim \S+ +for {name} +launched=True .*ready=True +node=\S+", out), name
        assert "customresourcedefinition.apiextensions.k8s.io/workspaces.kaito.sh" in out
        header = next(
            line for line in out.splitlines() if line.startswith("NAMESPACE") and "INSTANCE" in line
        )
        assert header.split()[1:] == SEED_COLUMNS
        for name in ("workspace-phi-3-mini", "workspace-phi-3-mini-adapter"):
            rows = [line.split() for line in out.splitlines() if line.split()[1:2] == [name]]
            assert {r[0] for r in rows} == {"default", "kaito-tuning"}
            assert all(r[2] == "Standard_NC6s_v3" for r in rows)
    finally:
        subprocess.run(
            [*kaito, "down", "--state-dir", str(state)], capture_output=True, text=True, timeout=60
        )
