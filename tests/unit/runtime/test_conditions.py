from kaito.runtime import conditions as c


def clock(times):
    it = iter(times)
    return lambda: next(it)


def test_transition_time_moves_only_when_status_flips():
    obj = {"metadata": {"generation": 3}}
    now = clock(["t1", "t2", "t3"])
    assert c.set_condition(obj, "Ready", False, "Waiting", "nodes", now=now)
    cond = c.get_condition(obj, "Ready")
    assert cond == {
        "type": "Ready", "status": "False", "reason": "Waiting", "message": "nodes",
        "observedGeneration": 3, "lastTransitionTime": "t1",
    }  # fmt: skip
    # same status, new reason: changed, but lastTransitionTime stays
    assert c.set_condition(obj, "Ready", "False", "StillWaiting", "nodes", now=now)
    assert cond["lastTransitionTime"] == "t1" and cond["reason"] == "StillWaiting"
    # identical: no change, no clock read
    assert not c.set_condition(obj, "Ready", "False", "StillWaiting", "nodes", now=now)
    assert c.set_condition(obj, "Ready", True, "Done", now=now)
    assert cond["lastTransitionTime"] == "t2" and c.is_true(obj, "Ready")


def test_observed_generation_follows_metadata_generation():
    obj = {"metadata": {"generation": 1}}
    c.set_condition(obj, "A", True, "R")
    obj["metadata"]["generation"] = 2
    assert c.set_condition(obj, "A", True, "R")
    assert c.get_condition(obj, "A")["observedGeneration"] == 2
    assert c.set_observed_generation(obj) and not c.set_observed_generation(obj)
    assert obj["status"]["observedGeneration"] == 2


def test_remove_and_invalid_status():
    obj: dict = {}
    assert not c.remove_condition(obj, "A")
    c.set_condition(obj, "A", True, "R")
    c.set_condition(obj, "B", True, "R")
    assert c.remove_condition(obj, "A") and [x["type"] for x in obj["status"]["conditions"]] == ["B"]
    try:
        c.set_condition(obj, "A", "yes", "R")
    except ValueError:
        pass
    else:
        raise AssertionError("invalid status accepted")
