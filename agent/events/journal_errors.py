"""What the journal raises. A module of its own so the journal's parts (opening, dead letters, stats) and the
event core (counters) can name them without importing the log engine."""

from __future__ import annotations


class JournalError(Exception):
    """The journal could not do what was asked; the message says what and why."""


class JournalFull(JournalError):
    """An append was refused because the journal is at ``max_bytes`` and nothing evictable is left."""


class StateConflict(JournalError):
    """``append(..., expect=...)`` found a state value other than expected (someone else changed it first)."""


class JournalClosed(JournalError):
    """The journal was closed (or its writer died) before the request completed."""

