"""``machine`` for the firmware examples under CPython: pins with interrupts, ADC, UART, interrupt masking.

What a board would do is driven by the test through ``drive``, ``set_uv`` and ``UART_PATHS``: a falling edge
calls the pin's handler on the driving thread, as an interrupt would interrupt the main loop, and
``disable_irq`` really holds it off.
"""
from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

_irq = threading.RLock()
_levels: dict[int, int] = {}
_handlers: dict[int, tuple[int, Callable]] = {}
_uv: dict[int, int] = {}
#: UART id → what it is wired to: a device path, or ``fd:N`` (the master side of a pseudo-terminal, inherited)
UART_PATHS: dict[int, str] = {}


class Pin:
    IN, OUT, OPEN_DRAIN = 1, 3, 7
    PULL_UP, PULL_DOWN = 1, 2
    IRQ_RISING, IRQ_FALLING = 1, 2

    def __init__(self, id: int, mode: int = -1, pull: int = -1, value: int | None = None) -> None:
        self.id = id
        if id not in _levels:
            _levels[id] = 1 if pull == Pin.PULL_UP else 0
        if value is not None:
            _levels[id] = value

    def value(self, v: int | None = None) -> int | None:
        if v is None:
            return _levels[self.id]
        drive(self.id, v)
        return None

    def irq(self, trigger: int, handler: Callable) -> None:
        _handlers[self.id] = (trigger, handler)


def drive(pin: int, level: int) -> None:
    """The outside world sets a pin's level (a switch closing pulls it to 0)."""
    old = _levels.get(pin, 0)
    _levels[pin] = level
    trigger, handler = _handlers.get(pin, (0, None))
    if handler and ((old and not level and trigger & Pin.IRQ_FALLING) or (not old and level and trigger & Pin.IRQ_RISING)):
        with _irq:
            handler(Pin(pin))


def disable_irq() -> int:
    _irq.acquire()
    return 1


def enable_irq(state: int) -> None:
    _irq.release()


class ADC:
    ATTN_0DB, ATTN_2_5DB, ATTN_6DB, ATTN_11DB = 0, 1, 2, 3

    def __init__(self, pin: Pin, atten: int = 0) -> None:
        self.pin = pin.id

    def read_uv(self) -> int:  # ESP32 only
        return _uv.get(self.pin, 0)

    def read_u16(self) -> int:  # every port; full scale 3.3 V
        return min(65535, _uv.get(self.pin, 0) * 65535 // 3_300_000)


def set_uv(pin: int, microvolts: int) -> None:
    _uv[pin] = microvolts


class UART:
    """A UART wired to ``UART_PATHS[id]``. Like a wire, it never blocks: what nobody reads is lost (a full pty
    buffer drops the write), and with nobody on the other end there is simply nothing to read. ``read`` and
    ``readline`` return None when nothing came within ``timeout`` ms, as MicroPython's do."""

    def __init__(self, id: int, baudrate: int = 115200, *, tx: object = None, rx: object = None, timeout: int = 0,
                 **_: object) -> None:
        where = UART_PATHS[id]
        self.fd = int(where[3:]) if where.startswith("fd:") else os.open(where, os.O_RDWR | os.O_NOCTTY)
        os.set_blocking(self.fd, False)
        self.timeout = timeout / 1000
        self.buf = b""

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.fd, data)
        except (BlockingIOError, OSError):
            return 0

    def any(self) -> int:
        self._fill(0)
        return len(self.buf)

    def read(self, n: int = -1) -> bytes | None:
        if not self.buf:
            self._fill(self.timeout)
        if not self.buf:
            return None
        n = len(self.buf) if n < 0 else n
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def readline(self) -> bytes | None:
        if b"\n" not in self.buf:
            self._fill(self.timeout)
        if not self.buf:
            return None
        i = self.buf.find(b"\n")
        cut = len(self.buf) if i < 0 else i + 1
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out

    def _fill(self, timeout: float) -> None:
        if select.select([self.fd], [], [], timeout)[0]:
            try:
                self.buf += os.read(self.fd, 4096)
            except (BlockingIOError, OSError):  # EIO: the other end is not open (the agent is not running)
                pass


def unique_id() -> bytes:
    return b"\x24\x0a\xc4\x00\x12\x34"
