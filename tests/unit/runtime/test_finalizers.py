from kaito.runtime import finalizers as f


def test_add_remove_report_changes():
    obj: dict = {"metadata": {"name": "x", "resourceVersion": "7"}}
    assert not f.has_finalizer(obj, "a/b")
    assert f.add_finalizer(obj, "a/b")
    assert not f.add_finalizer(obj, "a/b")
    assert f.add_finalizer(obj, "c/d")
    assert obj["metadata"]["finalizers"] == ["a/b", "c/d"]
    assert f.finalizers_patch(obj) == {"metadata": {"finalizers": ["a/b", "c/d"], "resourceVersion": "7"}}
    assert f.remove_finalizer(obj, "a/b")
    assert not f.remove_finalizer(obj, "a/b")
    assert obj["metadata"]["finalizers"] == ["c/d"]


def test_is_being_deleted():
    assert not f.is_being_deleted({"metadata": {}})
    assert f.is_being_deleted({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}})
