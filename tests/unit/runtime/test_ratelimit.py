"""Rate limiter sequences (pure, fake clock)."""

from __future__ import annotations

import pytest

from kaito.runtime import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)
from kaito.runtime.workqueue import ItemFastSlowRateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_exponential_sequence_5ms_to_1000s() -> None:
    rl = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    seq = [rl.when("a") for _ in range(20)]
    assert seq[:5] == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert seq[17] == pytest.approx(0.005 * 2**17)  # 655.36 s
    assert seq[18] == 1000.0 and seq[19] == 1000.0
    assert rl.num_requeues("a") == 20
    assert rl.when("b") == pytest.approx(0.005)  # per item
    rl.forget("a")
    assert rl.num_requeues("a") == 0
    assert rl.when("a") == pytest.approx(0.005)


def test_exponential_does_not_overflow() -> None:
    rl = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    for _ in range(2000):
        d = rl.when("a")
    assert d == 1000.0


def test_bucket_burst_then_qps() -> None:
    clock = FakeClock()
    rl = BucketRateLimiter(qps=10, burst=3, clock=clock)
    assert [rl.when(i) for i in range(3)] == [0, 0, 0]
    assert rl.when(3) == pytest.approx(0.1)
    assert rl.when(4) == pytest.approx(0.2)
    clock.now += 1.0  # refills, but never above burst
    assert [rl.when(i) for i in range(2)] == [0, 0]


def test_max_of_takes_worst() -> None:
    clock = FakeClock()
    rl = MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000), BucketRateLimiter(1, 1, clock=clock)
    )
    assert rl.when("a") == pytest.approx(0.005)
    assert rl.when("a") == pytest.approx(1.0)  # bucket is empty: 1 s
    assert rl.num_requeues("a") == 2
    rl.forget("a")
    assert rl.num_requeues("a") == 0


def test_fast_slow() -> None:
    rl = ItemFastSlowRateLimiter(0.1, 5, 2)
    assert [rl.when("a") for _ in range(4)] == [0.1, 0.1, 5, 5]


def test_default_controller_rate_limiter() -> None:
    rl = default_controller_rate_limiter(clock=FakeClock())
    assert rl.when("x") == pytest.approx(0.005)
    assert rl.when("x") == pytest.approx(0.01)
