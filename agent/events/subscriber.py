"""One subscriber's delivery loop: its own thread, its own cursor, its own retries and circuit breaker.

The loop reads the journal after the subscriber's cursor (a page at a time: the backlog is streamed, never
loaded), hands each matching event to the handler, and acknowledges it only after the handler returned or the
event was dead-lettered. A failing handler is retried with backoff *in its own thread*, so a slow or dead sink
never delays another subscriber; it holds back only its own later events, which keeps its order.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from .handlers import BaseHandler, PipelinedHandler
from .model import Event, EventValidationError, decode
from .policies import ErrorPolicy
from .routing import EventFilter

if TYPE_CHECKING:
    from .journal import Journal
    from .telemetry import EventMetrics

log = logging.getLogger(__name__)

PAGE = 256
RETRY_CHECK_INTERVAL = 2.0
POLL_INTERVAL = 1.0  # other processes (fixture-agent publish) append without notifying us


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    INTERRUPTED = "interrupted"


class Subscription:
    """A handler bound to a cursor. Durable subscriptions persist the cursor in the journal; ephemeral ones
    (a callable registered without a name) start at the end of the log and keep their place in memory only."""

    def __init__(
        self,
        journal: "Journal",
        handler: BaseHandler,
        *,
        durable: bool,
        error_policy: ErrorPolicy,
        metrics: "EventMetrics",
        event_filter: EventFilter | None = None,
        on_error: Callable[[Event, BaseException, str], None] | None = None,
        start: str = "earliest",
    ) -> None:
        self.journal = journal
        self.handler = handler
        self.name = handler.name
        self.durable = durable
        self.policy = error_policy
        self.metrics = metrics
        self.filter = event_filter
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "registered"
        self.last_error: str | None = None
        self.delivered = 0
        self.failed = 0
        # The cursor is created at registration, not at start: retention for this subscriber begins now.
        self.cursor = journal.register_subscriber(self.name, start) if durable else journal.last_seq
        types = handler.type_names()
        if event_filter is not None and event_filter.types is not None:
            types = event_filter.types if types is None else types & event_filter.types
        self._types = types
        self._coalesce = {getattr(t, "value", t) for t in handler.coalesce_types}
        if getattr(handler, "metrics", None) is None:
            handler.metrics = metrics  # what it flags (a total going down) is counted with the rest

    # ------------------------------------------------------------------------------------------------ control
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        resume = getattr(self.handler, "resume", None)
        if callable(resume):
            resume()
        self._thread = threading.Thread(target=self._run, name=f"subscriber-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        interrupt = getattr(self.handler, "interrupt", None)
        if callable(interrupt):  # a handler blocked in a wait of its own (a rate budget) ends it now
            interrupt()
        self.journal.wake_waiters()

    def join(self, timeout: float | None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _set_state(self, state: str, error: str | None = None) -> None:
        if state == self.state and error == self.last_error:
            return
        self.state = state
        if error is not None:
            self.last_error = error
        if self.durable:
            self.journal.set_subscriber_state(self.name, state, self.last_error)

    # ------------------------------------------------------------------------------------------------ loop
    def _run(self) -> None:
        self._set_state("running")
        try:
            if isinstance(self.handler, PipelinedHandler):
                from .pipeline import Pipeline

                Pipeline(self, self.handler).run()
            else:
                self._run_one_at_a_time()
        except Exception as e:  # noqa: BLE001 - e.g. the journal was closed under us; say so, don't vanish
            log.exception("subscriber %s stopped unexpectedly", self.name)
            self._set_state("failed", f"{type(e).__name__}: {e}")
            return
        self._set_state("stopped")

    def _run_one_at_a_time(self) -> None:
        next_retry_check = 0.0
        while not self._stop.is_set():
            if not self.handler.enabled:
                self._set_state("paused")
                self._stop.wait(0.5)
                continue
            if self.durable and time.monotonic() >= next_retry_check:
                self._replay_dead_letters()
                next_retry_check = time.monotonic() + RETRY_CHECK_INTERVAL
            page = self.journal.read_after(self.cursor, PAGE)
            if not page:
                if self.state != "running":
                    self._set_state("running")
                if not self._stop.is_set():
                    self.journal.wait_for_append(self.cursor, POLL_INTERVAL)
                continue
            superseded = self._superseded(page) if self._coalesce else ()
            for stored in page:
                if self._stop.is_set() or not self.handler.enabled:
                    break
                if stored.seq in superseded:
                    self.metrics.record_coalesced(self.name, stored.type)
                elif self._types is None or stored.type in self._types:
                    if self._process(stored.seq, stored.body) is Outcome.INTERRUPTED:
                        break
                self._advance(stored.seq)

    def _advance(self, seq: int) -> None:
        self.cursor = seq
        if self.durable:
            self.journal.ack(self.name, seq)

    def _superseded(self, page: list) -> set[int]:
        """Seqs in this page that a later event with the same coalesce key makes redundant. Only a page is looked
        at (never the whole backlog), so a long backlog is cut to about one event per key per page."""
        candidates = [s for s in page if s.type in self._coalesce]
        if len(candidates) < 2:
            return set()
        seen: set = set()
        out: set[int] = set()
        for stored in reversed(candidates):
            try:
                key = self.handler.coalesce_key(decode(stored.body))
            except EventValidationError:
                continue  # _process dead-letters it
            if key is None:
                continue
            if key in seen:
                out.add(stored.seq)
            else:
                seen.add(key)
        return out

    def _process(self, seq: int, body: bytes) -> Outcome:
        event = self.decoded(seq, body)
        if event is None:
            return Outcome.DEAD_LETTERED
        if not self.wants(event):
            return Outcome.DELIVERED
        return self.deliver(event)

    def decoded(self, seq: int, body: bytes) -> Event | None:
        try:
            return decode(body)
        except EventValidationError as e:
            # A row we cannot decode (written by a newer agent, or damaged): keep it, move on.
            self.journal.dead_letter(reason=f"undecodable journal row seq={seq}: {e}", subscriber=self.name,
                                     origin="journal", raw=bytes(body))
            self.metrics.record_dead_letter(self.name)
            return None

    def wants(self, event: Event) -> bool:
        return self.handler.can_handle(event) and (self.filter is None or self.filter.matches(event))

    def deliver(self, event: Event) -> Outcome:
        """Run the handler until it succeeds, the policy gives up (dead letter), or we are stopped."""
        attempt = event
        while True:
            if not self.wait_for_breaker():
                return Outcome.INTERRUPTED
            started = time.perf_counter()
            try:
                self.handler.handle(attempt)
            except Exception as error:  # noqa: BLE001 - every failure is the policy's to judge
                outcome = self.failure(attempt, error, started)
                if outcome is None:
                    attempt = attempt.with_retry()
                    continue
                return outcome
            self.success(event, started)
            return Outcome.DELIVERED

    def wait_for_breaker(self) -> bool:
        """Wait while the circuit breaker is open; False if stopped meanwhile."""
        while not self.policy.can_process():
            if self.state not in ("paused", "holding"):  # keep the more telling reason while the breaker waits
                self._set_state("circuit_open")
            wait = self.policy.circuit_breaker.time_until_probe()
            if self._stop.wait(min(max(wait, 0.05), 1.0)):
                return False
        return True

    def success(self, event: Event, started: float) -> None:
        latency = (time.perf_counter() - started) * 1000.0
        self.policy.record_success()
        self.delivered += 1
        self.metrics.record_delivery(self.name, event.event_type, latency, True)
        if self.state != "running":
            self._set_state("running")

    def failure(self, attempt: Event, error: BaseException, started: float) -> Outcome | None:
        """Ask the policy about a failed attempt. None: retry it (after the policy's delay, already waited);
        otherwise the outcome (dead-lettered, or interrupted while waiting)."""
        latency = (time.perf_counter() - started) * 1000.0
        self.failed += 1
        self.metrics.record_delivery(self.name, attempt.event_type, latency, False)
        text = f"{type(error).__name__}: {error}"
        if self._on_error is not None:
            self._on_error(attempt, error, self.name)
        decision = self.policy.handle_failure(attempt, error, self.name)
        if decision.retry:
            self._set_state(getattr(error, "state", "retrying"), text)
            return Outcome.INTERRUPTED if self._stop.wait(decision.delay) else None
        self.metrics.record_dead_letter(self.name)
        log.warning("subscriber %s: event %s (%s) dead-lettered: %s", self.name, attempt.id,
                    attempt.event_type, text)
        self._set_state("running", text)
        return Outcome.DEAD_LETTERED

    def _replay_dead_letters(self) -> None:
        """Deliver what ``fixture-agent dlq retry`` marked; the old row goes once it is delivered or replaced."""
        for dl in self.journal.retries_for(self.name):
            if self._stop.is_set():
                return
            try:
                event = decode(dl.body or b"")
            except EventValidationError as e:
                self.journal.redelivered(dl.id, False, f"cannot replay: {e}")
                continue
            event = msgspec.structs.replace(event, metadata=msgspec.structs.replace(event.metadata, retry_count=0))
            self.handler.replaying = dl.id
            try:
                outcome = self.deliver(event)
            finally:
                self.handler.replaying = None
            if outcome is Outcome.INTERRUPTED:
                return
            # Delivered: done. Dead-lettered again: a fresh row with the new reason replaced this one.
            self.journal.redelivered(dl.id, True)
