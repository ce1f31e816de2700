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
    """Named periodic jobs (name → period in ms), all due at boot; ``due()`` yields the names whose time has come."""

    def __init__(self, periods):
        self.periods = periods
        now = ticks_ms()
        self.last = {name: ticks_add(now, -period) for name, period in periods.items()}

    def due(self):
        now = ticks_ms()
        for name, period in self.periods.items():
            if ticks_diff(now, self.last[name]) >= period:
                self.last[name] = now
                yield name
