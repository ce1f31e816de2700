"""The fixture's actuation counters, kept in the journal's state table.

A press and the ``asset.counters`` event reporting it are one transaction, and the update is a compare-and-set
against the value read: after a crash the stored counter and the last reported value agree, a counter never goes
backwards, and a ``fixture-agent counters reset`` from a shell while the agent runs is never overwritten by the
agent's next press (the press sees the conflict, re-reads and counts from the reset value).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .journal import StateConflict
from .model import Event, EventType
from .payloads import AssetCountersEvent

if TYPE_CHECKING:
    from .bus import EventBus


def counter_key(asset_id: str) -> str:
    return f"counters:{asset_id}"


class CounterLedger:
    def __init__(self, bus: "EventBus", asset_id: str, source: str) -> None:
        self.bus = bus
        self.asset_id = asset_id
        self.source = source
        self.key = counter_key(asset_id)
        self._lock = threading.Lock()

    def current(self) -> dict[str, int] | None:
        return self.bus.journal.get_state(self.key)

    def _event(self, counts: dict[str, int], custom: dict[str, Any] | None = None) -> Event:
        payload = AssetCountersEvent(asset_id=self.asset_id, timestamp=datetime.now(timezone.utc),
                                     custom_data=custom or {}, **counts)
        return Event.create(EventType.ASSET_COUNTERS, payload, source=self.source)

    def _commit(self, change, with_events: Sequence[Event] = (), custom: dict[str, Any] | None = None) -> Event:
        with self._lock:  # one writer per ledger in this process; other processes are caught by the CAS
            for _ in range(100):
                old = self.current()
                new = change(old or {"running_count": 0, "total_count": 0})
                ev = self._event(new, custom(old) if callable(custom) else custom)
                try:
                    self.bus.publish_many([*with_events, ev], state={self.key: new}, expect={self.key: old})
                    return ev
                except StateConflict:
                    continue
            raise StateConflict(f"counter {self.key} kept changing under us")

    def increment(self, n: int = 1, with_events: Sequence[Event] = ()) -> Event:
        """Count ``n`` actuations; ``with_events`` are journaled in the same transaction (e.g. a test result)."""
        return self._commit(lambda c: {"running_count": c["running_count"] + n, "total_count": c["total_count"] + n},
                            with_events)

    def reset(self, by: str) -> Event:
        """Running count back to 0 (total count never changes): the event records who reset it and from what."""
        return self._commit(
            lambda c: {"running_count": 0, "total_count": c["total_count"]},
            custom=lambda old: {"reset": True, "reset_by": by,
                                "previous_running_count": (old or {}).get("running_count", 0)},
        )
