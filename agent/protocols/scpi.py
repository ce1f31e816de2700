"""SCPI / IEEE 488.2 responses: identity, self-test, error queue, numbers.

Only parsing lives here; talking to the port is the serial source's job.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


class ScpiError(ValueError):
    """A response that does not parse; the message quotes it."""


@dataclass(frozen=True)
class Identity:
    manufacturer: str
    model: str
    serial: str
    firmware: str

    def __str__(self) -> str:
        return ",".join((self.manufacturer, self.model, self.serial, self.firmware))

    def to_dict(self) -> dict[str, str]:
        return {"manufacturer": self.manufacturer, "model": self.model, "serial": self.serial,
                "firmware": self.firmware}


def _text(resp: str | bytes) -> str:
    if isinstance(resp, bytes):
        try:
            resp = resp.decode("ascii")
        except UnicodeDecodeError:
            raise ScpiError(f"not ASCII: {resp[:60]!r}") from None
    return resp.strip()


def parse_idn(resp: str | bytes) -> Identity:
    """``*IDN?`` → ``Keysight Technologies,34465A,MY12345678,A.02.14`` (missing fields read as empty)."""
    text = _text(resp)
    if not text or len(text) > 200:
        raise ScpiError(f"not an *IDN? answer: {text[:60]!r}")
    parts = [p.strip() for p in text.split(",", 3)] + ["", "", ""]
    return Identity(*parts[:4])


def parse_int(resp: str | bytes) -> int:
    """``*TST?`` → 0 means passed (IEEE 488.2); other values are instrument-specific failure codes."""
    text = _text(resp)
    try:
        return int(text.lstrip("+"))
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            raise ScpiError(f"not an integer: {text[:60]!r}") from None
        if not f.is_integer():
            raise ScpiError(f"not an integer: {text[:60]!r}") from None
        return int(f)


_ERR = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')


def parse_error(resp: str | bytes) -> tuple[int, str]:
    """``SYST:ERR?`` → ``(-113, "Undefined header")``; ``(0, "No error")`` ends the queue."""
    text = _text(resp)
    m = _ERR.match(text)
    if not m:
        raise ScpiError(f"not a SYST:ERR? answer: {text[:60]!r}")
    return int(m.group(1)), m.group(2)


OVERRANGE = 9.9e37  # SCPI's "not a number / overload" value


def parse_number(resp: str | bytes) -> float | None:
    """NR1/NR2/NR3 (``+3.30120000E+00``) → float; SCPI's 9.9E37 (overload, NaN) → None."""
    text = _text(resp)
    try:
        value = float(text)
    except ValueError:
        raise ScpiError(f"not a number: {text[:60]!r}") from None
    if math.isnan(value) or math.isinf(value) or abs(value) >= OVERRANGE * 0.999:
        return None
    return value
