from kaito.runtime import (
    Metrics,
)

NAMES = [
    "controller_runtime_reconcile_total",
    "controller_runtime_reconcile_errors_total",
    "controller_runtime_terminal_reconcile_errors_total",
    "controller_runtime_reconcile_time_seconds_bucket",
    "controller_runtime_max_concurrent_reconciles",
    "controller_runtime_active_workers",
    "workqueue_depth",
    "workqueue_adds_total",
    "workqueue_queue_duration_seconds_bucket",
    "workqueue_work_duration_seconds_bucket",
    "workqueue_retries_total",
    "workqueue_unfinished_work_seconds",
    "workqueue_longest_running_processor_seconds",
    "leader_election_master_status",
]


def test_two_managers_do_not_clash_and_names_match_controller_runtime():
    a, b = Metrics(), Metrics()
    for m in (a, b):
        cm = m.controller("web")
        cm.result("success")
        cm.max_concurrent.set(2)
        q = m.queue("web")
        q.add("k")
        m.set_leader("lease", True)
    text = a.exposition().decode()
    for name in NAMES:
        assert f"\n{name}{{" in text or text.startswith(f"{name}{{"), name
    assert 'controller_runtime_reconcile_total{controller="web",result="success"} 1.0' in text


def test_queue_metrics_follow_client_go_semantics():
    now = [100.0]
    m = Metrics()
    q = m.queue("q", clock=lambda: now[0])
    q.add("a")
    q.add("b")
    now[0] = 101.0
    q.get("a")
    now[0] = 103.0
    get = m.registry.get_sample_value
    labels = {"controller": "q", "name": "q"}
    assert get("workqueue_depth", labels) == 1
    assert get("workqueue_adds_total", labels) == 2
    assert get("workqueue_queue_duration_seconds_sum", labels) == 1.0
    assert get("workqueue_unfinished_work_seconds", labels) == 2.0
    assert get("workqueue_longest_running_processor_seconds", labels) == 2.0
    q.done("a")
    assert get("workqueue_work_duration_seconds_sum", labels) == 2.0
    q.retry()
    assert get("workqueue_retries_total", labels) == 1


def test_queue_histograms_reach_1000_seconds():
    """Issue 8, bug 10: client-go's workqueue buckets go up to 10^3 s; a key that waited out a
    long backoff (up to 1000 s) must land in a real bucket, not only in +Inf."""
    m = Metrics()
    q = m.queue("slow", clock=lambda: now[0])
    now = [0.0]
    q.add("k")
    now[0] = 500.0
    q.get("k")
    labels = {"controller": "slow", "name": "slow"}
    bucket = "workqueue_queue_duration_seconds_bucket"
    assert m.registry.get_sample_value(bucket, {**labels, "le": "1000.0"}) == 1
    assert m.registry.get_sample_value(bucket, {**labels, "le": "100.0"}) == 0
