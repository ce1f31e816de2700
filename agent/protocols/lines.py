"""Splitting a byte stream into lines, with a hard limit on line length.

A serial port can hand us anything: half a line, ten lines, a megabyte of noise from a floating RX pin. The framer
never holds more than ``max_line`` bytes of an unfinished line; a longer one is reported once as oversized (its
first ``max_line`` bytes kept as evidence) and the rest of it is skipped up to the next newline, so the lines
after it are not lost.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Line:
    data: bytes
    oversized: bool = False


class LineFramer:
    def __init__(self, max_line: int = 4096) -> None:
        if max_line < 16:
            raise ValueError("max_line must be at least 16 bytes")
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[Line]:
        out: list[Line] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            chunk = data[start:] if nl < 0 else data[start:nl]
            if self._skipping:
                if nl >= 0:
                    self._skipping = False
            else:
                room = self.max_line - len(self._buf)
                if len(chunk) > room:
                    self._buf += chunk[:room]
                    out.append(Line(bytes(self._buf), oversized=True))
                    self._buf.clear()
                    self._skipping = nl < 0
                else:
                    self._buf += chunk
                    if nl >= 0:
                        line = bytes(self._buf).rstrip(b"\r")
                        self._buf.clear()
                        if line.strip():
                            out.append(Line(line))
            if nl < 0:
                return out
            start = nl + 1

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held."""
        return len(self._buf)
