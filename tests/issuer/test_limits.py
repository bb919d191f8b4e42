"""Token buckets in memory: refill, refusal, and clock steps."""

from crumb.issuer.limits import TokenBuckets


def test_bucket_refills_at_rate():
    b = TokenBuckets()
    assert b.take("d", 2, rate=1.0, burst=2, now=100.0) == 0.0
    assert b.take("d", 1, rate=1.0, burst=2, now=100.0) == 1.0
    assert b.take("d", 1, rate=1.0, burst=2, now=101.0) == 0.0


def test_clock_stepping_back_neither_refills_nor_locks_out():
    b = TokenBuckets()
    assert b.take("d", 1, rate=1.0, burst=5, now=10_000.0) == 0.0
    # The clock steps back an hour: the device keeps what it had saved up.
    for _ in range(4):
        assert b.take("d", 1, rate=1.0, burst=5, now=6_400.0) == 0.0
    wait = b.take("d", 1, rate=1.0, burst=5, now=6_400.0)
    assert 0.0 < wait <= 1.0
    assert b.take("d", 1, rate=1.0, burst=5, now=6_401.0) == 0.0
