"""Actuation counts from a debounced GPIO input, counted in the interrupt and kept in flash across resets.

The interrupt handler only counts (no allocation, no I/O); the main loop folds the count into the absolute
totals and saves them. Edges closer together than ``debounce_ms`` are contact bounce, on pressing and on release.
"""
import json
import os

from machine import Pin, disable_irq, enable_irq

from clock import ticks_diff, ticks_ms


class Counter:
    def __init__(self, pin, debounce_ms, state_path):
        self.debounce_ms = debounce_ms
        self.state_path = state_path
        self.running, self.total = self._load()
        self._pending = 0
        self._last_edge = None
        self.pin = Pin(pin, Pin.IN, Pin.PULL_UP)  # a switch to GND: idle high, a press is a falling edge
        # both edges: a release that bounces makes falling edges too, and must not count as a press
        self.pin.irq(trigger=Pin.IRQ_FALLING | Pin.IRQ_RISING, handler=self._edge)

    def _edge(self, pin):
        """A press is a falling edge after ``debounce_ms`` of quiet; every edge, up or down, restarts the quiet."""
        now = ticks_ms()
        quiet = self._last_edge is None or ticks_diff(now, self._last_edge) >= self.debounce_ms
        self._last_edge = now
        if quiet and pin.value() == 0:
            self._pending += 1

    def take(self):
        """Fold new presses into the totals; True if there were any (the totals are then saved)."""
        irq = disable_irq()
        n, self._pending = self._pending, 0
        if self._last_edge is not None and ticks_diff(ticks_ms(), self._last_edge) >= self.debounce_ms:
            # quiet since: forget the edge while ticks_diff can still measure it (MicroPython's ticks wrap; past
            # 6.2 days the difference comes out negative, and the first press after a week off was bounce)
            self._last_edge = None
        enable_irq(irq)
        if not n:
            return False
        self.running += n
        self.total += n
        tmp = self.state_path + ".new"  # written aside and renamed: a power cut never leaves half a file
        with open(tmp, "w") as f:
            json.dump({"running": self.running, "total": self.total}, f)
        os.rename(tmp, self.state_path)
        return True

    def _load(self):
        try:
            with open(self.state_path) as f:
                d = json.load(f)
            return int(d["running"]), int(d["total"])
        except (OSError, ValueError, KeyError, TypeError, OverflowError):
            # none yet, or damaged (MicroPython's UnicodeError is a ValueError): start from 0 rather than stop the
            # firmware at every boot; the agent flags a total that went down
            return 0, 0
