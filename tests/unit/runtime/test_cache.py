"""InformerCache keys (issue 20, bug 6): one informer per (kind, scope), whatever the caller
passes and whether or not discovery has answered yet. The informers are only created here,
never started; what they request is checked on the real apiserver in
tests/integration/controllers/test_operator_cache_scope.py."""

from __future__ import annotations

import pytest

from kaito.runtime import CONFIGMAP, NODE, POD, Client, InformerCache, ResourceInfo, RestConfig


async def test_a_restricted_cache_has_one_scope() -> None:
    async with Client(RestConfig(host="https://127.0.0.1:1", token="t")) as client:
        cache = InformerCache(client, namespace="a", label_selectors={POD: "kaito.sh/workspace"})
        cm = cache.get_informer(CONFIGMAP)
        assert cache.get_informer(CONFIGMAP, "a") is cm and cm.namespace == "a"
        with pytest.raises(ValueError, match="restricted to namespace 'a'"):
            cache.get_informer(CONFIGMAP, "b")
        # asked for with a cold REST mapper, then with a warm one: the same informer
        node = cache.get_informer(NODE)
        client.mapper.register(ResourceInfo(NODE, "nodes", namespaced=False))
        assert cache.get_informer(NODE) is node and cache.get_informer(NODE, "b") is node
        assert cache.get_informer(POD).label_selector == "kaito.sh/workspace"
        assert cache.get_informer(POD, label_selector="x=y") is not cache.get_informer(POD)
        assert len(cache.informers) == 4


async def test_a_cluster_wide_cache_keeps_per_namespace_informers() -> None:
    async with Client(RestConfig(host="https://127.0.0.1:1", token="t")) as client:
        cache = InformerCache(client)
        assert cache.get_informer(CONFIGMAP, "a") is not cache.get_informer(CONFIGMAP)
        assert cache.get_informer(CONFIGMAP).namespace is None
        client.mapper.register(ResourceInfo(NODE, "nodes", namespaced=False))
        assert cache.get_informer(NODE, "a") is cache.get_informer(NODE)
