"""A reconstruction of the pyWATS sync ``EventBus.publish`` path, as the baseline the issue names.

pyWATS is not in the package registry this project installs from, so this follows the behaviour described in
``reference/wats-api.md`` §8.1-8.2: the event is a dataclass with uuid4 metadata and a UTC timestamp; ``publish``
looks up matching handlers by type, sorts them by priority and runs each one sequentially in the caller's thread,
creating a new asyncio event loop for every handler call. Nothing is persisted (at-most-once).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


@dataclass
class Metadata:
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    source: str = "unknown"
    correlation_id: str | None = None
    retry_count: int = 0
    custom: dict[str, Any] = field(default_factory=dict)


@dataclass
class PyWatsEvent:
    event_type: str
    payload: dict[str, Any]
    metadata: Metadata = field(default_factory=Metadata)


class Handler:
    priority = 100
    enabled = True

    def __init__(self, types: list[str]) -> None:
        self.event_types = types
        self.count = 0

    def can_handle(self, event: PyWatsEvent) -> bool:
        return not self.event_types or event.event_type in self.event_types

    async def handle(self, event: PyWatsEvent) -> None:
        self.count += 1


class PyWatsSyncBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    def register_handler(self, handler: Handler) -> None:
        for t in handler.event_types:
            self._handlers.setdefault(t, []).append(handler)

    def publish(self, event: PyWatsEvent) -> None:
        handlers = sorted(self._handlers.get(event.event_type, []), key=lambda h: h.priority)
        for h in handlers:
            if not (h.enabled and h.can_handle(event)):
                continue
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(h.handle(event))
            finally:
                loop.close()
