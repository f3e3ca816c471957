from kaito.runtime import predicates as p


def obj(gen: int | None = 1, labels=None, annotations=None, rv="1", ns="a"):
    meta = {"name": "x", "namespace": ns, "resourceVersion": rv, "labels": labels, "annotations": annotations}
    if gen is not None:
        meta["generation"] = gen
    return {"metadata": meta}


def test_generation_changed():
    pred = p.generation_changed()
    assert pred.update(obj(1), obj(2))
    assert not pred.update(obj(1, labels={"a": "b"}), obj(1))
    assert pred.update(obj(None), obj(None))  # kinds without generation always pass
    assert pred.create(obj()) and pred.delete(obj()) and pred.generic(obj())


def test_labels_and_annotations_changed():
    assert p.labels_changed().update(obj(labels={"a": "1"}), obj(labels={"a": "2"}))
    assert not p.labels_changed().update(obj(labels=None), obj(labels={}))
    assert p.annotations_changed().update(obj(annotations={"a": "1"}), obj())
    assert not p.annotations_changed().update(obj(annotations={"a": "1"}), obj(annotations={"a": "1"}))


def test_resource_version_changed_drops_resyncs():
    pred = p.resource_version_changed()
    assert not pred.update(obj(rv="5"), obj(rv="5"))
    assert pred.update(obj(rv="5"), obj(rv="6"))


def test_combinators():
    either = p.or_(p.generation_changed(), p.labels_changed())
    assert either.update(obj(1), obj(2))
    assert either.update(obj(1, labels={"a": "1"}), obj(1))
    assert not either.update(obj(1), obj(1))
    both = p.and_(p.generation_changed(), p.labels_changed())
    assert not both.update(obj(1), obj(2))
    assert both.update(obj(1), obj(2, labels={"x": "y"}))
    neg = p.not_(p.generation_changed())
    assert neg.update(obj(1), obj(1)) and not neg.update(obj(1), obj(2))
    assert not neg.create(obj())
    assert not p.or_().create(obj())
    assert p.and_().create(obj())


def test_label_selector_sees_objects_leaving_the_selection():
    sel = p.label_selector({"app": "web"})
    assert sel.create(obj(labels={"app": "web", "x": "y"}))
    assert not sel.create(obj(labels={"app": "db"}))
    assert sel.update(obj(labels={"app": "web"}), obj(labels={"app": "db"}))
    assert not sel.update(obj(labels={}), obj(labels={"app": "db"}))


def test_namespace_in_and_from_functions():
    sel = p.namespace_in("a", "b")
    assert sel.create(obj(ns="a")) and not sel.create(obj(ns="c"))
    custom = p.from_functions(create=lambda o: False)
    assert not custom.create(obj()) and custom.update(obj(), obj())
