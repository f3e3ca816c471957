"""kaito.envtest as a pytest plugin: an operator's suite with no conftest gets the fixtures from
the installed package's pytest11 entry point, a bare control plane unless it asks for more, and a
usage error naming the option for a component that does not exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

SUITE = """
from kaito.runtime import NAMESPACE, POD

async def test_fixtures(kube_cluster, kube_client, namespace):
    ns = await kube_client.get(NAMESPACE, namespace)
    assert ns["metadata"]["labels"]["kaito.sh/test"] == "true"
    created = await kube_client.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/none"}]},
    })
    assert created["metadata"]["uid"]
    with open("asked.txt", "w") as f:
        o = kube_cluster.options
        f.write(f"{o.controller_manager} {o.scheduler} {o.kwok}")
"""


def run_suite(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (folder / "test_suite.py").write_text(SUITE)
    # asyncio_mode=auto as an ini file of the suite's own: no conftest, no pytest_plugins line
    (folder / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_suite_without_conftest_gets_the_fixtures_and_a_bare_cluster(tmp_path: Path) -> None:
    done = run_suite(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert (tmp_path / "asked.txt").read_text() == "False False False"


def test_components_are_asked_for_by_name(tmp_path: Path) -> None:
    done = run_suite(tmp_path, "--kaito-envtest-components", "scheduler")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert (tmp_path / "asked.txt").read_text() == "False True False"
    wrong = run_suite(tmp_path, "--kaito-envtest-components", "kcm,kwok")
    assert wrong.returncode == 4  # pytest's usage error
    assert "--kaito-envtest-components: unknown component kcm" in wrong.stderr, wrong.stderr
    assert "controller-manager, scheduler, kwok" in wrong.stderr
