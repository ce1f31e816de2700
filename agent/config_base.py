"""The pieces every config section is built from: errors that name the key, sizes, durations, addresses.

Shared by the core's own sections (``config.py``) and every plugin's (``agent/*/*_plugin.py``), so a plugin's
section checks its values the way the core's do and its errors come out in the same words.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec


class ConfigError(ValueError):
    """A configuration problem; the message names the file, the key (``journal.max_bytes``), the value and what is
    allowed. ``key`` is the full key path (None when the file as a whole is wrong, such as bad TOML)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class FieldError(ValueError):
    """A wrong value for one key, raised while a section is validated.

    ``field`` is the key relative to the section (``"max_bytes"``, or a dotted path from the section such as
    ``"serial[1].name"``); ``None`` when the raiser does not know it (``parse_duration`` called in a loop): the loader
    then finds the key whose value it was. ``problem`` says what is allowed. The loader turns it into
    ``file: journal.max_bytes = -5: must be …``, so no raiser has to know the file or the section's path."""

    def __init__(self, field: str | None, value: Any, problem: str) -> None:
        self.field, self.value, self.problem = field, value, problem
        super().__init__(f"{field + ' = ' if field else ''}{show_value(value)}: {problem}")


def show_value(value: Any, limit: int = 160) -> str:
    """A value as it is written in TOML (``"30 seconds"``, ``-5``, ``true``), cut short: a config error quotes what
    the user wrote, not Python's spelling of it."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE_MAX = 2**50  # a pebibyte: anything larger is a typo, and would overflow SQLite's and the OS's sizes
_SIZE_HINT = "a size such as 4096, \"64MB\" or \"1GiB\""
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.I)
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_MAX = 100 * 365 * 86400.0  # a century: longer waits overflow threading's timeouts
_DURATION_HINT = "a duration such as 2.5, \"500ms\", \"12h\" or \"30d\""


def parse_size(value: int | str) -> int:
    """``"512MB"``, ``"1GiB"``, ``4096`` → bytes. A wrong value raises ``FieldError`` (a ``ValueError``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise FieldError(None, value, f"must not be negative ({_SIZE_HINT})")
        n = value
    else:
        m = _SIZE.match(str(value)) if isinstance(value, str) else None
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise FieldError(None, value, f"is not {_SIZE_HINT}")
        n = int(Decimal(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    if n > _SIZE_MAX:
        raise FieldError(None, value, "is too large (at most 1PiB)")
    return n


def parse_duration(value: float | int | str) -> float:
    """``"30d"``, ``"12h"``, ``"500ms"``, ``2.5`` → seconds. A wrong value raises ``FieldError``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise FieldError(None, value, f"is not {_DURATION_HINT}")
        if value < 0:
            raise FieldError(None, value, f"must not be negative ({_DURATION_HINT})")
        seconds = float(value)
    else:
        m = _DURATION.match(str(value)) if isinstance(value, str) else None
        if not m:
            raise FieldError(None, value, f"is not {_DURATION_HINT}")
        unit = m.group(2).lower() if m.group(2) else None
        seconds = float(m.group(1)) * _DURATION_UNITS[unit]
    if not seconds <= _DURATION_MAX:
        raise FieldError(None, value, "is too long (at most 100 years)")
    return seconds


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"``, ``"[::1]:9108"``, ``":9108"`` → (host, port)."""
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise FieldError(None, value, "is not host:port with a port from 0 to 65535 (example: \"127.0.0.1:9108\")")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_fields(section: Any, parse: Callable[[Any], Any], *fields: str) -> None:
    """Convert ``fields`` of ``section`` in place with ``parse``, naming the field in the error."""
    for f in fields:
        try:
            setattr(section, f, parse(getattr(section, f)))
        except FieldError as e:
            raise FieldError(f, e.value, e.problem) from None


class Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A config section: unknown keys are errors (a misspelt ``max_byte`` silently ignored fills a card)."""




def check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", name):
        raise FieldError("name", name, "use 1-40 letters, digits, '.', '_' or '-'")
