"""Shared set-up of the reliability suites (issue #14): one audited control plane with kaito's
CRDs, and the seed that makes a suite's random sequence replayable.

Why an audited cluster of our own rather than the session's ``kube_cluster``: the suites prove
"no double provisioning" and "no writes from the non-leader" from the apiserver's own record of
every write, not from what the operator says it did. Reads are not logged (they are most of the
traffic and prove nothing here); NodeClaim creates are logged with their body, so each claim can
be traced to its Workspace even after it is gone.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_stack import FIGURES

from kaito.envtest import Cluster, ClusterOptions

REPO = Path(__file__).resolve().parents[2]

AUDIT_WRITES = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["get", "list", "watch"]
  - level: Request
    verbs: ["create"]
    resources: [{group: "karpenter.sh", resources: ["nodeclaims"]}]
  - level: Metadata
"""


def crd_files() -> list[Path]:
    return [
        f
        for f in sorted((REPO / "config" / "crd").glob("*.yaml"))
        if "kind: CustomResourceDefinition" in f.read_text()
    ]


@pytest.fixture(scope="session")
def reliability_cluster() -> Iterator[Cluster]:
    """etcd, apiserver (audit log of every write), kcm, scheduler, kwok; kaito's CRDs applied."""
    cluster = Cluster(
        ClusterOptions(controller_manager=True, scheduler=True, kwok=True, audit_policy=AUDIT_WRITES)
    )
    cluster.start()
    try:
        for f in crd_files():
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=120s",
            "crd/workspaces.kaito.sh",
            "crd/nodeclaims.karpenter.sh",
        )
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """``KAITO_RELIABILITY_SEED`` replays a run; otherwise a fresh seed, printed either way."""
    env = os.environ.get("KAITO_RELIABILITY_SEED")
    value = int(env) if env else random.SystemRandom().randrange(1, 2**31)
    print(f"\n{request.node.name}: seed={value} (replay: KAITO_RELIABILITY_SEED={value})")
    return value


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each suite's figures (reliability_stack.emit), one JSON line each, at the end of the run."""
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
