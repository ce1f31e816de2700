"""Identifiers that make the journal's order and a power cut's aftermath explainable.

Event ids are UUIDv7: the first 48 bits are the Unix time in milliseconds, so ids sort in the order they were
made and a WATS report id (which *is* the event id) tells when it was produced. Within one process the 12-bit
``rand_a`` field is a counter, so two ids made in the same millisecond still sort in creation order; if the
wall clock steps backwards (NTP on a Pi without an RTC does this at every boot) the generator keeps using the
last timestamp it issued rather than going back, so ids never sort before ones already handed out.

The boot id is the kernel's (``/proc/sys/kernel/random/boot_id``): together with ``time.monotonic_ns()`` it
orders events from one boot even when the wall clock was wrong, which is what a test engineer needs when a Pi
booted without network time.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7) as a canonical string."""
    global _last_ms, _counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        rnd = int.from_bytes(os.urandom(10), "big")  # one syscall: 62 random bits, plus 10 for a new counter
        if now_ms > _last_ms:
            _last_ms = now_ms
            _counter = (rnd >> 62) & 0x3FF  # leave headroom for the counter
        else:
            _counter += 1
            if _counter > 0xFFF:  # 4096 ids in one millisecond: borrow the next millisecond
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    rand_b = rnd & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def uuid7_time_ms(event_id: str) -> int:
    """The millisecond timestamp embedded in a UUIDv7 string."""
    return uuid.UUID(event_id).int >> 80


def _read_boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        # Not Linux (a developer's laptop): a per-process id still separates runs.
        return str(uuid.uuid4())


BOOT_ID: str = _read_boot_id()


_sync_checked = (0.0, True)
_adjtimex = None


def clock_synchronized() -> bool:
    """The kernel's view (adjtimex): NTP clients (systemd-timesyncd, chrony) clear STA_UNSYNC once synced.
    Read at most once a second (every event asks); libc is looked up once (``find_library`` runs ldconfig)."""
    global _sync_checked, _adjtimex
    now = time.monotonic()
    if now - _sync_checked[0] < 1.0:
        return _sync_checked[1]
    import ctypes

    try:
        if _adjtimex is None:
            _adjtimex = ctypes.CDLL(None, use_errno=True).adjtimex  # libc is already in the process
        buf = ctypes.create_string_buffer(512)  # struct timex, generously sized; modes = 0 reads only
        synced = _adjtimex(buf) != 5  # TIME_ERROR: clock not synchronized
    except (OSError, AttributeError):
        synced = True  # not Linux: assume the OS keeps time
    _sync_checked = (now, synced)
    return synced
