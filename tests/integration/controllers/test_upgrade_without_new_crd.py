"""A cluster upgraded with `helm upgrade` keeps the CRDs of the old chart: helm never installs a CRD
that is new in the chart. kaito must still start and serve Workspaces there, with the
InferenceSet controller off and one warning naming the fix, and turn it on once the CRD exists."""

from __future__ import annotations

import io
import json

from workspace_helpers import REPO

from kaito.envtest import Cluster
from kaito.envtest.cluster import ClusterOptions
from kaito.operator import OperatorOptions
from kaito.operator.wiring import build_operator, served_options
from kaito.runtime import configure_logging


async def test_an_upgrade_without_the_inferenceset_crd_starts_without_that_controller() -> None:
    buf = io.StringIO()
    configure_logging("json", "INFO", stream=buf)
    try:
        with Cluster(ClusterOptions()) as cluster:
            # the previous chart's CRDs: everything but the InferenceSet one
            for crd in sorted((REPO / "config" / "crd").glob("*.yaml")):
                if crd.name not in ("kustomization.yaml", "kaito.sh_inferencesets.yaml"):
                    cluster.kubectl("apply", "--server-side", "-f", str(crd))
            cluster.kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=60s")
            config = cluster.client_configuration()
            options = OperatorOptions()
            served = await served_options(config, options)
            assert served.feature_gates.inference_set is False
            assert options.feature_gates.inference_set is True  # the caller's options untouched
            assert build_operator(config, served, handle_signals=False).inferenceset is None
            warnings = [json.loads(ln) for ln in buf.getvalue().splitlines() if "InferenceSet API" in ln]
            assert len(warnings) == 1 and warnings[0]["level"] == "warning", warnings
            assert "kubectl apply --server-side -f charts/kaito/crds/" in warnings[0]["msg"]
            assert warnings[0]["crd"] == "inferencesets.kaito.sh"

            # the CRD applied (as the docs say): the next start runs the controller
            cluster.kubectl(
                "apply", "--server-side", "-f", str(REPO / "config" / "crd" / "kaito.sh_inferencesets.yaml")
            )
            cluster.kubectl(
                "wait", "--for=condition=Established", "crd/inferencesets.kaito.sh", "--timeout=60s"
            )
            again = await served_options(config, options)
            assert again.feature_gates.inference_set is True
            assert build_operator(config, again, handle_signals=False).inferenceset is not None
    finally:
        configure_logging("console", "WARNING")
