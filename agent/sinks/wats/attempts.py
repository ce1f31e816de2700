"""Requests that must not be repeated blindly, and the small state that records them.

An increment or a new asset log entry sent twice is counted or logged twice. So such an attempt is recorded
durably, with the time, *before* it is sent, and marked ``not_sent`` when it certainly did not arrive. An attempt
found recorded later is in doubt: WATS is given ``in_doubt_grace`` to finish with it, then the caller checks its
effect on WATS (the ledger reads the count, a log entry is searched for its event id) instead of resending on a
guess. The record lives in the journal's state table, committed with the same durability as the events.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from ...events.ids import BOOT_ID
from ...events.policies import NotDelivered, TransientError

if TYPE_CHECKING:
    from ...events.journal import Journal
    from ..wats_plugin import WatsSinkSection


class StateStore:
    """Small state that must survive a crash with the events: the journal's state table; memory without a
    journal (a bare handler in a test)."""

    def __init__(self, journal: "Journal | None") -> None:
        self._journal = journal
        self._memory: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self._journal.get_state(key) if self._journal is not None else self._memory.get(key)

    def put(self, key: str, value: Any) -> None:
        if self._journal is not None:
            self._journal.set_state(key, value)  # committed (fsynced) before we go on
        else:
            self._memory[key] = value


def now_stamp() -> dict[str, Any]:
    """When an attempt was made, in a form that survives a restart *and* a wall-clock step: within one boot the
    monotonic clock (system-wide, so it spans agent restarts) is used; the wall time only across a reboot."""
    return {"at": time.time(), "mono": time.monotonic(), "boot": BOOT_ID}


def seconds_since(attempt: dict[str, Any]) -> float:
    """How long ago ``attempt`` was recorded. A wall clock stepped back across a reboot gives a negative span:
    that reads as long ago (the effect is checked in WATS before anything is resent), never as a wait of hours."""
    if attempt.get("boot") == BOOT_ID and isinstance(attempt.get("mono"), (int, float)):
        return time.monotonic() - float(attempt["mono"])
    since = time.time() - float(attempt.get("at", 0))
    return since if since >= 0 else float("inf")


class InFlight:
    """Attempts of non-idempotent requests under ``[sinks.wats]``'s ``in_doubt_grace``."""

    def __init__(self, cfg: "WatsSinkSection") -> None:
        self.cfg = cfg

    @property
    def grace(self) -> float:
        """How long after an ambiguous attempt WATS is given before its effect is checked (then resent): never
        less than the request timeout, so a request still being processed has finished."""
        return max(float(self.cfg.in_doubt_grace), float(self.cfg.timeout))

    @staticmethod
    def attempt(record: Callable[[dict[str, Any]], None], what: dict[str, Any], send: Callable[[], Any]) -> Any:
        """Send a request that must not be repeated blindly: ``what`` is recorded (durably, with the time) before
        it is sent, and marked ``not_sent`` when it certainly did not arrive (so it may simply be sent again)."""
        record({**what, **now_stamp()})
        try:
            return send()
        except NotDelivered:
            record({**what, **now_stamp(), "not_sent": True})
            raise

    def check_due(self, attempt: dict[str, Any], what: str) -> bool:
        """For an ``attempt`` recorded earlier: False if it certainly never arrived (send again); True if it may
        have, and the grace has passed, so its effect on WATS can be checked now; otherwise a transient wait,
        because a slow WATS may still be applying it after the client gave up."""
        if attempt.get("not_sent"):
            return False
        wait = self.grace - seconds_since(attempt)
        if wait > 0:
            raise TransientError(f"{what} in doubt; checking WATS in {wait:.0f} s", wait)
        return True
