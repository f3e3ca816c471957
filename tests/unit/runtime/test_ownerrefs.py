import pytest

from kaito.runtime import ownerrefs as o


def owner(name="w", uid="u1", kind="Workspace", api="kaito.sh/v1beta1", ns="n"):
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "uid": uid, "namespace": ns}}


def child():
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}}


def test_set_controller_reference_is_idempotent():
    c = child()
    assert o.set_controller_reference(owner(), c)
    assert not o.set_controller_reference(owner(), c)
    ref = o.get_controller_of(c)
    assert ref == {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "name": "w", "uid": "u1",
        "controller": True, "blockOwnerDeletion": True,
    }  # fmt: skip
    assert o.is_controlled_by(c, owner())
    # a version bump of the owner's API updates the same reference instead of adding one
    assert o.set_controller_reference(owner(api="kaito.sh/v1"), c)
    assert len(c["metadata"]["ownerReferences"]) == 1


def test_second_controller_is_refused():
    c = child()
    o.set_controller_reference(owner(), c)
    with pytest.raises(o.AlreadyOwnedError, match="already controlled by Workspace w"):
        o.set_controller_reference(owner(name="other", uid="u2"), c)
    # a plain (non-controller) owner is fine
    assert o.set_owner_reference(owner(name="other", uid="u2"), c)
    assert len(c["metadata"]["ownerReferences"]) == 2


def test_cross_namespace_and_missing_uid():
    with pytest.raises(ValueError, match="cross-namespace"):
        o.set_controller_reference(owner(ns="other"), child())
    bad = owner()
    del bad["metadata"]["uid"]
    with pytest.raises(ValueError, match="uid"):
        o.set_controller_reference(bad, child())


def test_remove_owner_reference():
    c = child()
    o.set_controller_reference(owner(), c)
    assert o.remove_owner_reference(owner(), c)
    assert not o.remove_owner_reference(owner(), c)
    assert o.get_controller_of(c) is None
