"""A bounded memory of recently handled message keys, persisted with the events they produced.

Sources whose far end resends after a crash (MQTT DUP deliveries, CFX's spool replaying by UniqueID) recognise a
resend by its key. The keys of a batch are committed in the same transaction as the batch's events (as journal
state), so after a power cut the memory and the journal agree: a key is remembered exactly when its events are
durable. Only the newest ``size`` keys are kept; the size must cover what the far end can have in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class RecentKeys:
    def __init__(self, size: int) -> None:
        self.size = size
        self._order: deque[str] = deque(maxlen=size)
        self._set: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._set

    def __len__(self) -> int:
        return len(self._order)

    def load(self, keys: Iterable[str] | None) -> None:
        for k in keys or ():
            self.add(k)

    def add(self, key: str) -> None:
        if key in self._set:
            return
        if len(self._order) == self._order.maxlen:
            self._set.discard(self._order[0])
        self._order.append(key)
        self._set.add(key)

    def with_new(self, keys: list[str]) -> list[str]:
        """What to persist once ``keys`` are committed too (the newest ``size``), without remembering them yet."""
        return (list(self._order) + keys)[-self.size:]
