"""Milliseconds and UTC timestamps from MicroPython's time module; CPython's where the agent's tests run this code."""
import time

try:
    ticks_ms = time.ticks_ms
    ticks_add = time.ticks_add
    ticks_diff = time.ticks_diff
    sleep_ms = time.sleep_ms
except AttributeError:  # CPython
    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_add(a, b):
        return a + b

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        time.sleep(ms / 1000)


def utc_iso():
    """Now as RFC 3339 UTC, or None while the clock was never set (no NTP yet after boot): the agent then stamps
    the message with its receive time, which is right for a live message and only late for a buffered one."""
    t = time.gmtime()
    if t[0] < 2024:
        return None
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % tuple(t[:6])


class Schedule:
    """Named periodic jobs (name → period in ms), all due at boot; ``due()`` yields the names whose time has come.

    Each job counts the milliseconds it has waited rather than keeping a ticks value to compare with: MicroPython's
    ticks wrap (every 2**30 ms on most ports), ``ticks_diff`` measures at most half of that (6.2 days) and
    ``ticks_add`` refuses a longer interval (OverflowError), so a weekly self-test stopped the firmware at boot.
    ``due()`` is called every loop, so each step it measures is short."""

    def __init__(self, periods):
        self.periods = periods
        self.seen = ticks_ms()
        self.waited = dict(periods)  # as if each had waited its whole period: due at boot

    def due(self):
        now = ticks_ms()
        passed = ticks_diff(now, self.seen)
        self.seen = now
        for name, period in self.periods.items():
            self.waited[name] += passed
            if self.waited[name] >= period:
                self.waited[name] = 0
                yield name
