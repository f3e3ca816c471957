"""The pods kaito writes carry no API token and no privileges (issue 21, holes 6 and 7).

The seed's Workspaces go through the real control plane: the controller writes the StatefulSet
and the tuning Job, the apiserver stores (and defaults) them, kube-controller-manager makes the
pods, and the apiserver's ServiceAccount admission decides whether the token volume is added. The
assertions read what was stored, so a field the API drops or rewrites would show.
"""

from __future__ import annotations

from typing import Any

import pytest
from workspace_helpers import Running, gpu_nodes, kubectl_apply, seed_path, wait_for

from kaito.api import names
from kaito.controllers.workspace.podsecurity import CONTAINER_SECURITY_CONTEXT, POD_SECURITY_CONTEXT
from kaito.controllers.workspace.tuning import DEFAULT_DATA_SIZE_LIMIT, JOB
from kaito.envtest import Cluster
from kaito.runtime import POD, STATEFULSET, Client, NotFoundError

pytestmark = pytest.mark.cluster
WS = "workspace-phi-3-mini"
SEED_TOKEN_VOLUME = "kube-api-access-"


async def _get(client: Client, gvk: Any, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return await client.get(gvk, name, ns, cached=False)
    except NotFoundError:
        return None


def assert_restricted(pod_spec: dict[str, Any]) -> None:
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["securityContext"] == POD_SECURITY_CONTEXT
    containers = (pod_spec.get("initContainers") or []) + pod_spec["containers"]
    assert containers
    for c in containers:
        assert c["securityContext"] == CONTAINER_SECURITY_CONTEXT, c["name"]
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


async def test_inference_statefulset_pods_have_no_token_and_a_restricted_security_context(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    async with gpu_nodes(kclient, 1, {"apps": "phi-3"}):
        kubectl_apply(crds, namespace, seed_path("phi3_inference.yaml"))
        sts = await wait_for(lambda: _get(kclient, STATEFULSET, namespace, WS), "the StatefulSet")
        assert_restricted(sts["spec"]["template"]["spec"])

        async def pods() -> list[dict[str, Any]]:
            return await kclient.list(
                POD, namespace, label_selector={names.LABEL_WORKSPACE: WS}, cached=False
            )

        pod = (await wait_for(pods, "the StatefulSet's pod"))[0]
        # The apiserver's ServiceAccount admission honoured the opt-out: no token volume, no mount.
        assert not [v for v in pod["spec"]["volumes"] if v["name"].startswith(SEED_TOKEN_VOLUME)]
        for c in pod["spec"]["containers"]:
            assert all("serviceaccount" not in m["mountPath"] for m in c.get("volumeMounts") or [])
        assert_restricted(pod["spec"])


async def test_tuning_job_pods_are_restricted_and_the_data_volume_has_a_size_limit(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    async with gpu_nodes(kclient, 1, {"app": "phi-3-adapter"}):
        kubectl_apply(crds, namespace, seed_path("phi3_tuning.yaml"))
        job = await wait_for(lambda: _get(kclient, JOB, namespace, WS), "the tuning Job")
        spec = job["spec"]["template"]["spec"]
        data = next(v for v in spec["volumes"] if v["name"] == "data")
        assert data["emptyDir"]["sizeLimit"] == DEFAULT_DATA_SIZE_LIMIT
        assert_restricted(spec)
