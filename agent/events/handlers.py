"""Handlers: what a subscriber runs for each event.

Handlers are synchronous: ``handle(event)`` is a plain method, run on the subscriber's own thread. The pyWATS
sync bus ran ``async def handle`` by creating a new event loop per call, which broke loop-bound clients and cost
more than the work; here an ``async def`` handler is refused at registration with a clear error instead.

A handler that returns normally has handled the event (the bus acknowledges it); one that raises has failed it
(the bus asks the subscriber's error policy what next).
"""

from __future__ import annotations

import inspect
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from .model import Event
from .policies import CircuitBreaker, RetryPolicy, TransientError


class BaseHandler(ABC):
    """Subclass and implement ``handle``. ``name`` is the durable subscriber's name (its cursor in the journal):
    keep it stable across releases, or the new name starts from the oldest retained event."""

    #: Event types this handler wants; empty means all.
    event_types: Iterable[Any] = ()
    #: Optional per-handler policies; the bus supplies defaults when these are None.
    retry_policy: RetryPolicy | None = None
    circuit_breaker: CircuitBreaker | None = None
    #: Event types whose later events supersede earlier ones with the same ``coalesce_key`` (absolute values such
    #: as counters): while a backlog drains, only the newest of each key in a page is handed to ``handle``.
    coalesce_types: Iterable[Any] = ()
    #: The dead letter's id while the subscriber replays it (``fixture-agent dlq retry``), else None: the event may
    #: be older than what came since, so a handler with latest-wins semantics may decline it. Outside a replay the
    #: journal's order is the truth, whatever the events' clocks say.
    replaying: int | None = None
    #: The bus's counters, set by the subscription at registration, for what a handler flags (not a failure).
    metrics: Any = None

    @property
    def name(self) -> str:
        return getattr(self, "_name", None) or type(self).__name__

    @property
    def enabled(self) -> bool:
        """A disabled handler is paused: its events wait in the journal, none are skipped."""
        return getattr(self, "_enabled", True)

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = bool(value)

    def type_names(self) -> set[str] | None:
        names = {getattr(t, "value", t) for t in self.event_types}
        return names or None

    def can_handle(self, event: Event) -> bool:
        types = self.type_names()
        return types is None or event.event_type in types

    def coalesce_key(self, event: Event) -> Hashable | None:
        """The identity that makes a later event supersede this one (None: never superseded)."""
        return None

    @abstractmethod
    def handle(self, event: Event) -> None: ...


class Receipt(ABC):
    """A delivery started by ``PipelinedHandler.submit`` and confirmed later (an MQTT PUBACK, an AMQP settlement)."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True once the outcome is known (confirmed or failed)."""

    @abstractmethod
    def error(self) -> BaseException | None:
        """None if the far end confirmed it; the failure otherwise (asked only after ``wait`` returned True)."""


class SettableReceipt(Receipt):
    """A receipt settled by whoever learns the outcome (a PUBACK callback, an AMQP disposition, the sender itself
    when there is nothing to wait for). The first outcome counts."""

    __slots__ = ("_done", "_error")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None

    def settle(self, error: BaseException | None = None) -> "SettableReceipt":
        if not self._done.is_set():
            self._error = error
            self._done.set()
        return self

    def wait(self, timeout: float) -> bool:
        return self._done.is_set() or self._done.wait(timeout)

    def error(self) -> BaseException | None:
        return self._error


class PipelinedHandler(BaseHandler):
    """A handler whose far end confirms deliveries asynchronously, so several can be in flight at once.

    One round trip per event would cap a broker link at a few hundred events a second; a window of ``window``
    unconfirmed deliveries keeps the link busy. The subscription still advances the cursor strictly in journal
    order, and only past events whose receipt confirmed: a crash loses nothing, it resends the unconfirmed
    window (consumers drop those duplicates by event id). ``handle`` (one event, confirmed before it returns)
    keeps the plain handler contract for callers that want it.
    """

    #: The most unconfirmed deliveries at once (memory held: this many encoded events). Read before every
    #: submit, so a handler may lower it when the far end says it takes fewer (MQTT 5 Receive Maximum).
    window: int = 64

    @abstractmethod
    def submit(self, event: Event) -> Receipt:
        """Start delivering ``event``; raise if it cannot even be started (the error policy decides)."""

    def wait_ready(self, timeout: float) -> bool:
        """Block up to ``timeout`` until a ``submit`` can go out now (a connection is up). Submitting only then
        keeps the far end's resends of what was in flight ahead of anything new."""
        return True

    def stalled(self) -> str | None:
        """Why confirmations are not coming (broker unreachable …), for ``status``; None when all is well."""
        return None

    def interrupt(self) -> None:
        """The subscription is stopping: a ``handle`` waiting for its confirmation gives up (the event stays)."""
        self._interrupted = True

    def resume(self) -> None:
        self._interrupted = False

    def handle(self, event: Event) -> None:
        while not self.wait_ready(0.5):
            if getattr(self, "_interrupted", False):
                raise TransientError("stopping before delivery")
        receipt = self.submit(event)
        while not receipt.wait(0.5):
            if getattr(self, "_interrupted", False):
                raise TransientError("stopping: delivery not confirmed; it is sent again on the next start")
        err = receipt.error()
        if err is not None:
            raise err


class FilteringHandler(BaseHandler):
    """A handler that only wants events passing all its filters; the others are acknowledged unhandled."""

    def __init__(self) -> None:
        self._filters: list[Callable[[Event], bool]] = []

    def add_filter(self, filter_func: Callable[[Event], bool]) -> "FilteringHandler":
        self._filters.append(filter_func)
        return self

    def can_handle(self, event: Event) -> bool:
        return super().can_handle(event) and all(f(event) for f in getattr(self, "_filters", ()))


class FunctionHandler(BaseHandler):
    """Wraps a plain callable so functions can be registered directly."""

    def __init__(self, func: Callable[[Event], Any], name: str | None, event_types: Iterable[Any] = ()) -> None:
        self._func = func
        self._name = name or getattr(func, "__qualname__", "handler")
        self.event_types = tuple(event_types)

    def handle(self, event: Event) -> None:
        self._func(event)


def as_handler(handler: Any, name: str | None = None, event_types: Iterable[Any] | None = None) -> BaseHandler:
    """A BaseHandler for ``handler`` (a BaseHandler or a callable); refuses coroutines with a clear error."""
    target = handler.handle if isinstance(handler, BaseHandler) else handler
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(getattr(target, "__call__", None)):
        raise TypeError(
            f"handler {name or getattr(handler, 'name', handler)!r} is async; the fixture agent's bus is synchronous "
            "(each subscriber has its own thread). Make handle() a plain method."
        )
    if isinstance(handler, BaseHandler):
        if name:
            handler._name = name
        if event_types is not None:
            handler.event_types = tuple(event_types)
        return handler
    if not callable(handler):
        raise TypeError(f"handler must be a BaseHandler or a callable, got {type(handler).__name__}")
    return FunctionHandler(handler, name, event_types or ())


class HandlerRegistry:
    """Handlers by name; what ``get_handlers`` and ``status`` list."""

    def __init__(self) -> None:
        self._handlers: dict[str, BaseHandler] = {}

    @property
    def handler_count(self) -> int:
        return len(self._handlers)

    def register(self, handler: BaseHandler) -> None:
        if handler.name in self._handlers and self._handlers[handler.name] is not handler:
            raise ValueError(f"a handler named {handler.name!r} is already registered; names are subscriber ids")
        self._handlers[handler.name] = handler

    def unregister(self, handler: BaseHandler | str) -> bool:
        name = handler if isinstance(handler, str) else handler.name
        return self._handlers.pop(name, None) is not None

    def get(self, name: str) -> BaseHandler | None:
        return self._handlers.get(name)

    def clear(self) -> None:
        self._handlers.clear()

    def get_all_handlers(self) -> list[BaseHandler]:
        return sorted(self._handlers.values(), key=lambda h: h.name)

    def get_handlers(self, event_type: Any) -> list[BaseHandler]:
        t = getattr(event_type, "value", event_type)
        return [h for h in self.get_all_handlers() if (h.type_names() is None or t in h.type_names())]

    def get_event_types(self) -> set[str]:
        out: set[str] = set()
        for h in self._handlers.values():
            out |= h.type_names() or set()
        return out
