"""Which NodeClaims go when a Workspace has more than it needs (issue 20 bugs 2 and 3): the
ranking as a pure function, no cluster."""

from __future__ import annotations

from typing import Any

from kaito.provisioners.gpu_provisioner import pod_ordinal, surplus_claims


def _claim(name: str, created: str, *, ready: bool = False, node: str | None = None) -> dict[str, Any]:
    claim: dict[str, Any] = {"metadata": {"name": name, "creationTimestamp": created}, "status": {}}
    if ready:
        claim["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    if node:
        claim["status"]["nodeName"] = node
    return claim


def _names(claims: list[dict[str, Any]]) -> set[str]:
    return {c["metadata"]["name"] for c in claims}


def test_surplus_drops_the_newest_not_ready_claim_and_keeps_the_oldest() -> None:
    """issue 20 bug 2: a duplicate made after a lost create answer is the newer claim; the
    original (older, or further along) is kept."""
    old = _claim("a", "2026-01-01T00:00:00Z")
    new = _claim("b", "2026-01-01T00:00:05Z")
    assert _names(surplus_claims([new, old], 1)) == {"b"}
    ready_new = _claim("c", "2026-01-01T00:00:09Z", ready=True)
    assert _names(surplus_claims([old, ready_new, new], 2)) == {"b"}
    assert _names(surplus_claims([old, ready_new, new], 1)) == {"a", "b"}


def test_scale_down_keeps_pod_zeros_node() -> None:
    """issue 20 bug 3: the claim whose node runs the highest ordinal goes, pod-0's stays, even
    when pod-0's claim is the newest; claims running none of the pods go before any that does."""
    a = _claim("a", "2026-01-01T00:00:00Z", ready=True, node="n-a")
    b = _claim("b", "2026-01-01T00:00:05Z", ready=True, node="n-b")
    c = _claim("c", "2026-01-01T00:00:07Z", ready=True, node="n-c")
    idle = _claim("d", "2026-01-01T00:00:01Z", ready=True, node="n-d")
    ordinals = {"n-c": 0, "n-a": 1, "n-b": 2}
    assert _names(surplus_claims([a, b, c, idle], 3, ordinals)) == {"d"}
    assert _names(surplus_claims([a, b, c, idle], 2, ordinals)) == {"d", "b"}
    assert _names(surplus_claims([a, b, c, idle], 1, ordinals)) == {"d", "b", "a"}


def test_pod_ordinal_from_label_or_name() -> None:
    labelled = {"metadata": {"name": "x", "labels": {"apps.kubernetes.io/pod-index": "3"}}}
    assert pod_ordinal(labelled, "ws") == 3
    assert pod_ordinal({"metadata": {"name": "ws-12"}}, "ws") == 12
    assert pod_ordinal({"metadata": {"name": "ws-headless-0x"}}, "ws") is None
    assert pod_ordinal({"metadata": {"name": "other-0"}}, "ws") is None
