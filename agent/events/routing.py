"""``EventFilter``: which events a subscriber wants, beyond their type.

The seed's ``EventRouter`` is left out on purpose: one router in front of several handlers shares one cursor
between them, so a slow destination would hold back the others, which is exactly what per-subscriber cursors
exist to prevent. Register each destination as its own handler with a filter instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .model import Event


class EventFilter:
    """A composable predicate; every clause must hold. Built fluently::

        EventFilter().by_type("test.result").payload_equals("result", "fail").exclude_source("simulator")
    """

    def __init__(self) -> None:
        self._clauses: list[Callable[[Event], bool]] = []
        self._types: set[str] | None = None

    @staticmethod
    def _names(values: Iterable[Any]) -> set[str]:
        return {getattr(v, "value", v) for v in values}

    def by_type(self, *types: Any) -> "EventFilter":
        wanted = self._names(types)
        self._types = wanted if self._types is None else self._types & wanted
        return self

    def exclude_type(self, *types: Any) -> "EventFilter":
        unwanted = self._names(types)
        self._clauses.append(lambda e: e.event_type not in unwanted)
        return self

    def by_source(self, *sources: str) -> "EventFilter":
        wanted = set(sources)
        self._clauses.append(lambda e: e.metadata.source in wanted)
        return self

    def exclude_source(self, *sources: str) -> "EventFilter":
        unwanted = set(sources)
        self._clauses.append(lambda e: e.metadata.source not in unwanted)
        return self

    def has_payload_key(self, key: str) -> "EventFilter":
        self._clauses.append(lambda e: key in e.payload)
        return self

    def payload_equals(self, key: str, value: Any) -> "EventFilter":
        self._clauses.append(lambda e: e.payload.get(key) == value)
        return self

    def payload_in(self, key: str, values: list[Any]) -> "EventFilter":
        allowed = list(values)
        self._clauses.append(lambda e: e.payload.get(key) in allowed)
        return self

    def where(self, predicate: Callable[[Event], bool]) -> "EventFilter":
        self._clauses.append(predicate)
        return self

    @property
    def types(self) -> set[str] | None:
        """The event types this filter can match (None: any). The bus checks these before decoding a row."""
        return self._types

    def matches(self, event: Event) -> bool:
        if self._types is not None and event.event_type not in self._types:
            return False
        return all(c(event) for c in self._clauses)
