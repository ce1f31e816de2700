"""Mechanics every source shares, written once.

``StatusRecord``: what ``fixture-agent status`` shows of a source is a row in the journal's state table. Writing it
is best-effort by nature: a status that cannot be written (the disk full, the journal at its bound, the journal
closing under a stopping agent) must never take down the thread that wanted to write it. Before this was shared, each
source caught only ``JournalFull``, so a full disk (SQLite's "database or disk is full", a plain ``JournalError``)
raised in paho's callback thread or the MQTT worker, the thread died, and the agent stopped with exit 70 every time
the fault harness filled the disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..events.journal import JournalError

log = logging.getLogger(__name__)

STATUS_EVERY = 1.0  # seconds between status records while counts change


class StatusRecord:
    """One source's status row: throttled to one write per ``every`` seconds unless forced, remembered as dirty
    when a throttled change is waiting (``flush_if_dirty`` writes it once the source is idle), never raising."""

    def __init__(self, name: str, journal: Callable[[], Any], every: float = STATUS_EVERY) -> None:
        self.key = f"source:{name}"
        self._journal = journal  # called at each write: the bus (and its journal) is attached after construction
        self.every = every
        self.dirty = False
        self._at = 0.0
        self._failing = False

    def write(self, doc: Callable[[], dict[str, Any]], force: bool = False) -> bool:
        """Write ``doc()`` now if forced or due; True if written. ``doc`` is built only when a write happens."""
        now = time.monotonic()
        self.dirty = True
        journal = self._journal()
        if journal is None or (not force and now - self._at < self.every):
            return False
        self._at = now
        self.dirty = False
        return self.put(journal, self.key, doc())

    def flush_if_dirty(self, doc: Callable[[], dict[str, Any]]) -> None:
        if self.dirty:
            self.write(doc)

    def put(self, journal: Any, key: str, value: Any) -> bool:
        """A best-effort state write: a journal that cannot take it is logged once per failing spell."""
        try:
            journal.set_state(key, value)
        except JournalError as e:
            if not self._failing:
                log.warning("%s: status not recorded (%s); going on without it", self.key, e)
            self._failing = True
            return False
        if self._failing:
            log.info("%s: status recorded again", self.key)
        self._failing = False
        return True
