"""Retry, circuit breaker and dead letters: what happens when a handler fails.

Unlike the pyWATS originals (see ``reference/wats-api.md`` §8.4) every class here is used by the running bus:
the subscriber loop asks its ``ErrorPolicy`` after each failure, which consults the ``RetryPolicy`` (and sleeps
its backoff for that subscriber alone), feeds the ``CircuitBreaker`` (which pauses that subscriber alone), and
writes exhausted or permanent failures to the journal's dead-letter table through ``DeadLetterQueue``
(``dead_letters.py``, with the rows and their SQL).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .backoff import backoff_delay
from .dead_letters import DeadLetterEntry, DeadLetterQueue
from .model import Event, EventValidationError


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help (a 400 from the server, a payload it cannot map)."""


class TransientError(Exception):
    """Raise from a handler when the failure is the outside world's (network, 5xx) and a retry may succeed.
    ``retry_after`` (seconds) is honoured as the minimum wait before the next attempt; ``state`` is what
    ``status`` shows for the subscriber while it waits (a subclass says "paused" or "holding" when that is truer)."""

    state = "retrying"

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotDelivered(TransientError):
    """A transient failure where the request certainly changed nothing on the other side (no connection, or a
    refusal before processing such as HTTP 429/503): a non-idempotent request may be sent again unchecked."""


# ------------------------------------------------------------------------------------------------------ retry
@dataclass
class RetryConfig:
    """``max_retries=None`` retries for ever (what a WATS uplink wants: an outage must not cost a result)."""

    max_retries: int | None = 3
    initial_delay: float = 1.0
    max_delay: float = 60.0
    exponential_base: float = 2.0
    jitter: bool = True
    jitter_factor: float = 0.1


class RetryPolicy:
    """Decides whether a failed delivery is tried again and after how long.

    ``event.metadata.retry_count`` is the number of attempts that already failed; the bus hands the handler
    ``event.with_retry()`` on each new attempt so the handler can see it too.
    """

    def __init__(self, config: RetryConfig | None = None, **kwargs: Any) -> None:
        self._config = config or RetryConfig(**kwargs)
        self._retry_on: tuple[type[BaseException], ...] = ()
        self._no_retry_on: tuple[type[BaseException], ...] = (PermanentError, EventValidationError)
        self._predicates: list[Callable[[Event, BaseException], bool]] = []

    @property
    def config(self) -> RetryConfig:
        return self._config

    @property
    def max_retries(self) -> int | None:
        return self._config.max_retries

    def retry_on(self, *exceptions: type[BaseException]) -> "RetryPolicy":
        """Only these exception types are retried (all others go to the dead-letter table at once)."""
        self._retry_on = self._retry_on + exceptions
        return self

    def no_retry_on(self, *exceptions: type[BaseException]) -> "RetryPolicy":
        """These exception types are permanent failures: dead-lettered without a retry."""
        self._no_retry_on = self._no_retry_on + exceptions
        return self

    def add_predicate(self, predicate: Callable[[Event, BaseException], bool]) -> "RetryPolicy":
        """An extra veto: a retry happens only if every predicate returns True."""
        self._predicates.append(predicate)
        return self

    def is_retryable(self, error: BaseException) -> bool:
        if isinstance(error, TransientError):
            return True
        if isinstance(error, self._no_retry_on):
            return False
        return not self._retry_on or isinstance(error, self._retry_on)

    def should_retry(self, event: Event, error: BaseException) -> bool:
        if not self.is_retryable(error):
            return False
        limit = self._config.max_retries
        if limit is not None and event.metadata.retry_count >= limit:
            return False
        return all(p(event, error) for p in self._predicates)

    def get_delay(self, event: Event) -> float:
        c = self._config
        return backoff_delay(
            event.metadata.retry_count + 1,
            initial=c.initial_delay,
            maximum=c.max_delay,
            base=c.exponential_base,
            jitter=c.jitter_factor if c.jitter else 0.0,
        )

# ---------------------------------------------------------------------------------------------- circuit breaker
class CircuitState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops one subscriber from hammering a dead sink: after ``failure_threshold`` consecutive transient failures it
    opens (the subscriber waits), after ``reset_timeout`` it lets one probe through (half-open), and after
    ``success_threshold`` successful probes it closes again."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        success_threshold: int = 1,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.success_threshold = success_threshold
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._state = CircuitState.CLOSED
            self._failures = 0
            self._successes = 0
            self._opened_at = 0.0
            self._half_open_calls = 0
        self.times_opened = getattr(self, "times_opened", 0)

    def _refresh(self) -> None:
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._state = CircuitState.HALF_OPEN
            self._half_open_calls = 0
            self._successes = 0

    @property
    def state(self) -> CircuitState:
        with self._lock:
            self._refresh()
            return self._state

    @property
    def is_closed(self) -> bool:
        return self.state is CircuitState.CLOSED

    @property
    def is_open(self) -> bool:
        return self.state is CircuitState.OPEN

    def time_until_probe(self) -> float:
        with self._lock:
            self._refresh()
            if self._state is not CircuitState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.reset_timeout - self._clock())

    def can_proceed(self) -> bool:
        with self._lock:
            self._refresh()
            if self._state is CircuitState.CLOSED:
                return True
            if self._state is CircuitState.HALF_OPEN and self._half_open_calls < self.half_open_max_calls:
                self._half_open_calls += 1
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            if self._state is CircuitState.HALF_OPEN:
                self._successes += 1
                self._half_open_calls = max(0, self._half_open_calls - 1)
                if self._successes >= self.success_threshold:
                    self._state = CircuitState.CLOSED
                    self._failures = 0
            else:
                self._failures = 0

    def record_neutral(self) -> None:
        """An attempt that says nothing about the far end (a permanent failure: the event's fault, a 400 or a
        payload that cannot be mapped). Neither counted nor a success; a half-open probe it used is given back,
        so the next event probes instead of the breaker waiting for an outcome that never comes."""
        with self._lock:
            if self._state is CircuitState.HALF_OPEN:
                self._half_open_calls = max(0, self._half_open_calls - 1)

    def record_failure(self) -> None:
        with self._lock:
            self._refresh()
            self._failures += 1
            if self._state is CircuitState.HALF_OPEN or self._failures >= self.failure_threshold:
                if self._state is not CircuitState.OPEN:
                    self.times_opened += 1
                self._state = CircuitState.OPEN
                self._opened_at = self._clock()
                self._half_open_calls = 0


# ------------------------------------------------------------------------------------------------ error policy
@dataclass(frozen=True)
class FailureDecision:
    """What the subscriber loop does next: wait ``delay`` and retry, or move on (the event was dead-lettered)."""

    retry: bool
    delay: float = 0.0
    entry: DeadLetterEntry | None = None


class ErrorPolicy:
    """One subscriber's failure handling: retry policy + circuit breaker + dead-letter queue, decided in one place."""

    def __init__(
        self,
        retry_policy: RetryPolicy | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        dead_letter_queue: DeadLetterQueue | None = None,
    ) -> None:
        self.retry_policy = retry_policy or RetryPolicy()
        self._breaker = circuit_breaker or CircuitBreaker()
        self._dlq = dead_letter_queue

    @property
    def circuit_breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def dead_letter_queue(self) -> DeadLetterQueue | None:
        return self._dlq

    def bind(self, dlq: DeadLetterQueue) -> None:
        if self._dlq is None:
            self._dlq = dlq

    def can_process(self) -> bool:
        return self._breaker.can_proceed()

    def record_success(self) -> None:
        self._breaker.record_success()

    def handle_failure(self, event: Event, error: BaseException, handler_name: str | None = None) -> FailureDecision:
        """``event.metadata.retry_count`` = attempts that failed before this one.

        Only a transient failure (the far end's: unreachable, 5xx, a retryable error) counts toward the circuit
        breaker. A permanent one is the event's fault: it goes to the dead letters and the queue moves on at full
        speed. Counting it let every 5 bad events pause the WATS uplink for 30 s while good ones waited."""
        if self.retry_policy.is_retryable(error):
            self._breaker.record_failure()  # exhausted retries of a transient failure count too
        else:
            self._breaker.record_neutral()
        if self.retry_policy.should_retry(event, error):
            # A server that said when to come back (HTTP Retry-After) is believed over our own backoff.
            delay = max(self.retry_policy.get_delay(event), float(getattr(error, "retry_after", 0) or 0))
            return FailureDecision(retry=True, delay=delay)
        if self._dlq is None:
            raise RuntimeError("ErrorPolicy has no dead-letter queue bound; register it on a bus first")
        # lazy: the subscriber's cursor passes this event only in the transaction that commits its dead letter
        entry = self._dlq.add(event, error, handler_name, lazy=handler_name is not None)
        return FailureDecision(retry=False, entry=entry)
