"""``EventBus``: the seed's API, made durable.

``publish`` returns only once the event is in the journal (group-committed, fsynced per batch). Every named
handler is a durable subscriber with its own cursor and thread: it receives events in journal order, at least
once, across crashes and restarts; its failures are retried for it alone, dead-lettered with their reason when the
policy gives up, and its circuit breaker pauses it alone.

What the pyWATS bus did and this one does not (``reference/wats-api.md`` §8): run handlers in the publisher's
thread, create an event loop per call, lose the queue on a crash, re-dispatch a retry to handlers that already
succeeded, retry without delay, keep dead letters in a bounded deque, and ship a circuit breaker nobody called.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .chain import HandlerChain, ValidationMiddleware
from .handlers import BaseHandler, HandlerRegistry, as_handler
from .journal import Journal, JournalFull
from .model import Event
from .policies import CircuitBreaker, DeadLetterQueue, ErrorPolicy, RetryPolicy
from .routing import EventFilter
from .subscriber import Subscription
from .telemetry import EventMetrics
from .transports import BaseTransport

log = logging.getLogger(__name__)


class EventBus:
    """Durable publish/subscribe over a ``Journal``.

    ``EventBus()`` with no journal uses a throw-away journal in a temporary directory (handy in a REPL; nothing
    survives). Pass ``journal=Journal(path)`` or a path for the real thing.
    """

    def __init__(
        self,
        journal: Journal | str | Path | None = None,
        *,
        name: str = "event-bus",
        chain: HandlerChain | None = None,
        metrics: EventMetrics | None = None,
        retry_policy_factory: Callable[[], RetryPolicy] = RetryPolicy,
        circuit_breaker_factory: Callable[[], CircuitBreaker] = CircuitBreaker,
    ) -> None:
        self._tmpdir: str | None = None
        if journal is None:
            self._tmpdir = tempfile.mkdtemp(prefix="fixture-agent-bus-")
            journal = Journal(Path(self._tmpdir) / "journal.db")
            self._owns_journal = True
        elif isinstance(journal, (str, Path)):
            journal = Journal(journal)
            self._owns_journal = True
        else:
            self._owns_journal = False
        self.journal: Journal = journal
        self._name = name
        self.chain = chain if chain is not None else HandlerChain([ValidationMiddleware()])
        self.metrics = metrics or EventMetrics()
        self.dead_letters = DeadLetterQueue(journal)
        self.registry = HandlerRegistry()
        self._subscriptions: dict[str, Subscription] = {}
        self._transports: list[BaseTransport] = []
        self._error_callbacks: list[Callable[[Event, BaseException, str], None]] = []
        self._event_callbacks: list[Callable[[Event], None]] = []
        self._retry_factory = retry_policy_factory
        self._breaker_factory = circuit_breaker_factory
        self._lock = threading.RLock()
        self._running = False
        self._stopping = False

    # ------------------------------------------------------------------------------------------------ info
    @property
    def name(self) -> str:
        return self._name

    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def handler_count(self) -> int:
        return self.registry.handler_count

    @property
    def transport_count(self) -> int:
        return len(self._transports)

    def get_handlers(self, event_type: Any) -> list[BaseHandler]:
        return self.registry.get_handlers(event_type)

    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions.values())

    def subscription(self, name: str) -> Subscription | None:
        return self._subscriptions.get(name)

    # ------------------------------------------------------------------------------------------------ callbacks
    def on_error(self, callback: Callable[[Event, BaseException, str], None]) -> None:
        """``callback(event, error, handler_name)`` after each failed delivery attempt (on that subscriber's thread)."""
        self._error_callbacks.append(callback)

    def on_event(self, callback: Callable[[Event], None]) -> None:
        """``callback(event)`` after each event became durable (on the publisher's thread)."""
        self._event_callbacks.append(callback)

    def _handler_failed(self, event: Event, error: BaseException, name: str) -> None:
        for cb in self._error_callbacks:
            try:
                cb(event, error, name)
            except Exception:  # noqa: BLE001 - an observer must not change delivery
                log.exception("on_error callback failed")

    # ------------------------------------------------------------------------------------------------ publish
    def publish(self, event: Event) -> Event:
        """Journal ``event`` (after the middleware chain) and return it once durable.

        Raises ``EventValidationError`` (naming the field) for a payload that does not fit its type, and
        ``JournalFull`` when the journal is at its bound with nothing evictable: never a silent drop.
        """
        return self.publish_many((event,))[0]

    def publish_many(self, events: Iterable[Event], state: dict[str, Any] | None = None,
                     expect: dict[str, Any] | None = None,
                     bad_input: Sequence[tuple[str, bytes, str]] = ()) -> list[Event]:
        """Journal several events (and optional state, compare-and-set against ``expect``, and bad input kept as
        dead letters) in one transaction: all durable, or none."""
        processed = [self.chain.process(e) for e in events]
        try:
            self.journal.append(processed, state, expect, bad_input)
        except JournalFull:
            for e in processed:
                self.metrics.record_refused(e.event_type)
            raise
        for e in processed:
            self.metrics.record_published(e.event_type)
        for cb in self._event_callbacks:
            for e in processed:
                try:
                    cb(e)
                except Exception:  # noqa: BLE001
                    log.exception("on_event callback failed")
        return processed

    # ------------------------------------------------------------------------------------------------ handlers
    def register_handler(
        self,
        handler: BaseHandler | Callable[[Event], Any],
        *,
        name: str | None = None,
        event_types: Iterable[Any] | None = None,
        event_filter: EventFilter | None = None,
        retry_policy: RetryPolicy | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        durable: bool | None = None,
        start: str = "earliest",
    ) -> Subscription:
        """Subscribe ``handler``. A ``BaseHandler`` or any callable given a ``name`` is durable: its cursor lives
        in the journal under that name. A bare callable without a name is ephemeral: it sees events published from
        now on, and nothing is kept for it."""
        h = as_handler(handler, name, event_types)
        if durable is None:
            durable = isinstance(handler, BaseHandler) or name is not None
        policy = ErrorPolicy(
            retry_policy or h.retry_policy or self._retry_factory(),
            circuit_breaker or h.circuit_breaker or self._breaker_factory(),
            self.dead_letters,
        )
        with self._lock:
            self.registry.register(h)
            try:
                sub = Subscription(
                    self.journal, h, durable=durable, error_policy=policy, metrics=self.metrics,
                    event_filter=event_filter, on_error=self._handler_failed, start=start,
                )
            except BaseException:
                self.registry.unregister(h)
                raise
            self._subscriptions[h.name] = sub
            if self._running:
                sub.start()
        return sub

    def unregister_handler(self, handler: BaseHandler | str, timeout: float = 5.0) -> bool:
        """Stop delivering to ``handler``. A durable subscriber's cursor stays in the journal (its events are kept
        for when it comes back); ``journal.drop_subscriber(name)`` forgets it for good."""
        name = handler if isinstance(handler, str) else handler.name
        with self._lock:
            sub = self._subscriptions.pop(name, None)
            self.registry.unregister(name)
        if sub is None:
            return False
        sub.stop()
        sub.join(timeout)
        return True

    # ------------------------------------------------------------------------------------------------ transports
    def register_transport(self, transport: BaseTransport) -> None:
        with self._lock:
            transport.set_event_bus(self)
            self._transports.append(transport)
            if self._running:
                transport.start()

    def unregister_transport(self, transport: BaseTransport) -> bool:
        with self._lock:
            if transport not in self._transports:
                return False
            self._transports.remove(transport)
        transport.stop()
        return True

    @property
    def transports(self) -> list[BaseTransport]:
        return list(self._transports)

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start every subscriber's thread, then the transports (so nothing is fed to a bus not yet delivering)."""
        with self._lock:
            if self._running:
                return
            self._running = True
            for sub in self._subscriptions.values():
                sub.start()
            started: list[BaseTransport] = []
            try:
                for t in self._transports:
                    t.start()
                    started.append(t)
            except BaseException:
                for t in reversed(started):
                    t.stop()
                self._stop_subscribers(5.0)
                self._running = False
                raise

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop transports, then subscribers (each finishes or abandons its current event, unacknowledged, so it
        is redelivered next time), then flush cursors. Returns False if some subscriber did not stop in time."""
        with self._lock:
            if not self._running or self._stopping:
                return True
            self._stopping = True
            transports = list(self._transports)
        # Outside the lock: a transport may unregister its own handlers while it stops.
        try:
            for t in reversed(transports):
                try:
                    t.stop()
                except Exception:  # noqa: BLE001 - keep stopping the rest
                    log.exception("stopping transport %s failed", t.name)
            ok = self._stop_subscribers(timeout)
        finally:
            with self._lock:
                self._running = False
                self._stopping = False
        self.journal.flush()
        return ok

    def _stop_subscribers(self, timeout: float) -> bool:
        with self._lock:
            subs = list(self._subscriptions.values())
        for sub in subs:
            sub.stop()
        deadline = time.monotonic() + timeout
        ok = True
        for sub in subs:
            if not sub.join(max(0.0, deadline - time.monotonic())):
                log.warning("subscriber %s did not stop within %.1fs; its current event will be redelivered",
                            sub.name, timeout)
                ok = False
        return ok

    def close(self) -> None:
        """Stop, and close the journal if this bus opened it."""
        self.stop()
        if self._owns_journal:
            self.journal.close()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> "EventBus":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_idle(self, timeout: float = 10.0, names: Sequence[str] | None = None) -> bool:
        """Block until the named (default: all) subscribers have caught up with the journal. For tests and tools."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.journal.last_seq
            subs = [s for n, s in self._subscriptions.items() if names is None or n in names]
            if all(s.cursor >= last for s in subs):
                return True
            time.sleep(0.01)
        return False
