"""`make run`'s path end to end: a background local cluster, the CRDs, the README's Workspaces."""

from __future__ import annotations

import json
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
        status = subprocess.run(
            [*kaito, "status", "--state-dir", str(state), "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert doc["kind"] == "LocalClusterStatus" and doc["running"] is True, doc
        assert Path(doc["kubeconfig"]).is_file() and doc["server"].startswith("https://")
        assert {"etcd", "kube-apiserver"} <= set(doc["pids"]), doc["pids"]
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


@pytest.mark.timeout(120)
def test_make_run_on_a_fresh_clone_builds_the_inference_venv_first(tmp_path: Path) -> None:
    """`make run` on a fresh clone once waited 1,200 s for a pod whose interpreter
    (.venv-inference) no target built. A clone of this checkout's committed tree, asked what
    `make run` would do, must build the project venv and the inference venv before the local
    cluster comes up."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=60)
    # the working tree's Makefile, so an uncommitted edit is what gets checked
    (clone / "Makefile").write_text((REPO / "Makefile").read_text())
    plan = subprocess.run(
        ["make", "-n", "run"], cwd=clone, capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()

    def first(fragment: str) -> int:
        hits = [i for i, line in enumerate(plan) if fragment in line]
        assert hits, f"`make -n run` never runs {fragment!r}:\n" + "\n".join(plan)
        return hits[0]

    venv = first("-m venv .venv")
    inference = first("hack/install-inference.sh")
    # One recipe line picks the node (hack/choose-node.sh) and runs either story after it.
    choose = first("hack/choose-node.sh")
    assert venv < inference < choose
    assert choose <= first("hack/run-real.sh") <= first("local up") <= first("hack/run-demo.sh") <= choose + 2
