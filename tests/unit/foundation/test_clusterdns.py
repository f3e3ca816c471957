"""What the real node's cluster DNS is made of, checked without building or running it: the
CoreDNS wrapper links and orders exactly the chosen plugins, and the objects ask for no more
than the server needs (tests/integration/realnode/test_cluster_dns.py runs it)."""

from __future__ import annotations

import re

from kaito.envtest import assets, clusterdns


def _coredns() -> assets._Component:
    return next(c for c in assets._components() if c.name == "coredns")


def test_the_wrapper_links_and_orders_only_the_chosen_plugins() -> None:
    main = _coredns().main_source
    imported = re.findall(r'_ "github.com/coredns/coredns/plugin/(\w+)"', main)
    assert sorted(imported) == sorted(assets.COREDNS_PLUGINS)
    order = re.search(r"SetDirectives\(\[\]string\{(.*?)\}\)", main)
    assert order is not None
    assert re.findall(r'"(\w+)"', order.group(1)) == list(assets.COREDNS_PLUGINS)
    assert "github.com/coredns/coredns/core/plugin" not in main  # the upstream list of every plugin


def test_coredns_shares_the_node_programs_k8s_modules() -> None:
    tag = f"v0.{assets.K8S_VERSION.split('.')[1]}.{assets.K8S_VERSION.split('.')[2]}"
    assert set(_coredns().pins) == {f"k8s.io/{m} {tag}" for m in ("api", "apimachinery", "client-go")}


def test_kube_dns_sits_at_the_tenth_service_address() -> None:
    assert clusterdns.dns_service_ip("10.96.0.0/16") == "10.96.0.10"


def test_the_objects_ask_for_no_more_than_the_server_needs() -> None:
    items = {i["kind"]: i for i in clusterdns.manifests("10.96.0.10", "node-a")["items"]}
    rules = items["ClusterRole"]["rules"]
    assert {r for rule in rules for r in rule["resources"]} == {"services", "namespaces", "endpointslices"}
    assert {v for rule in rules for v in rule["verbs"]} == {"list", "watch"}
    pod = items["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "node-a"}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert items["Service"]["spec"]["clusterIP"] == "10.96.0.10"
    corefile = items["ConfigMap"]["data"]["Corefile"]
    assert "forward" not in corefile and "kubernetes cluster.local" in corefile
