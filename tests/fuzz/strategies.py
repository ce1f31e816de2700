"""Shared pieces for fuzzing any parser of outside input with hypothesis.

Every fuzz test runs in two forms with the same code:

* **quick** (the default suite): ``QUICK_EXAMPLES`` inputs per test, a few seconds in all;
* **long**: ``FIXTURE_AGENT_FUZZ=long`` (or ``=N`` for N inputs per test) runs ``LONG_EXAMPLES`` (100,000) per
  test, with no deadline. ``FIXTURE_AGENT_FUZZ_REPORT=FILE`` appends one JSON line per test with its tally (how
  many inputs, how many were accepted, how many refused and with which kinds of reason), the figures
  ``docs/faults.md`` records.

``fuzz_settings()`` gives the hypothesis settings for the form in force; ``Tally`` counts outcomes; the strategies
make the inputs devices and people send: arbitrary bytes, arbitrary JSON, JSON nested deeper than any decoder
recurses, byte-level mutations of a valid input, and TOML values of every type.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from datetime import date, datetime, timezone
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

QUICK_EXAMPLES = 300
LONG_EXAMPLES = 100_000


def fuzz_mode() -> tuple[str, int]:
    """("quick" | "long", inputs per test)."""
    value = os.environ.get("FIXTURE_AGENT_FUZZ", "").strip().lower()
    if value == "long":
        return "long", LONG_EXAMPLES
    if value.isdigit():
        return "long", int(value)
    return "quick", QUICK_EXAMPLES


def fuzz_settings(quick: int | None = None) -> settings:
    """Hypothesis settings for the form in force. Long runs have no deadline (a slow example on a shared machine is
    not a finding) and skip the shrinking database noise checks."""
    mode, n = fuzz_mode()
    if mode == "quick" and quick is not None:
        n = quick
    return settings(max_examples=n, deadline=None if mode == "long" else 2000, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much], print_blob=True)


class Tally:
    """Outcomes of one fuzz test: accepted inputs, and refusals by the kind of reason (the reason's text with
    numbers, quoted values and paths taken out, so 'not JSON: … (byte 3)' and '(byte 9)' count as one kind)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started: float | None = None  # at the first input, not at import
        self.last: float | None = None  # at the last: the test's own time, wherever its module reports it
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.inputs = 0

    #: a long run also appends its tally every this many inputs (``"partial": true``): a run cut short keeps them
    PROGRESS_EVERY = 5_000

    def accept(self) -> None:
        self.last = time.monotonic()
        self.started = self.started or self.last
        self.accepted += 1
        self._progress()

    def refuse(self, reason: str) -> None:
        self.last = time.monotonic()
        self.started = self.started or self.last
        self.refused[self.kind(reason)] += 1
        self._progress()

    def _progress(self) -> None:
        self.inputs += 1
        if self.inputs % self.PROGRESS_EVERY == 0 and fuzz_mode()[0] == "long":
            self.report(partial=True)

    @staticmethod
    def kind(reason: str) -> str:
        text = re.sub(r"`[^`]*`|'[^']*'|\"[^\"]*\"", "…", reason)
        text = re.sub(r"\d+", "N", text)
        return text[:90]

    def report(self, partial: bool = False) -> dict[str, Any]:
        doc = {**({"partial": True} if partial else {}), "test": self.name,
               "inputs": self.accepted + sum(self.refused.values()), "accepted": self.accepted,
               "refused": sum(self.refused.values()), "kinds_of_refusal": len(self.refused),
               "top_refusals": self.refused.most_common(5),
               "seconds": round((self.last or 0.0) - (self.started or 0.0), 1)}
        path = os.environ.get("FIXTURE_AGENT_FUZZ_REPORT")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(doc) + "\n")
        return doc


# ---------------------------------------------------------------------------------------------------- JSON
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
    st.sampled_from(["", "pass", "fail", "Passed", "1523", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00",
                     "9999-12-31T23:59:59+14:00", "\x00", "\u202e", "é" * 3, "x" * 300]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=20)
#: the values of an arbitrary object are smaller trees (5 leaves, not 20): an object of six 20-leaf values cost 11 ms
#: of hypothesis' time per input against 6 ms, for nothing a parser reads (they judge the top level's keys and
#: types; depth is ``deeply_nested``'s job)
json_objects = st.dictionaries(st.text(max_size=12), st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=5), max_size=6)


def to_json(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


@st.composite
def deeply_nested(draw: st.DrawFn, inside: bytes = b"1") -> bytes:
    """Arrays or objects nested far past any recursion limit (``[[[…1…]]]``, ``{"a":{"a":…}}``)."""
    depth = draw(st.sampled_from([65, 200, 1_000, 5_000, 60_000]))
    if draw(st.booleans()):
        return b"[" * depth + inside + b"]" * depth
    return b'{"a":' * depth + inside + b"}" * depth


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid input with a few bytes flipped, dropped, repeated or inserted: what a noisy wire delivers."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=4))
            continue
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "drop", "dup", "insert", "truncate"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "drop":
            del data[i]
        elif op == "dup":
            data[i:i] = data[i:i + draw(st.integers(1, 8))]
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b'"', b"{", b"[", b"]", b"}", b",", b":", b"\\", b"\x00", b"\xff",
                                              b"1e999", b"null", b"-"]))
        else:
            del data[i:]
    return bytes(data)


# ---------------------------------------------------------------------------------------------------- TOML
#: strings that look like what the config's keys take, so the fuzzer reaches past the type checks
_LOOKALIKES = st.one_of(
    st.from_regex(r"\A-?\d{1,25}(\.\d{1,5})?\s?(ms|s|m|h|d|w|k|kb|mb|gb|tb|kib|mib|gib|tib|b|x)?\Z"),
    st.from_regex(r"\A[a-z0-9.\[\]:]{0,20}:\d{1,7}\Z"),
    st.from_regex(r"\A(https?|amqps?|mqtt|ftp)://[a-z0-9.\-:@\[\]]{0,20}(/[a-z/]{0,8})?\Z"),
    st.from_regex(r"\A[a-z0-9+#/ ]{0,12}\Z"),
    st.sampled_from(["", " ", "5", "3.1.1", "absolute", "increment", "jsonl", "scpi", "full", "normal", "debug",
                     "busy", "idle", "online", "asset", "test_result", "nan", "inf", "1e400", "9" * 400 + "d",
                     "Vendor.Model.SN1", "has space", "simulator:jsonl", "/dev/null", "/nonexistent/x"]))

toml_scalars = st.one_of(
    st.integers(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from([0, 1, -1, 65535, 65536]),
    st.floats(), st.booleans(), st.text(max_size=40), _LOOKALIKES,
    st.datetimes(timezones=st.sampled_from([None, timezone.utc])), st.dates())
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4), max_leaves=8)


def toml_value(v: Any) -> str:
    """One value as TOML (inline tables for tables): tomllib has no writer."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_string(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    return re.sub(r"[\x7f\ud800-\udfff]", lambda m: f"\\u{ord(m.group(0)):04x}", out)


def toml_document(doc: dict[str, Any]) -> str:
    """A whole document, one top-level key per line (``agent = {station = "s"}``)."""
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())
