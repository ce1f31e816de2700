"""Exponential backoff with jitter: the one implementation every retry and reconnect loop uses."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    *,
    initial: float = 1.0,
    maximum: float = 60.0,
    base: float = 2.0,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``attempt`` (1-based): ``initial * base**(attempt-1)`` capped at ``maximum``,
    spread by ±``jitter`` (a fraction) so that a fleet of Pis recovering from the same outage does not retry in
    lockstep."""
    if attempt < 1:
        return 0.0
    delay = min(maximum, initial * base ** min(attempt - 1, 64))
    if jitter:
        delay *= 1.0 + (rng or random).uniform(-jitter, jitter)
    return max(0.0, min(delay, maximum * (1.0 + jitter)))
