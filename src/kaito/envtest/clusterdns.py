"""Cluster DNS for a real node: CoreDNS, its Corefile and the objects that run it.

Why: without a cluster DNS server the kubelet warns ``MissingClusterDNS`` on every pod and
pods can address a Service only by its ClusterIP, which is not how workloads (or kaito's own
charts) find each other on a cluster. The real node therefore runs CoreDNS like kubeadm does:
a ``coredns`` Deployment in ``kube-system`` behind the ``kube-dns`` Service at a fixed ClusterIP
that the kubelet writes into each pod's ``resolv.conf``.

The node has no route out of its network namespace, so the server answers only the cluster's
own zone (and reverse lookups of cluster addresses) and forwards nothing: a name outside
``cluster.local`` is refused at once rather than timing out against an upstream it cannot reach.

The binary is built from CoreDNS's Go module with only the plugins a cluster needs
(``assets.COREDNS_PLUGINS``); its image is written by :mod:`kaito.envtest.oci` and imported into
the node's containerd, so no registry is involved.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from kaito.envtest.assets import COREDNS_VERSION

NAMESPACE = "kube-system"
NAME = "coredns"
SERVICE = "kube-dns"
CLUSTER_DOMAIN = "cluster.local"
IMAGE = f"kaito.local/coredns:{COREDNS_VERSION}"
#: The label kubeadm and most tooling select cluster DNS pods by.
APP_LABEL = {"k8s-app": "kube-dns"}
HEALTH_PORT = 8080
READY_PORT = 8181

#: No ``forward``: nothing outside the cluster is reachable from the node (see the module
#: docstring). ``pods insecure`` answers ``a-b-c-d.<ns>.pod`` names without watching pods, so
#: the ClusterRole needs no pod access.
COREFILE = f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        ttl 30
    }}
    cache 30
    loadbalance
    reload
}}
"""


def dns_service_ip(service_cidr: str) -> str:
    """The tenth address of the Service range, where kubeadm puts cluster DNS (10.96.0.10 for
    10.96.0.0/16): the low end of the range is kept for fixed addresses, so the apiserver never
    hands it to another Service."""
    return str(ipaddress.ip_network(service_cidr)[10])


def manifests(service_ip: str, node_name: str) -> dict[str, Any]:
    """Every object cluster DNS needs, as one ``v1/List`` for ``kubectl apply``.

    The pod is pinned to ``node_name`` (kwok's fake nodes could otherwise take it and never run
    it) and tolerates every taint: it is the cluster's only DNS server, and a real node adopted
    for a NodeClaim is tainted with the claim's taints (``sku=gpu:NoSchedule``), which must not
    keep it off (or, for ``NoExecute``, evict it from) the node it serves.
    """
    labels = {**APP_LABEL}
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": labels}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": f"system:{NAME}", "labels": labels},
        # What the kubernetes plugin watches with ``pods insecure``: no pods, no writes.
        "rules": [
            {"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"system:{NAME}", "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"system:{NAME}"},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
    }
    container = {
        "name": NAME,
        "image": IMAGE,
        # Imported into the node's containerd at start; there is no registry to pull it from.
        "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "170Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": HEALTH_PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 5,
        },
        # Ready once the kubernetes plugin has listed Services and EndpointSlices.
        "readinessProbe": {"httpGet": {"path": "/ready", "port": READY_PORT}, "periodSeconds": 1},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NAME,
                    "priorityClassName": "system-cluster-critical",
                    # CoreDNS must not ask itself: it gets the node's resolv.conf.
                    "dnsPolicy": "Default",
                    "nodeSelector": {"kubernetes.io/hostname": node_name},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "config",
                            "configMap": {"name": NAME, "items": [{"key": "Corefile", "path": "Corefile"}]},
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "selector": labels,
            "clusterIP": service_ip,
            "ports": [
                {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"},
            ],
        },
    }
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        role,
        binding,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"Corefile": COREFILE}},
        deployment,
        service,
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def manifests_json(service_ip: str, node_name: str) -> str:
    return json.dumps(manifests(service_ip, node_name))


__all__ = [
    "CLUSTER_DOMAIN",
    "COREFILE",
    "IMAGE",
    "NAME",
    "NAMESPACE",
    "SERVICE",
    "dns_service_ip",
    "manifests",
    "manifests_json",
]
