"""Windowed delivery for a ``PipelinedHandler``: many events in flight, the cursor still strictly in order.

The loop reads ahead of the cursor (``read_pos``), submits each wanted event, and keeps every journal position
it passed in a FIFO with its receipt (or none, for an event the handler does not want). The cursor follows the
head of the FIFO: it moves past a position only when that receipt confirmed (or the event was dead-lettered), so
whatever was not confirmed when the agent dies is sent again on the next start (Kafka's consumer offsets, with
the receipts as commits).

A failed receipt is judged by the subscriber's error policy, as a failed ``handle`` would be: a dead letter and
the FIFO goes on; a retry means everything after it in flight is abandoned and the stream is re-read from the
failed event after the policy's delay, so the far end never sees a later event delivered while an earlier one
is being retried (those abandoned may arrive twice; consumers drop duplicates by event id).
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from .handlers import PipelinedHandler, Receipt, SettableReceipt
from .model import Event

if TYPE_CHECKING:
    from .subscriber import Subscription

#: How long a stopping subscriber waits for confirmations already on their way (fewer resends on the next start).
STOP_GRACE = 1.0
#: How long the oldest delivery may wait for its confirmation before ``status`` is told why.
STALL_REPORT = 1.0


class _Slot(NamedTuple):
    seq: int
    event: Event | None
    receipt: Receipt | None  # None: nothing to wait for (not wanted, coalesced, dead-lettered)
    started: float


class Pipeline:
    def __init__(self, sub: "Subscription", handler: PipelinedHandler) -> None:
        self.sub = sub
        self.handler = handler
        self.slots: deque[_Slot] = deque()
        self.read_pos = sub.cursor
        self.retry_seq = -1  # the event being retried, and how often it failed: the policy's backoff grows
        self.retries = 0

    def run(self) -> None:
        from .subscriber import PAGE, POLL_INTERVAL, RETRY_CHECK_INTERVAL

        sub = self.sub
        next_retry_check = 0.0
        while not sub._stop.is_set():
            if not self.handler.enabled:
                self.settle(keep=0, patience=STOP_GRACE)
                sub._set_state("paused")
                sub._stop.wait(0.5)
                continue
            if sub.durable and time.monotonic() >= next_retry_check and sub.journal.retries_for(sub.name):
                # `dlq retry` asked for some: let the window drain, then replay them one at a time
                if self.settle(keep=0, patience=5.0) and not self.slots:
                    sub._replay_dead_letters()
                next_retry_check = time.monotonic() + RETRY_CHECK_INTERVAL
            elif time.monotonic() >= next_retry_check:
                next_retry_check = time.monotonic() + RETRY_CHECK_INTERVAL
            page = sub.journal.read_after(self.read_pos, min(PAGE, self.window))
            if not page:
                if self.slots:
                    self.settle(keep=0, patience=0.05)
                    continue
                if sub.state != "running":
                    sub._set_state("running")
                sub.journal.wait_for_append(self.read_pos, POLL_INTERVAL)
                continue
            superseded = sub._superseded(page) if sub._coalesce else ()
            for stored in page:
                if sub._stop.is_set() or not self.handler.enabled:
                    break
                slot = _Slot(stored.seq, None, None, 0.0)
                if stored.seq in superseded:
                    sub.metrics.record_coalesced(sub.name, stored.type)
                elif sub._types is None or stored.type in sub._types:
                    event = sub.decoded(stored.seq, stored.body)
                    if event is not None and sub.wants(event):
                        if not sub.wait_for_breaker() or not self.wait_ready():
                            break  # stopped, or rewound meanwhile: this row was not taken
                        slot = self.submit(stored.seq, event)
                self.slots.append(slot)
                self.read_pos = stored.seq  # only once the row has its slot: nothing is ever stepped over
                if not self.settle(keep=self.window - 1, patience=None):
                    break  # rewound or stopped: the page is stale
        self.settle(keep=0, patience=STOP_GRACE, stopping=True)

    @property
    def window(self) -> int:
        return max(1, int(self.handler.window))

    def wait_ready(self) -> bool:
        """Until the handler can send now, retiring confirmations meanwhile. False if stopped, or if a failed
        confirmation rewound the stream meanwhile (the caller must read again from ``read_pos``)."""
        since = time.perf_counter()
        while not self.handler.wait_ready(0.2):
            if self.sub._stop.is_set():
                return False
            if not self.settle(keep=self.window - 1, patience=0.0):
                return False
            if time.perf_counter() - since >= STALL_REPORT:
                self.report_stall()
        return True

    def submit(self, seq: int, event: Event) -> _Slot:
        if seq == self.retry_seq:
            event = msgspec.structs.replace(
                event, metadata=msgspec.structs.replace(event.metadata, retry_count=self.retries))
        started = time.perf_counter()
        try:
            receipt = self.handler.submit(event)
        except Exception as e:  # noqa: BLE001 - judged by the policy like any failure
            receipt = SettableReceipt().settle(e)
        return _Slot(seq, event, receipt, started)

    def settle(self, *, keep: int, patience: float | None, stopping: bool = False) -> bool:
        """Retire confirmed slots from the head, waiting while more than ``keep`` are in flight (up to
        ``patience`` seconds; None: until stopped). False when the stream must be re-read (a retry rewound it,
        or the subscriber is stopping)."""
        sub = self.sub
        deadline = None if patience is None else time.monotonic() + patience
        while self.slots:
            slot = self.slots[0]
            if slot.receipt is not None:
                must_wait = len(self.slots) > keep
                remaining = 0.0 if deadline is None else deadline - time.monotonic()
                step = 0.0 if not must_wait else (0.2 if deadline is None else max(0.0, min(0.2, remaining)))
                if not slot.receipt.wait(step):
                    if time.perf_counter() - slot.started >= STALL_REPORT:
                        self.report_stall()
                    if not must_wait or (deadline is not None and time.monotonic() >= deadline):
                        return True
                    if sub._stop.is_set() and not stopping:
                        return False
                    continue
                assert slot.event is not None
                error = slot.receipt.error()
                if error is not None:
                    if stopping:
                        return False  # resent on the next start
                    if not self.failed(slot, error):
                        return False
                    continue  # dead-lettered: failed() retired it
                sub.success(slot.event, slot.started)
                if slot.seq == self.retry_seq:
                    self.retry_seq, self.retries = -1, 0
            self.slots.popleft()
            sub._advance(slot.seq)
        return True

    def report_stall(self) -> None:
        """The oldest delivery has waited a while: let ``status`` say why (the handler knows)."""
        reason = self.handler.stalled()
        if reason and (self.sub.state != "retrying" or self.sub.last_error != reason):
            self.sub._set_state("retrying", reason)

    def failed(self, slot: _Slot, error: BaseException) -> bool:
        """True: dead-lettered, retired, go on. False: rewound to retry it (or stopped while waiting)."""
        from .subscriber import Outcome

        assert slot.event is not None
        outcome = self.sub.failure(slot.event, error, slot.started)
        if outcome is Outcome.DEAD_LETTERED:
            self.slots.popleft()
            self.sub._advance(slot.seq)
            return True
        # Retry (the policy's delay already waited) or stopping: start again from the failed event.
        self.retries = self.retries + 1 if slot.seq == self.retry_seq else 1
        self.retry_seq = slot.seq
        self.slots.clear()
        self.read_pos = self.sub.cursor
        return False
