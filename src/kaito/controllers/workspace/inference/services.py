"""The two Services of an inference Workspace, as upstream makes them.

``<ws>`` is what clients call: ClusterIP (a LoadBalancer with ``kaito.sh/enablelb: "True"``), port
80 to the server's 5000 (plus the distributed port when the model spans nodes, which is what the
seed's ``kubectl get svc`` shows). It selects
only the leader pod (index 0) of a multi-node group, since only the leader serves HTTP.
``<ws>-headless`` gives every pod a stable DNS name (the StatefulSet's ``serviceName``) and
publishes addresses before readiness, so workers can find the leader while the model loads.
"""

from __future__ import annotations

from typing import Any

from kaito.api.workspace import enable_lb_of
from kaito.contract import DIST_PORT, INFERENCE_PORT
from kaito.controllers.workspace.labels import child_labels, headless_name, selector_labels
from kaito.runtime import set_controller_reference

Obj = dict[str, Any]
#: Label the StatefulSet controller puts on every pod: its ordinal.
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def _ports(multi_node: bool) -> list[Obj]:
    ports: list[Obj] = [{"name": "http", "port": 80, "targetPort": INFERENCE_PORT, "protocol": "TCP"}]
    if multi_node:
        ports.append({"name": "torch-dist", "port": DIST_PORT, "targetPort": DIST_PORT, "protocol": "TCP"})
    return ports


def build_service(ws: Obj, *, multi_node: bool) -> Obj:
    meta = ws["metadata"]
    selector = dict(selector_labels(ws))
    if multi_node:
        selector[POD_INDEX_LABEL] = "0"
    svc: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": child_labels(ws)},
        # kaito.sh/enablelb: "True" asks for a LoadBalancer (upstream's switch, for testing).
        "spec": {
            "type": "LoadBalancer" if enable_lb_of(meta.get("annotations")) else "ClusterIP",
            "selector": selector,
            "ports": _ports(multi_node),
        },
    }
    set_controller_reference(ws, svc)
    return svc


def build_headless_service(ws: Obj, *, multi_node: bool) -> Obj:
    meta = ws["metadata"]
    svc: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": headless_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": child_labels(ws),
        },
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(ws),
            "ports": _ports(multi_node),
            "publishNotReadyAddresses": True,
        },
    }
    set_controller_reference(ws, svc)
    return svc
