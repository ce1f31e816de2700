"""Windowed delivery (PipelinedHandler): in flight at once, cursor strictly in order, failures judged by the policy."""

import threading
import time

import pytest

from agent.events import Event, EventBus, Journal, PermanentError, PipelinedHandler, Receipt
from agent.events.policies import RetryPolicy, TransientError
from tests.conftest import wait_for


class Ticket(Receipt):
    def __init__(self, event):
        self.event = event
        self.done = threading.Event()
        self._error = None

    def confirm(self, error=None):
        self._error = error
        self.done.set()

    def wait(self, timeout):
        return self.done.wait(timeout)

    def error(self):
        return self._error


class Far(PipelinedHandler):
    """A far end that confirms when the test says so."""

    def __init__(self, window=4, name="far"):
        self._name = name
        self.window = window
        self.tickets: list[Ticket] = []
        self.lock = threading.Lock()

    def submit(self, event):
        t = Ticket(event)
        with self.lock:
            self.tickets.append(t)
        return t

    def stalled(self):
        return "far end silent"

    def ids(self):
        return [t.event.payload["i"] for t in self.tickets]


def publish(bus, n, start=0):
    return [bus.publish(Event.create("custom", {"i": i})) for i in range(start, start + n)]


@pytest.fixture
def bus(journal):
    b = EventBus(journal)
    yield b
    b.stop(2)


def test_window_bounds_what_is_in_flight_and_cursor_waits_for_the_head(bus):
    far = Far(window=4)
    bus.register_handler(far)
    bus.start()
    publish(bus, 10)
    assert wait_for(lambda: len(far.tickets) == 4)
    assert not wait_for(lambda: len(far.tickets) > 4, 0.3)  # the window is full: nothing more is sent
    sub = bus.subscription("far")
    assert wait_for(lambda: sub.state == "retrying", 3) and sub.last_error == "far end silent"  # status says why
    far.tickets[2].confirm()
    far.tickets[3].confirm()
    assert not wait_for(lambda: len(far.tickets) > 4, 0.3)  # the head is unconfirmed: the window does not move
    assert bus.journal.cursor("far") == 0
    far.tickets[0].confirm()
    assert wait_for(lambda: len(far.tickets) == 5)  # the head retired: one more goes out
    assert not wait_for(lambda: len(far.tickets) > 5, 0.3)  # 2 and 3 wait behind the unconfirmed 1
    bus.journal.flush()
    assert bus.journal.cursor("far") == 1
    far.tickets[1].confirm()
    assert wait_for(lambda: len(far.tickets) == 8)  # 1, 2, 3 retired together: three more
    bus.journal.flush()
    assert bus.journal.cursor("far") == 4
    assert far.ids() == list(range(8))
    assert sub.state == "running"


def test_unconfirmed_window_is_resent_after_restart(tmp_path):
    path = tmp_path / "j.db"
    j = Journal(path)
    b = EventBus(j)
    far = Far(window=8)
    b.register_handler(far)
    b.start()
    publish(b, 5)
    assert wait_for(lambda: len(far.tickets) == 5)
    far.tickets[0].confirm()
    far.tickets[1].confirm()
    far.tickets[3].confirm()  # not 2: the cursor may pass 1 only
    assert wait_for(lambda: b.subscription("far").delivered == 2)
    b.stop(5)
    assert j.cursor("far") == 2
    j.close()
    j = Journal(path)
    b = EventBus(j)
    again = Far(window=8)
    b.register_handler(again)
    b.start()
    assert wait_for(lambda: len(again.tickets) == 3)
    assert again.ids() == [2, 3, 4]  # 3 again: it was confirmed behind an unconfirmed one
    b.stop(2)
    j.close()


def test_refused_event_is_dead_lettered_and_the_rest_flow(bus):
    far = Far(window=4)
    bus.register_handler(far, retry_policy=RetryPolicy(max_retries=0))
    bus.start()
    publish(bus, 3)
    assert wait_for(lambda: len(far.tickets) == 3)
    far.tickets[0].confirm()
    far.tickets[1].confirm(PermanentError("payload too large for the broker"))
    far.tickets[2].confirm()
    assert wait_for(lambda: bus.subscription("far").delivered == 2)
    bus.journal.flush()
    assert bus.journal.cursor("far") == 3
    dl = bus.journal.dead_letters(subscriber="far")
    assert len(dl) == 1 and "payload too large" in dl[0].reason
    assert len(far.tickets) == 3  # nothing resent


def test_transient_failure_rewinds_so_order_is_kept(bus):
    far = Far(window=4)
    bus.register_handler(far, retry_policy=RetryPolicy(max_retries=None, initial_delay=0))
    bus.start()
    publish(bus, 4)
    assert wait_for(lambda: len(far.tickets) == 4)
    far.tickets[0].confirm()
    far.tickets[1].confirm(TransientError("quota exceeded"))
    far.tickets[2].confirm()
    # 2 and 3 were in flight behind the failed 1: the stream is read again from 1, in order
    assert wait_for(lambda: len(far.tickets) == 7)
    assert far.ids() == [0, 1, 2, 3, 1, 2, 3]
    assert far.tickets[4].event.metadata.retry_count == 1
    for t in far.tickets[4:]:
        t.confirm()
    assert wait_for(lambda: bus.subscription("far").delivered == 4)
    bus.journal.flush()
    assert bus.journal.cursor("far") == 4
    assert bus.journal.dead_letters(subscriber="far") == []


def test_submit_that_raises_is_judged_like_a_failed_delivery(bus):
    class Oversize(Far):
        def submit(self, event):
            if event.payload["i"] == 1:
                raise PermanentError("too big")
            return super().submit(event)

    far = Oversize(window=4)
    bus.register_handler(far, retry_policy=RetryPolicy(max_retries=0))
    bus.start()
    publish(bus, 3)
    assert wait_for(lambda: len(far.tickets) == 2)
    for t in far.tickets:
        t.confirm()
    assert wait_for(lambda: bus.subscription("far").delivered == 2)
    assert far.ids() == [0, 2]
    assert len(bus.journal.dead_letters(subscriber="far")) == 1


def test_handle_keeps_the_plain_contract():
    far = Far()
    ev = Event.create("custom", {"i": 1})
    outcome = []

    def call():
        try:
            far.handle(ev)
            outcome.append("returned")
        except PermanentError as e:
            outcome.append(str(e))

    t = threading.Thread(target=call)
    t.start()
    assert wait_for(lambda: far.tickets)
    assert not wait_for(lambda: outcome, 0.2)  # waits for the confirmation
    far.tickets[0].confirm(PermanentError("no"))
    t.join(3)
    assert outcome == ["no"]


class Gated(Far):
    """A far end that is sometimes not there (a broker down): nothing is submitted until it is."""

    def __init__(self, window=4):
        super().__init__(window)
        self.ready = threading.Event()

    def wait_ready(self, timeout):
        return self.ready.wait(timeout)


def test_nothing_is_submitted_while_not_ready_and_a_rewind_meanwhile_skips_nothing(bus):
    far = Gated(window=4)
    far.ready.set()
    bus.register_handler(far, retry_policy=RetryPolicy(max_retries=None, initial_delay=0))
    bus.start()
    publish(bus, 2)
    assert wait_for(lambda: len(far.tickets) == 2)
    far.ready.clear()  # the connection drops
    publish(bus, 2, start=2)
    assert not wait_for(lambda: len(far.tickets) > 2, 0.5)
    sub = bus.subscription("far")
    assert wait_for(lambda: sub.state == "retrying", 3)  # status says why it waits
    far.tickets[0].confirm()
    far.tickets[1].confirm(TransientError("refused"))  # judged while waiting to be ready: rewinds to 1
    time.sleep(0.5)
    far.ready.set()
    assert wait_for(lambda: len(far.tickets) == 5)
    assert far.ids() == [0, 1, 1, 2, 3]  # 1 again, then on in order: nothing stepped over
    for t in far.tickets[2:]:
        t.confirm()
    assert wait_for(lambda: sub.delivered == 4)
    bus.journal.flush()
    assert bus.journal.cursor("far") == 4


def test_window_follows_the_handler(bus):
    far = Far(window=8)
    bus.register_handler(far)
    bus.start()
    far.window = 2  # e.g. the broker said it takes 2 at once
    publish(bus, 5)
    assert wait_for(lambda: len(far.tickets) == 2)
    assert not wait_for(lambda: len(far.tickets) > 2, 0.3)
