"""Publish-side middleware: what every event passes through before it is journaled.

The chain runs in the publisher's thread, before the event is made durable, so what it adds (enrichment) is
recorded and what it refuses (validation) never enters the log. Delivery-side concerns (retry, breaker) belong to
the subscriber's error policy, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from .model import Event, EventValidationError, validate_payload

Next = Callable[[Event], Event]


class ChainMiddleware:
    """Override ``process``; call ``call_next(event)`` to continue, raise to refuse the event."""

    def process(self, event: Event, call_next: Next) -> Event:
        return call_next(event)


class ValidationMiddleware(ChainMiddleware):
    """Typed payloads must fit their schema (the error names the field); extra validators may be added."""

    def __init__(self, *validators: Callable[[Event], None]) -> None:
        self._validators = list(validators)

    def process(self, event: Event, call_next: Next) -> Event:
        validate_payload(event)
        for v in self._validators:
            v(event)
        return call_next(event)


class EnrichmentMiddleware(ChainMiddleware):
    """Adds fields to ``metadata.custom`` (station, location …) without overwriting what the source set."""

    def __init__(self, fields: dict[str, Any] | Callable[[Event], dict[str, Any]]) -> None:
        self._fields = fields

    def process(self, event: Event, call_next: Next) -> Event:
        extra = self._fields(event) if callable(self._fields) else self._fields
        if extra:
            custom = {**extra, **event.metadata.custom}
            event = msgspec.structs.replace(event, metadata=msgspec.structs.replace(event.metadata, custom=custom))
        return call_next(event)


class HandlerChain:
    def __init__(self, middlewares: list[ChainMiddleware] | None = None) -> None:
        self._middlewares: list[ChainMiddleware] = list(middlewares or [])
        self._rebuild()

    def _rebuild(self) -> None:
        # Compose once, not per event: publish is the hot path.
        entry: Next = lambda e: e  # noqa: E731
        for mw in reversed(self._middlewares):
            entry = (lambda m, nxt: (lambda e: m.process(e, nxt)))(mw, entry)
        self._entry = entry

    def add(self, middleware: ChainMiddleware) -> "HandlerChain":
        self._middlewares.append(middleware)
        self._rebuild()
        return self

    def clear(self) -> None:
        self._middlewares.clear()
        self._rebuild()

    def __len__(self) -> int:
        return len(self._middlewares)

    def process(self, event: Event) -> Event:
        out = self._entry(event)
        if not isinstance(out, Event):
            raise EventValidationError(f"middleware returned {type(out).__name__}, not an Event")
        return out
