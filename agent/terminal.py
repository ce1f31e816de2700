"""Text from devices made safe to print on an operator's terminal.

Dead letters and events hold bytes a device or a plant system sent: an escape sequence among them, printed raw by
``dlq list --body`` or ``events``, is executed by the operator's terminal (colours, cursor moves that overwrite
lines, a changed window title, on some terminals worse). Every control character is shown as an escape instead.
"""

from __future__ import annotations

import re

#: C0 controls, DEL, C1 controls, and the Unicode controls that reorder or hide text (bidi overrides and isolates,
#: zero-width marks, line and paragraph separators)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def printable(value: object) -> str:
    """``value`` as one line of text with every control character escaped (``\\x1b``, ``\\n``, ``\\u202e``)."""
    return _UNSAFE.sub(_escape, str(value))


def printable_bytes(raw: bytes, limit: int | None = None) -> str:
    """Raw input as text: UTF-8 where it is, ``\\xNN`` where it is not, controls escaped; cut to ``limit``."""
    text = raw.decode("utf-8", "backslashreplace")
    if limit is not None:
        text = text[:limit]
    return printable(text)
