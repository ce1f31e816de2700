"""Comparison operators: the one definition of what a limit means, used to judge *and* to write the report.

WATS does not re-check limits (``reference/wats-api.md`` §2.2): the status the agent sends beside a value, its
limits and its operator is what engineers see in yield reports. So every source judges through ``verdict`` and the
WSJF writer takes the limits it sends from ``limits_of``: the two can never disagree.

The table is WATS' own (§2.4, the WATS client library's ``CompOp.evaluate``, the same comparisons as TestStand's
numeric limit test): single-limit operators compare against the *low* limit, whichever side a source called it;
the outside ranges (``LTGT`` …) pass *outside* the limits; ``LOG`` is recorded, never judged. A value that is not
a finite number (NaN, ±Infinity) never passes a judged comparison. ``EQT`` (equal within a threshold) carries no
threshold in WSJF, so the agent cannot judge it: the source's own verdict stands (without one, an error). A range
whose low limit is above its high limit is refused: it passes everything or nothing, so the limits were swapped.

Booleans pass when the value is the expected one (``true`` unless said otherwise: a relay that must read open is
``expected = false``). Strings: ``CASESENSIT``/``EQ`` exact, ``IGNORECASE`` case-insensitive, ``NE`` different.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

#: operator → (limits it uses, predicate over (value, low, high))
NUMERIC: dict[str, tuple[tuple[str, ...], Callable[[float, float, float], bool]]] = {
    "EQ": (("low",), lambda v, lo, hi: v == lo),
    "NE": (("low",), lambda v, lo, hi: v != lo),
    "GT": (("low",), lambda v, lo, hi: v > lo),
    "LT": (("low",), lambda v, lo, hi: v < lo),
    "GE": (("low",), lambda v, lo, hi: v >= lo),
    "LE": (("low",), lambda v, lo, hi: v <= lo),
    "GTLT": (("low", "high"), lambda v, lo, hi: lo < v < hi),
    "GELE": (("low", "high"), lambda v, lo, hi: lo <= v <= hi),
    "GELT": (("low", "high"), lambda v, lo, hi: lo <= v < hi),
    "GTLE": (("low", "high"), lambda v, lo, hi: lo < v <= hi),
    "LTGT": (("low", "high"), lambda v, lo, hi: v < lo or v > hi),
    "LEGE": (("low", "high"), lambda v, lo, hi: v <= lo or v >= hi),
    "LEGT": (("low", "high"), lambda v, lo, hi: v <= lo or v > hi),
    "LTGE": (("low", "high"), lambda v, lo, hi: v < lo or v >= hi),
}
#: operators with a limit that the agent does not judge (the source's verdict stands)
UNJUDGED_NUMERIC = {"LOG": (), "EQT": ("low",)}
NUMERIC_OPS = frozenset(NUMERIC) | frozenset(UNJUDGED_NUMERIC)

STRING: dict[str, Callable[[str, str], bool]] = {
    "CASESENSIT": operator.eq,
    "EQ": operator.eq,
    "IGNORECASE": lambda v, lim: v.casefold() == lim.casefold(),
    "NE": operator.ne,
}
STRING_OPS = frozenset(STRING) | {"LOG"}
#: how a non-finite reading is written (the WATS client library's report model serialises them so)
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class LimitError(ValueError):
    """The operator and the limits given do not fit together; the text says which is missing or unknown."""


def non_finite_text(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def as_number(value: object) -> float | None:
    """A numeric reading as a float (a non-finite one from its text form too); None when it is no number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    return None


def default_op(low: float | None, high: float | None) -> str:
    """The operator a source means when it gives limits without one: inclusive on both sides."""
    if low is not None and high is not None:
        return "GELE"
    if low is not None:
        return "GE"
    if high is not None:
        return "LE"
    return "LOG"


def limits_of(op: str, low: float | None, high: float | None) -> tuple[float | None, float | None]:
    """``(lowLimit, highLimit)`` as WSJF carries them for ``op``. A single-limit operator takes the one limit given,
    on whichever side the source named it (``LT`` with only a ``high`` of 5 is "< 5"). Raises ``LimitError`` when a
    needed limit is missing or the operator is unknown."""
    uses = NUMERIC[op][0] if op in NUMERIC else UNJUDGED_NUMERIC.get(op)
    if uses is None:
        raise LimitError(f"unknown comparison operator {op!r} (one of {', '.join(sorted(NUMERIC_OPS))})")
    if uses == ():
        return None, None
    if uses == ("low",):
        if low is not None and high is not None and low != high:
            raise LimitError(f"{op} compares against one limit; got low {low} and high {high}")
        limit = low if low is not None else high
        if limit is None:
            raise LimitError(f"{op} needs a limit")
        if not math.isfinite(limit):
            raise LimitError(f"{op}: limit {limit} is not a finite number")
        return limit, None
    if low is None or high is None:
        raise LimitError(f"{op} needs a low and a high limit")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise LimitError(f"{op}: limits {low}, {high} are not finite numbers")
    if low > high:  # passes everything or nothing: the limits were swapped, not meant
        raise LimitError(f"{op}: low limit {low} is above the high limit {high}")
    return low, high


def numeric_passes(op: str, value: float, low: float | None, high: float | None) -> bool | None:
    """Whether ``value`` passes ``op`` with these limits; None when ``op`` is not judged (``LOG``, ``EQT``).
    A non-finite value never passes a judged operator."""
    lo, hi = limits_of(op, low, high)
    if op not in NUMERIC:
        return None
    if not math.isfinite(value):
        return False
    return NUMERIC[op][1](value, lo, hi)  # type: ignore[arg-type]


def string_passes(op: str, value: str, limit: str | None) -> bool | None:
    """Whether a text value passes; None for ``LOG`` (recorded, not judged)."""
    if op == "LOG":
        return None
    if op not in STRING:
        raise LimitError(f"unknown string comparison {op!r} (one of {', '.join(sorted(STRING_OPS))})")
    if limit is None:
        raise LimitError(f"{op} needs an expected text")
    return STRING[op](value, limit)


def boolean_passes(value: bool, expected: bool | None) -> bool:
    return value is (True if expected is None else expected)
