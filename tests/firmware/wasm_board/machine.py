"""``machine`` for the firmware examples under MicroPython's own interpreter (its WebAssembly port has none):
pins with interrupts, ADC, an in-memory UART, interrupt masking. MicroPython code, like the firmware it serves.

The interpreter has one thread, so the world acts between the firmware's calls: a test drives a pin between two
``step()``s, or ``at(ms, fn)`` lets the world act while ``main.py`` runs its endless loop (checked whenever the
firmware polls a UART, a socket or the Wi-Fi). A falling edge calls the pin's handler at once, as an interrupt
would; while ``disable_irq`` holds, it is delivered at ``enable_irq``.
"""
import time

_levels = {}
_handlers = {}
_uv = {}
_masked = 0
_held = []
_world = []  # (ticks when, fn)
UARTS = {}


class Pin:
    IN, OUT, OPEN_DRAIN = 1, 3, 7
    PULL_UP, PULL_DOWN = 1, 2
    IRQ_RISING, IRQ_FALLING = 1, 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        if id not in _levels:
            _levels[id] = 1 if pull == Pin.PULL_UP else 0
        if value is not None:
            _levels[id] = value

    def value(self, v=None):
        if v is None:
            return _levels[self.id]
        drive(self.id, v)

    def irq(self, trigger, handler):
        _handlers[self.id] = (trigger, handler)


def drive(pin, level):
    """The outside world sets a pin's level (a switch closing pulls it to 0)."""
    old = _levels.get(pin, 0)
    _levels[pin] = level
    trigger, handler = _handlers.get(pin, (0, None))
    falling, rising = old and not level, level and not old
    if handler and ((falling and trigger & Pin.IRQ_FALLING) or (rising and trigger & Pin.IRQ_RISING)):
        if _masked:
            _held.append(pin)
        else:
            handler(Pin(pin))


def press(pin, n=1, hold_ms=50):
    """n presses of a contact to GND that bounces when it closes and again when it opens."""
    for _ in range(n):
        for level, hold in ((0, 1), (1, 1), (0, hold_ms), (1, 1), (0, 1), (1, hold_ms)):
            drive(pin, level)
            time.sleep_ms(hold)


def disable_irq():
    global _masked
    _masked += 1
    return 1


def enable_irq(state):
    global _masked
    _masked -= 1
    while not _masked and _held:
        pin = _held.pop(0)
        _handlers[pin][1](Pin(pin))


class ADC:
    ATTN_0DB, ATTN_2_5DB, ATTN_6DB, ATTN_11DB = 0, 1, 2, 3

    def __init__(self, pin, atten=0):
        self.pin = pin.id

    def read_uv(self):  # ESP32 only
        return _uv.get(self.pin, 0)

    def read_u16(self):  # every port; full scale 3.3 V
        return min(65535, _uv.get(self.pin, 0) * 65535 // 3300000)


def set_uv(pin, microvolts):
    _uv[pin] = microvolts


class UART:
    """A UART whose other end is the test: ``sent`` is every write, ``feed`` puts bytes on its RX line."""

    def __init__(self, id, baudrate=115200, tx=None, rx=None, timeout=0, **kw):
        self.id = id
        self.sent = []
        self.rx = b""
        UARTS[id] = self

    def write(self, data):
        self.sent.append(bytes(data))
        return len(data)

    def feed(self, data):
        self.rx += data

    def any(self):
        world()
        return len(self.rx)

    def read(self, n=-1):
        if not self.rx:
            return None
        n = len(self.rx) if n < 0 else n
        out, self.rx = self.rx[:n], self.rx[n:]
        return out


def unique_id():
    return b"\x24\x0a\xc4\x00\x12\x34"


def at(ms, fn):
    """The world does ``fn()`` ``ms`` from now, at the firmware's next poll after that."""
    _world.append((time.ticks_add(time.ticks_ms(), ms), fn))


class PowerCut(BaseException):
    """The board loses power: no ``except Exception`` in the firmware stops it."""


def cut():
    raise PowerCut()


def world():
    """What the world had to do by now, in the order it was told."""
    for w in list(_world):
        if time.ticks_diff(time.ticks_ms(), w[0]) >= 0:
            _world.remove(w)
            w[1]()
