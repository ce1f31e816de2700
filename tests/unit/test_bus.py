import threading
import time

import pytest

from agent.events import (
    BaseHandler, CircuitBreaker, EnrichmentMiddleware, Event, EventBus, EventFilter, EventValidationError,
    FilteringHandler, HandlerChain, Journal, LifecycleManager, LifecycleState, PermanentError, RetryPolicy,
    ValidationMiddleware,
)
from tests.conftest import wait_for as wait_until
from tests.mock_transport import MockTransport


def ev(i, t="custom"):
    return Event.create(t, {"i": i})


class Recorder(BaseHandler):
    def __init__(self, name="recorder", types=()):
        self._name = name
        self.event_types = types
        self.seen: list[Event] = []

    def handle(self, event):
        self.seen.append(event)


@pytest.fixture
def bus(journal):
    b = EventBus(journal)
    yield b
    b.stop(2)


def test_durable_handler_gets_backlog_in_order_and_ephemeral_only_new(bus):
    early = [bus.publish(ev(i)) for i in range(5)]
    rec = Recorder()
    bus.register_handler(rec)
    live: list[Event] = []
    bus.register_handler(live.append)  # a callable without a name: ephemeral
    bus.start()
    late = [bus.publish(ev(i)) for i in range(5, 10)]
    assert wait_until(lambda: len(rec.seen) == 10 and len(live) == 5)
    assert [e.id for e in rec.seen] == [e.id for e in early + late]
    assert [e.id for e in live] == [e.id for e in late]
    assert bus.handler_count == 2
    assert bus.journal.cursor("recorder") is not None
    assert bus.journal.cursor(live.append.__qualname__) is None  # nothing kept for the ephemeral one


def test_unacknowledged_event_is_redelivered_after_restart(tmp_path):
    path = tmp_path / "j.db"
    release = threading.Event()

    class Stuck(BaseHandler):
        name = "stuck"
        seen: list[str] = []

        def handle(self, event):
            self.seen.append(event.id)
            if event.payload["i"] == 3:
                release.wait(5)  # still working on #3 when the bus is stopped
                raise ConnectionError("sink went away")

    j = Journal(path)
    b = EventBus(j)
    h = Stuck()
    b.register_handler(h, retry_policy=RetryPolicy(max_retries=None, initial_delay=30))
    b.start()
    ids = [b.publish(ev(i)).id for i in range(6)]
    assert wait_until(lambda: len(h.seen) == 4)
    release.set()
    b.stop(5)
    j.close()

    got: list[str] = []
    j2 = Journal(path)
    b2 = EventBus(j2)
    b2.register_handler(lambda e: got.append(e.id), name="stuck")
    b2.start()
    assert wait_until(lambda: len(got) == 3)
    b2.stop()
    j2.close()
    assert got == ids[3:]  # 0..2 were acknowledged; 3 was not, so it and everything after come again


def test_failing_handler_retried_with_backoff_while_another_keeps_flowing(bus):
    attempts: list[tuple[int, int, float]] = []

    class Flaky(BaseHandler):
        name = "flaky"

        def handle(self, event):
            attempts.append((event.payload["i"], event.metadata.retry_count, time.monotonic()))
            if event.metadata.retry_count < 3:
                raise ConnectionError("WATS unreachable")

    fast = Recorder("fast")
    bus.register_handler(Flaky(), retry_policy=RetryPolicy(max_retries=5, initial_delay=0.1, jitter=False))
    bus.register_handler(fast)
    bus.start()
    ids = [bus.publish(ev(i)).id for i in range(3)]
    assert wait_until(lambda: len(fast.seen) == 3, 2)
    assert len([a for a in attempts if a[1] == 3]) < 3  # the fast one finished while the flaky one was retrying
    assert wait_until(lambda: len([a for a in attempts if a[1] == 3]) == 3, 10)
    first = [a for a in attempts if a[0] == 0]
    assert [a[1] for a in first] == [0, 1, 2, 3]
    gaps = [b[2] - a[2] for a, b in zip(first, first[1:])]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.18 and gaps[2] >= 0.36  # 0.1, 0.2, 0.4: exponential
    assert [a[0] for a in attempts] == sorted(a[0] for a in attempts)  # order kept through retries
    assert bus.dead_letters.is_empty
    assert bus.metrics.failed[("flaky", "custom")] == 9
    assert bus.metrics.delivered[("fast", "custom")] == 3
    assert [e.id for e in fast.seen] == ids


def test_poison_event_is_dead_lettered_and_replayed_with_dlq_retry(bus):
    fixed = threading.Event()
    delivered: list[int] = []

    class Picky(BaseHandler):
        name = "picky"

        def handle(self, event):
            if event.payload["i"] == 2 and not fixed.is_set():
                raise KeyError("part_number")
            delivered.append(event.payload["i"])

    errors = []
    bus.on_error(lambda e, err, name: errors.append((e.payload["i"], name, type(err).__name__)))
    bus.register_handler(Picky(), retry_policy=RetryPolicy(max_retries=2, initial_delay=0))
    bus.start()
    for i in range(5):
        bus.publish(ev(i))
    assert wait_until(lambda: delivered == [0, 1, 3, 4])
    assert errors == [(2, "picky", "KeyError")] * 3
    [entry] = bus.dead_letters.get_entries()
    assert entry.event.payload == {"i": 2} and entry.handler_name == "picky" and entry.retry_count == 3
    assert "KeyError" in entry.error and "part_number" in entry.error
    fixed.set()
    marked, _ = bus.journal.request_retry([entry.id])
    assert marked == [entry.id]
    assert wait_until(lambda: delivered == [0, 1, 3, 4, 2], 10)
    assert wait_until(lambda: bus.dead_letters.is_empty, 5)


def test_permanent_error_skips_retries(bus):
    calls = []

    def reject(e):
        calls.append(e.id)
        raise PermanentError("400 Bad Request: missing pn")

    bus.register_handler(reject, name="wats-like", retry_policy=RetryPolicy(max_retries=None))
    bus.start()
    bus.publish(ev(1))
    assert wait_until(lambda: bus.dead_letters.size == 1)
    assert len(calls) == 1
    assert "400 Bad Request" in bus.dead_letters.get_entries(limit=1)[0].error


def test_circuit_breaker_pauses_a_dead_sink_and_probes_until_it_recovers(bus):
    up = threading.Event()
    calls: list[float] = []

    def sink(e):
        calls.append(time.monotonic())
        if not up.is_set():
            raise ConnectionError("refused")

    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=0.5)
    other = Recorder("other")
    sub = bus.register_handler(sink, name="sink", circuit_breaker=breaker,
                               retry_policy=RetryPolicy(max_retries=None, initial_delay=0.01, jitter=False))
    bus.register_handler(other)
    bus.start()
    for i in range(3):
        bus.publish(ev(i))
    assert wait_until(lambda: sub.state == "circuit_open", 3)
    t0 = len(calls)
    time.sleep(1.2)
    probes = len(calls) - t0
    assert 1 <= probes <= 3, probes  # one probe per reset_timeout, not a hammering retry loop
    assert len(other.seen) == 3  # the other subscriber was not held up
    up.set()
    assert wait_until(lambda: sub.state == "running" and sub.cursor == bus.journal.last_seq, 3)
    assert breaker.is_closed and breaker.times_opened >= 1
    assert bus.dead_letters.is_empty  # an outage costs nothing


def test_disabled_handler_pauses_instead_of_skipping(bus):
    rec = Recorder("pausable")
    rec.enabled = False
    bus.register_handler(rec)
    bus.start()
    bus.publish(ev(1))
    time.sleep(0.3)
    assert rec.seen == []
    rec.enabled = True
    assert wait_until(lambda: len(rec.seen) == 1)


def test_types_and_filters_select_events(bus):
    results = Recorder("results", types=("test.result",))

    class Failures(FilteringHandler):
        name = "failures"

        def __init__(self):
            super().__init__()
            self.seen = []
            self.add_filter(lambda e: e.payload.get("result") == "fail")

        def handle(self, event):
            self.seen.append(event)

    fails = Failures()
    bus.register_handler(results)
    bus.register_handler(fails)
    only_cli = Recorder("only-cli")
    bus.register_handler(only_cli, event_filter=EventFilter().by_source("cli").exclude_type("test.result"))
    bus.start()
    for r in ("pass", "fail"):
        bus.publish(Event.create("test.result", {"unit_id": "U", "result": r, "start_time": "2026-01-01T00:00:00Z"}))
    bus.publish(Event.create("custom", {}, source="cli"))
    bus.publish(Event.create("custom", {}, source="other"))
    assert bus.wait_idle(5)
    assert [e.payload["result"] for e in results.seen] == ["pass", "fail"]
    assert [e.payload["result"] for e in fails.seen] == ["fail"]
    assert [e.source for e in only_cli.seen] == ["cli"]
    assert [h.name for h in bus.get_handlers("test.result")] == ["failures", "only-cli", "results"]


def test_async_handlers_are_refused(bus):
    async def handler(e):
        pass

    with pytest.raises(TypeError, match="async"):
        bus.register_handler(handler, name="async")


def test_duplicate_names_are_refused(bus):
    bus.register_handler(Recorder("same"))
    with pytest.raises(ValueError, match="already registered"):
        bus.register_handler(Recorder("same"))


def test_publish_chain_validates_and_enriches(journal):
    bus = EventBus(journal, chain=HandlerChain([ValidationMiddleware(), EnrichmentMiddleware({"station": "st-7"})]))
    out = bus.publish(Event.create("custom", {}, custom={"line": 2}))
    assert out.metadata.custom == {"station": "st-7", "line": 2}
    bad = Event.create("test.result", {"unit_id": "U", "result": "Passed", "start_time": "2026-01-01T00:00:00Z"},
                       validate=False)
    with pytest.raises(EventValidationError, match=r"\$\.result"):
        bus.publish(bad)
    assert journal.last_seq == 1  # the invalid one never entered the journal
    seen = []
    bus.on_event(seen.append)
    bus.publish(ev(2))
    assert len(seen) == 1 and bus.metrics.published["custom"] == 2


def test_a_handler_and_the_mock_transport(bus):
    class Seed(BaseHandler):
        name = "seed"
        got = []

        def handle(self, event):
            self.got.append(event.payload["i"])

    bus.register_handler(Seed())
    t = MockTransport()
    bus.register_transport(t)
    bus.start()
    assert t.is_connected
    t.inject_events([ev(1), ev(2)])
    assert wait_until(lambda: Seed.got == [1, 2])
    assert t.event_count == 2 and len(bus.journal.read_after(0, 10)) == 2
    t.configure_failure(fail_on_inject=True)
    with pytest.raises(ConnectionError):
        t.inject_event(ev(3))
    assert t.get_stats()["errors"] == 1
    bus.stop()
    assert not t.is_connected


def test_a_policy_without_retries_dead_letters_the_first_failure(bus):
    bus.register_handler(lambda e: 1 / 0, name="div", retry_policy=RetryPolicy(max_retries=0))
    bus.start()
    bus.publish(ev(1))
    assert wait_until(lambda: bus.dead_letters.size == 1)
    assert bus.dead_letters.get_entries()[0].error.startswith("ZeroDivisionError")
    assert bus.dead_letters.clear() == 1 and bus.dead_letters.is_empty


def test_lifecycle_starts_in_order_and_rolls_back_a_failed_start():
    order = []

    class C:
        def __init__(self, name, fail=False):
            self.name, self.fail = name, fail

        def start(self):
            if self.fail:
                raise RuntimeError(f"{self.name} broke")
            order.append(f"start {self.name}")

        def stop(self):
            order.append(f"stop {self.name}")

    lm = LifecycleManager()
    lm.add_component(C("sources"), 100)
    lm.add_component(C("bus"), 10)
    lm.start()
    assert lm.is_running and order == ["start bus", "start sources"]
    lm.stop()
    assert order[2:] == ["stop sources", "stop bus"] and lm.state is LifecycleState.STOPPED
    order.clear()
    bad = LifecycleManager()
    bad.add_component(C("bus"), 10)
    bad.add_component(C("sink", fail=True), 50)
    with pytest.raises(RuntimeError, match="sink broke"):
        bad.start()
    assert order == ["start bus", "stop bus"] and bad.state is LifecycleState.ERROR


def test_a_transport_may_unregister_its_handler_while_the_bus_stops(journal):
    from agent.events import ThreadedTransport

    class WithLamp(ThreadedTransport):
        def run(self, stop):
            self._bus.register_handler(lambda e: None, name="lamp", durable=False)
            self.mark_connected()
            stop.wait()
            self._bus.unregister_handler("lamp")  # needs the bus while it is stopping

    bus = EventBus(journal)
    t = WithLamp("lamp-source")
    bus.register_transport(t)
    bus.start()
    assert wait_until(lambda: t.is_connected)
    started = time.monotonic()
    assert bus.stop(timeout=5)
    assert time.monotonic() - started < 1.0  # no lock-order stall until the join timed out
    assert bus.handler_count == 0


class PoisonRuns(BaseHandler):
    """A sink that refuses events as WATS refuses a bad report (400), the event's fault: runs of 6 bad ones (a
    firmware that sent a batch without part numbers) between runs of 6 good ones."""

    def __init__(self, name="poisoned"):
        self._name = name
        self.handled: list[int] = []

    def handle(self, event):
        if (event.payload["i"] // 6) % 2 == 1:
            raise PermanentError("WATS refused it (400): missing part number")
        self.handled.append(event.payload["i"])


@pytest.mark.parametrize("pipelined", [False, True])
def test_permanent_failures_do_not_open_the_circuit_breaker(bus, pipelined):
    """Issue 16.7: every 5 bad events paused the WATS uplink min(30 s, retry_max). Only transient failures may."""
    from agent.events import PipelinedHandler
    from agent.events.handlers import SettableReceipt

    class PipelinedPoison(PipelinedHandler, PoisonRuns):
        def submit(self, event):
            try:
                PoisonRuns.handle(self, event)
            except PermanentError as e:
                return SettableReceipt().settle(e)
            return SettableReceipt().settle()

    sink = PipelinedPoison() if pipelined else PoisonRuns()
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=30.0)  # the WATS uplink's
    sub = bus.register_handler(sink, circuit_breaker=breaker, retry_policy=RetryPolicy(max_retries=None))
    bus.start()
    bus.publish_many([ev(i) for i in range(60)])
    assert wait_until(lambda: sub.cursor == bus.journal.last_seq, 10), (sub.state, breaker.state)
    assert breaker.times_opened == 0 and breaker.is_closed
    assert bus.dead_letters.size == 30 and len(sink.handled) == 30


def test_a_permanent_failure_of_the_half_open_probe_lets_the_next_event_probe(journal):
    """The breaker opened for an outage; the probe hits a bad event. It must not wait for an outcome forever."""
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=1.0, clock=lambda: now[0])
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.is_open
    now[0] = 1.5
    assert breaker.can_proceed()  # the probe
    from agent.events import ErrorPolicy, DeadLetterQueue

    policy = ErrorPolicy(RetryPolicy(max_retries=None), breaker, DeadLetterQueue(journal))
    decision = policy.handle_failure(ev(1), PermanentError("400"), "sink")
    assert not decision.retry and decision.entry is not None
    assert breaker.can_proceed()  # the next event probes
    breaker.record_success()
    assert breaker.is_closed
    # a transient failure still counts
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.is_open
