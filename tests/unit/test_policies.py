import random

import pytest

from agent.events import CircuitBreaker, CircuitState, Event, EventValidationError, PermanentError, RetryPolicy, TransientError
from agent.events.backoff import backoff_delay


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_backoff_is_exponential_capped_and_jittered():
    assert [backoff_delay(n, initial=1, maximum=60, jitter=0) for n in (1, 2, 3, 7, 20)] == [1, 2, 4, 60, 60]
    rng = random.Random(1)
    samples = [backoff_delay(3, initial=1, jitter=0.1, rng=rng) for _ in range(200)]
    assert 3.6 <= min(samples) < 3.8 and 4.2 < max(samples) <= 4.4
    assert backoff_delay(0) == 0.0


def test_retry_policy_limits_and_classification():
    p = RetryPolicy(max_retries=2)
    e = Event.create("custom", {})
    assert p.should_retry(e, ConnectionError())
    assert not p.should_retry(e.with_retry().with_retry(), ConnectionError())
    assert not p.should_retry(e, PermanentError("400"))
    assert not p.should_retry(e, EventValidationError("bad"))
    p.retry_on(ConnectionError)
    assert not p.should_retry(e, KeyError("x"))
    assert p.should_retry(e, TransientError("503"))
    p.add_predicate(lambda ev, err: "later" in str(err))
    assert p.should_retry(e, ConnectionError("try later")) and not p.should_retry(e, ConnectionError("no"))
    forever = RetryPolicy(max_retries=None)
    deep = e
    for _ in range(50):
        deep = deep.with_retry()
    assert forever.should_retry(deep, OSError())
    assert RetryPolicy(initial_delay=2, jitter=False).get_delay(e.with_retry()) == 4.0


def test_circuit_breaker_state_machine():
    clock = Clock()
    cb = CircuitBreaker(failure_threshold=3, reset_timeout=10, success_threshold=2, clock=clock)
    for _ in range(2):
        cb.record_failure()
    cb.record_success()  # a success resets the consecutive count
    cb.record_failure(); cb.record_failure()
    assert cb.is_closed and cb.can_proceed()
    cb.record_failure()
    assert cb.is_open and not cb.can_proceed() and cb.time_until_probe() == 10
    clock.t = 10
    assert cb.state is CircuitState.HALF_OPEN
    assert cb.can_proceed() and not cb.can_proceed()  # one probe at a time
    cb.record_failure()  # failed probe: open again, timer restarts
    assert cb.is_open and cb.time_until_probe() == 10
    clock.t = 20
    assert cb.can_proceed()
    cb.record_success()
    assert cb.state is CircuitState.HALF_OPEN  # needs two successes
    assert cb.can_proceed()
    cb.record_success()
    assert cb.is_closed and cb.times_opened == 2
    cb.reset()
    assert cb.is_closed
