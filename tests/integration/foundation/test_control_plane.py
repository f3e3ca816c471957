"""The real control plane from the fixtures: API basics, scheduling onto fake GPU nodes, RBAC."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from kaito.envtest import Cluster, eventually

pytestmark = pytest.mark.cluster

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.kaito.sh"},
    "spec": {
        "group": "test.kaito.sh",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                        },
                    }
                },
            }
        ],
    },
}


async def _wait_crd_established(api_client: Any, name: str) -> None:
    ext = client.ApiextensionsV1Api(api_client)
    for _ in range(100):
        crd = await ext.read_custom_resource_definition(name)
        conds = {c.type: c.status for c in (crd.status.conditions or [])}
        if conds.get("Established") == "True":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"CRD {name} never became Established")


async def test_configmap_crd_status_and_watch(api_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    cm = await core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="hello"), data={"a": "1"})
    )
    assert cm.data == {"a": "1"}

    ext = client.ApiextensionsV1Api(api_client)
    try:
        await ext.create_custom_resource_definition(CRD)
    except ApiException as exc:  # the session cluster may already have it from a rerun
        assert exc.status == 409
    await _wait_crd_established(api_client, "widgets.test.kaito.sh")

    custom = client.CustomObjectsApi(api_client)
    events: list[tuple[str, str | None]] = []

    # Watch from the list's resourceVersion, so no event can slip between list and watch. A
    # freshly established CRD may answer 429 "storage is (re)initializing" for a moment: retry.
    for _ in range(50):
        try:
            listed = await custom.list_namespaced_custom_object("test.kaito.sh", "v1", namespace, "widgets")
            break
        except ApiException as exc:  # what client-go does too: honour 429 + Retry-After
            assert exc.status == 429, exc
            await asyncio.sleep(0.2)
    since = listed["metadata"]["resourceVersion"]

    async def watch_widgets() -> None:
        for _ in range(50):
            try:
                w = watch.Watch()
                async with w.stream(
                    custom.list_namespaced_custom_object,
                    "test.kaito.sh",
                    "v1",
                    namespace,
                    "widgets",
                    resource_version=since,
                    timeout_seconds=30,
                ) as stream:
                    async for ev in stream:
                        obj = ev["object"]
                        events.append((ev["type"], (obj.get("status") or {}).get("phase")))
                        if ev["type"] == "DELETED":
                            return
            except ApiException as exc:
                assert exc.status == 429, exc
                events.clear()
                await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch_widgets())
    body = {
        "apiVersion": "test.kaito.sh/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
    }
    created = await custom.create_namespaced_custom_object("test.kaito.sh", "v1", namespace, "widgets", body)
    assert created["spec"]["size"] == 3

    # The status subresource: a main-resource update must not change status, the subresource must.
    created["status"] = {"phase": "Ignored"}
    updated = await custom.replace_namespaced_custom_object(
        "test.kaito.sh", "v1", namespace, "widgets", "w1", created
    )
    assert "status" not in updated or updated["status"].get("phase") != "Ignored"
    updated["status"] = {"phase": "Ready"}
    with_status = await custom.replace_namespaced_custom_object_status(
        "test.kaito.sh", "v1", namespace, "widgets", "w1", updated
    )
    assert with_status["status"]["phase"] == "Ready"
    await custom.delete_namespaced_custom_object("test.kaito.sh", "v1", namespace, "widgets", "w1")
    await asyncio.wait_for(watcher, 20)
    assert events[0] == ("ADDED", None)
    assert ("MODIFIED", "Ready") in events
    assert events[-1][0] == "DELETED"


async def test_fake_gpu_node_runs_gpu_deployment(api_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    node_name = f"gpu-{namespace}"[:60]
    capacity = {"cpu": "8", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "1"}
    await core.create_node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node_name,
                "labels": {"kubernetes.io/hostname": node_name, "type": "kwok", "test-ns": namespace},
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
            "spec": {"taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]},
            "status": {"capacity": capacity, "allocatable": capacity},
        }
    )
    try:
        for _ in range(300):
            node = await core.read_node(node_name)
            ready = {c.type: c.status for c in (node.status.conditions or [])}.get("Ready")
            if ready == "True":
                break
            await asyncio.sleep(0.1)
        assert ready == "True", "kwok never made the fake GPU node Ready"
        assert node.status.allocatable["nvidia.com/gpu"] == "1"

        labels = {"app": "gpu-test"}
        container = {
            "name": "main",
            "image": "busybox",
            "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
        }
        await apps.create_namespaced_deployment(
            namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "gpu-app"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "nodeSelector": {"test-ns": namespace},
                            "tolerations": [
                                {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
                            ],
                            "containers": [container],
                        },
                    },
                },
            },
        )
        ready_replicas = 0
        for _ in range(600):
            dep = await apps.read_namespaced_deployment("gpu-app", namespace)
            ready_replicas = dep.status.ready_replicas or 0
            if ready_replicas == 1:
                break
            await asyncio.sleep(0.1)
        assert ready_replicas == 1
        pods = await core.list_namespaced_pod(namespace, label_selector="app=gpu-test")
        assert [p.spec.node_name for p in pods.items] == [node_name]
    finally:
        await core.delete_node(node_name)


async def test_kcm_controllers_run_as_their_own_serviceaccounts() -> None:
    """kcm run as real clusters run it (``ClusterOptions.kcm_service_account_credentials``, i.e.
    ``--use-service-account-credentials=true``): every controller it starts gets a ServiceAccount
    in kube-system, its token from the apiserver's signing key, and acts under its bootstrap RBAC
    role; a Deployment still gets its pod made that way (by two controllers in turn)."""
    from kaito.envtest import ClusterOptions

    with Cluster(ClusterOptions(controller_manager=True, kcm_service_account_credentials=True)) as cluster:
        async with client.ApiClient(cluster.client_configuration()) as api:
            await _controllers_have_their_accounts(api)


async def _controllers_have_their_accounts(api_client: Any) -> None:
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sa-mode"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "sa-mode"}},
            "template": {
                "metadata": {"labels": {"app": "sa-mode"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }
    await apps.create_namespaced_deployment("default", deployment)

    async def pod_made() -> bool:
        pods = await core.list_namespaced_pod("default", label_selector="app=sa-mode")
        return len(pods.items) == 1

    await eventually(pod_made, "the Deployment's pod made by kcm's controllers", timeout=60)
    wanted = {
        "deployment-controller",
        "replicaset-controller",
        "statefulset-controller",
        "namespace-controller",
    }

    async def controller_accounts() -> set[str]:
        accounts = await core.list_namespaced_service_account("kube-system")
        return wanted & {sa.metadata.name for sa in accounts.items}

    async def all_there() -> bool:
        return await controller_accounts() == wanted

    await eventually(all_there, "kcm's controller ServiceAccounts in kube-system", timeout=60)


async def test_rbac_denies_serviceaccount_without_permissions(
    kube_cluster: Cluster, api_client: Any, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    await core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    token_req = await core.create_namespaced_service_account_token(
        "nobody", namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    )
    token = token_req.status.token
    async with client.ApiClient(kube_cluster.token_configuration(token)) as sa_client:
        with pytest.raises(ApiException) as err:
            await client.CoreV1Api(sa_client).list_namespaced_pod(namespace)
        assert err.value.status == 403
        assert f"system:serviceaccount:{namespace}:nobody" in err.value.body

    # Grant exactly "list pods" and the same token works: RBAC, not a broken token, said no.
    rbac = client.RbacAuthorizationV1Api(api_client)
    await rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        },
    )
    await rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "nobody-reads"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
        },
    )
    async with client.ApiClient(kube_cluster.token_configuration(token)) as sa_client:
        for _ in range(50):
            try:
                pods = await client.CoreV1Api(sa_client).list_namespaced_pod(namespace)
                break
            except ApiException:
                await asyncio.sleep(0.1)
        assert pods.items == []


def test_kubectl_as_unprivileged_user_is_forbidden(kube_cluster: Cluster) -> None:
    kubeconfig = kube_cluster.user_kubeconfig("alice", ["developers"])
    proc = kube_cluster.kubectl("--kubeconfig", str(kubeconfig), "get", "nodes", check=False)
    assert proc.returncode != 0
    assert 'User "alice" cannot list resource "nodes"' in proc.stderr
    assert kube_cluster.kubectl("get", "namespaces", "-o", "name").stdout.count("namespace/") >= 4
