"""Clock correction for reports: times as they really were, even if stamped before NTP set the clock.

A wire-format rule, not I/O: given an event and "now" (wall and monotonic), the payload's times shifted where the
clock that stamped them was wrong, and the note that says so (the WATS uplink writes it into the report as miscInfo
``ClockCorrection``). ``now`` and ``now_mono_ns`` default to the clocks; pass them to make the answer reproducible.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import msgspec

from ..events.ids import BOOT_ID
from ..events.model import Event

#: A wall clock stepped by more than this since an event was stamped was wrong then (NTP slews smaller errors).
CLOCK_STEP_TOLERANCE = 2.0
FUTURE_TOLERANCE = 60.0


def correct_timestamps(event: Event, *, now: float | None = None, now_mono_ns: int | None = None,
                       boot_id: str = BOOT_ID) -> tuple[Event, str | None]:
    """Report times as they really were, even if stamped before NTP set the clock.

    A Pi has no RTC: until NTP syncs, its clock runs from the last shutdown (fake-hwclock) and is behind, sometimes
    by days. An event stamped by the agent while the clock was unsynchronized says so (``clock_unsynced``) and
    carries the boot id and a monotonic timestamp. If it was stamped during this boot, its true wall time is
    ``now - (monotonic now - monotonic then)``; when that differs from the stamped time by more than
    ``CLOCK_STEP_TOLERANCE``, the clock was stepped since, and the payload times taken by the same wrong clock
    (those nearer the stamped time than the true one: a device with its own good clock is left alone) are
    shifted by the difference. Whatever happened before, a start that would still be future-dated (WATS
    quarantines those) is moved back to now. Either correction is written into the report (miscInfo
    ``ClockCorrection``), so nothing is hidden.
    """
    now = time.time() if now is None else now
    now_mono_ns = time.monotonic_ns() if now_mono_ns is None else now_mono_ns
    md = event.metadata
    payload = event.payload if isinstance(event.payload, dict) else {}
    notes: list[str] = []
    fixed = payload
    if md.clock_unsynced and md.boot_id == boot_id and md.monotonic_ns <= now_mono_ns:
        stamped = md.timestamp.timestamp()
        true_time = now - (now_mono_ns - md.monotonic_ns) / 1e9
        delta = true_time - stamped
        if abs(delta) > CLOCK_STEP_TOLERANCE:
            fixed = _shift_times(payload, delta, near=(stamped, true_time))
            if fixed is not payload:
                notes.append(f"times shifted by {delta:+.1f} s: stamped at {md.timestamp.isoformat()} before the "
                             "clock was synchronized; corrected from the monotonic clock")
    start = fixed.get("start_time")
    if isinstance(start, str):
        try:
            ahead = datetime.fromisoformat(start).timestamp() - now
        except ValueError:
            ahead = 0.0
        if ahead > FUTURE_TOLERANCE:
            fixed = _shift_times(fixed, -ahead, near=None)
            notes.append(f"start {start} was {ahead:.0f} s in the future (a device or an earlier boot with a wrong "
                         "clock); moved to the time of sending")
    if fixed is payload:
        return event, None
    return msgspec.structs.replace(event, payload=fixed), "; ".join(notes)


def _shift_times(payload: dict[str, Any], delta: float, near: tuple[float, float] | None) -> dict[str, Any]:
    """``start_time``/``end_time``/``timestamp`` of the payload and its steps moved by ``delta`` seconds; with
    ``near=(wrong, right)`` only the times closer to the wrong clock than to the right one."""
    shift = timedelta(seconds=delta)
    changed = False

    def moved(d: dict[str, Any]) -> dict[str, Any]:
        nonlocal changed
        out = dict(d)
        for k in ("start_time", "end_time", "timestamp"):
            if not isinstance(d.get(k), str):
                continue
            try:
                t = datetime.fromisoformat(d[k])
            except ValueError:
                continue  # the mapping will name the bad field
            if near is not None and abs(t.timestamp() - near[0]) >= abs(t.timestamp() - near[1]):
                continue  # taken by a clock that was right
            out[k] = (t + shift).isoformat()
            changed = True
        return out

    fixed = moved(payload)
    if isinstance(fixed.get("steps"), list):
        fixed["steps"] = [moved(s) if isinstance(s, dict) else s for s in fixed["steps"]]
    return fixed if changed else payload
