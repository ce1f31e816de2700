"""Reading what can still be read out of a journal that failed its integrity check.

An SD card that returns garbage for a block damages one or a few pages of the file. Most of what the journal holds
(the undelivered events, the cursors, the fixture's counter state, the dead letters) usually sits on other pages and
can still be read by walking each table in rowid order: SQLite's error only tells that *some* page on the way is
bad, so the walk narrows the failing range down (halving the batch, then probing past the gap) and carries on
after it. Indexes are never read: a damaged index loses nothing, the new file rebuilds it.

Rows keep their keys: events their ``seq``, so every subscriber's cursor still points where it pointed, and
``sqlite_sequence`` is moved past every old cursor so a new event is never numbered below one. Each recovered event
body must decode as an event (a page of garbage can still parse as rows); what does not is counted as unreadable.

The salvaged copy is written to ``<journal>.salvage`` and renamed ``<journal>.salvaged`` once complete; only then
is the corrupt file moved aside and the copy put in its place. A power cut at any point either repeats the salvage
or finishes the swap at the next start (``opening.JournalFile._open_checked``), so undelivered events are never left behind in
a file nobody reads.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .model import decode

log = logging.getLogger(__name__)

#: table → the columns copied (the rowid is read and written separately, as the row's key)
TABLES: dict[str, tuple[str, ...]] = {
    "events": ("id", "type", "evictable", "recorded_at", "body"),
    "subscribers": ("name", "cursor", "state", "last_error", "registered_at", "updated_at"),
    "dead_letters": ("event_id", "event_type", "subscriber", "origin", "reason", "attempts", "created_at",
                     "retry_requested", "body"),
    "state": ("key", "value", "updated_at"),
    "meta": ("key", "value"),  # evicted/refused counts; used_bytes is recomputed by the journal afterwards
}
_KEY = {"events": "seq", "dead_letters": "id", "subscribers": "rowid", "state": "rowid", "meta": "rowid"}
_MIN_KEY = -(1 << 63)
_MAX_KEY = (1 << 63) - 1


@dataclass
class SalvageReport:
    """What was read out of a corrupt journal, and what could not be."""

    source: str
    rows: dict[str, int] = field(default_factory=dict)
    #: per table, the key ranges that could not be read (``(first, last)`` inclusive, as far as they are known)
    unreadable: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: rows read but refused (an events body that is not an event, a row of the wrong shape)
    rejected: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and not any(self.unreadable.values()) and not any(self.rejected.values())

    def summary(self) -> str:
        if self.error:
            return f"nothing could be read ({self.error})"
        got = ", ".join(f"{n} {t.replace('_', ' ')}" for t, n in self.rows.items())
        bad = [f"{t} {_ranges(r)}" for t, r in self.unreadable.items() if r]
        bad += [f"{n} damaged {t} rows" for t, n in self.rejected.items() if n]
        return f"salvaged {got}" + (f"; UNREADABLE: {'; '.join(bad)}" if bad else "; nothing unreadable")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows": self.rows, "unreadable": self.unreadable,
                "rejected": self.rejected, "error": self.error, "summary": self.summary()}


def _ranges(ranges: list[tuple[int, int]]) -> str:
    def one(a: int, b: int) -> str:
        if b >= _MAX_KEY:
            return f"{a}…end"
        return str(a) if a == b else f"{a}–{b}"

    return ", ".join(one(a, b) for a, b in ranges)


def open_readonly(path: Path) -> sqlite3.Connection:
    """Read-only, so a damaged file is never checkpointed into or otherwise changed (it is the evidence)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA query_only = 1")
    return conn


#: beyond this many keys a gap is reported whole rather than looked up key by key
MAX_POINT_PROBES = 1_000_000


def walk(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], *, chunk: int = 256,
         on_gap: Callable[[int, int], None], max_key: int | None = None) -> Iterator[tuple]:
    """Every readable row of ``table`` as ``(key, *columns)`` in key order; unreadable key ranges go to ``on_gap``.

    A range query that fails is retried with half the batch. Once even the next single row cannot be read, the
    walk probes ever further ahead (``key > x``) for a point it can scan from again, then looks up every key in
    between on its own: a point lookup descends to one leaf, so it reads whatever pages survive inside the gap,
    however many bad and good pages alternate there. ``max_key`` (from ``sqlite_sequence``) bounds that search
    when nothing after the gap can be scanned.
    """
    key = _KEY[table]
    cols = ", ".join(columns)
    scan = f"SELECT {key}, {cols} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?"
    point = f"SELECT {key}, {cols} FROM {table} WHERE {key} = ?"

    def probe(after: int) -> bool:
        try:
            conn.execute(scan, (after, 1)).fetchall()
            return True
        except sqlite3.DatabaseError:
            return False

    pos, size = _MIN_KEY, chunk
    while True:
        try:
            rows = conn.execute(scan, (pos, size)).fetchall()
            if rows and rows[-1][0] <= pos:
                raise sqlite3.DatabaseError("rows out of order (a damaged interior page)")
        except sqlite3.DatabaseError:
            if size > 1:
                size //= 2
                continue
            start = max(pos, -1)  # keys here are never negative
            step, good = 1, None
            while start + step < _MAX_KEY:
                if probe(start + step):
                    good = start + step
                    break
                step *= 2
            end = good if good is not None else (max_key if max_key is not None and max_key > start else _MAX_KEY)
            if end - start > MAX_POINT_PROBES:
                on_gap(start + 1, end)
            else:
                gap = None
                for k in range(start + 1, end + 1):
                    try:
                        found = conn.execute(point, (k,)).fetchall()
                    except sqlite3.DatabaseError:
                        gap = k if gap is None else gap
                        continue
                    if gap is not None:
                        on_gap(gap, k - 1)
                        gap = None
                    yield from found
                if gap is not None:
                    on_gap(gap, end)
            if good is None:
                return
            pos, size = good, chunk
            continue
        if not rows:
            return
        yield from rows
        pos, size = rows[-1][0], chunk


def _valid(table: str, row: tuple) -> bool:
    """A damaged page can still parse into rows; keep only those that have the shape the journal wrote."""
    if table == "events":
        _, ev_id, ev_type, _, recorded_at, body = row
        if not (isinstance(ev_id, str) and isinstance(ev_type, str) and isinstance(body, bytes)
                and isinstance(recorded_at, (int, float))):
            return False
        try:
            ev = decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            return False
        return ev.metadata.event_id == ev_id and ev.event_type == ev_type
    if table == "subscribers":
        return isinstance(row[1], str) and isinstance(row[2], int)
    if table == "state":
        if not (isinstance(row[1], str) and isinstance(row[2], str)):
            return False
        try:
            msgspec.json.decode(row[2])
        except msgspec.DecodeError:
            return False
        return True
    if table == "meta":
        return isinstance(row[1], str) and isinstance(row[2], int)
    return isinstance(row[0], int) and isinstance(row[5], str)  # dead_letters: its id and its reason


def salvage(src_path: Path, into: sqlite3.Connection, *, batch: int = 500,
            progress: Callable[[int], None] | None = None) -> SalvageReport:
    """Copy every readable row of the journal at ``src_path`` into ``into`` (a new journal with the schema, no
    rows) in transactions of ``batch`` rows. ``into`` is left without a transaction open. ``progress`` is called
    with the rows copied so far every few seconds (the agent tells systemd it is still starting)."""
    report = SalvageReport(source=str(src_path))
    try:
        src = open_readonly(src_path)
    except sqlite3.DatabaseError as e:
        report.error = f"it cannot be opened: {e}"
        return report
    try:
        try:
            names = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as e:
            report.error = f"its table list cannot be read: {e}"
            return report
        sequences = _sequences(src)
        ticker = _Ticker(progress, report)
        for table, columns in TABLES.items():
            report.rows[table] = report.rejected[table] = 0
            report.unreadable[table] = []
            if table not in names:
                if table != "meta":
                    report.unreadable[table].append((0, _MAX_KEY))
                continue
            _copy(src, into, table, columns, report, batch, sequences.get(table), ticker)
        _move_sequences(into, sequences)
    finally:
        src.close()
    return report


class _Ticker:
    def __init__(self, progress: Callable[[int], None] | None, report: SalvageReport) -> None:
        self.progress, self.report, self.last = progress, report, time.monotonic()

    def __call__(self) -> None:
        if self.progress is not None and time.monotonic() - self.last >= 5.0:
            self.last = time.monotonic()
            self.progress(sum(self.report.rows.values()))


def _sequences(src: sqlite3.Connection) -> dict[str, int]:
    try:
        return {name: int(seq) for name, seq in src.execute("SELECT name, seq FROM sqlite_sequence")}
    except (sqlite3.DatabaseError, TypeError, ValueError):
        return {}


def _copy(src: sqlite3.Connection, into: sqlite3.Connection, table: str, columns: tuple[str, ...],
          report: SalvageReport, batch: int, max_key: int | None, tick: Callable[[], None]) -> None:
    if table in ("events", "dead_letters"):
        insert = (f"INSERT OR IGNORE INTO {table}({_KEY[table]}, {', '.join(columns)}) "
                  f"VALUES ({', '.join('?' * (len(columns) + 1))})")
    else:  # keyed by name: the rowid is not kept
        insert = f"INSERT OR REPLACE INTO {table}({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    pending: list[tuple] = []

    def flush() -> None:
        into.execute("BEGIN IMMEDIATE")
        stored = into.executemany(insert, pending).rowcount
        into.execute("COMMIT")
        report.rows[table] += stored
        report.rejected[table] += len(pending) - stored  # a second row with the same id, a NOT NULL column empty
        pending.clear()
        tick()

    for row in walk(src, table, columns, on_gap=lambda a, b: report.unreadable[table].append((a, b)),
                    max_key=max_key):
        if not _valid(table, row):
            report.rejected[table] += 1
            continue
        pending.append(row if table in ("events", "dead_letters") else row[1:])
        if len(pending) >= batch:
            flush()
    if pending:
        flush()


def _move_sequences(into: sqlite3.Connection, old: dict[str, int]) -> None:
    """New rows must be numbered after every key the old file handed out: events after every seq a cursor has
    passed (or a subscriber would skip them), dead letters after every id (a CLI user may hold one)."""
    floors = {
        "events": into.execute(
            "SELECT MAX(COALESCE((SELECT MAX(cursor) FROM subscribers), 0),"
            " COALESCE((SELECT MAX(seq) FROM events), 0))").fetchone()[0],
        "dead_letters": into.execute("SELECT COALESCE(MAX(id), 0) FROM dead_letters").fetchone()[0],
    }
    into.execute("BEGIN IMMEDIATE")
    for name, floor in floors.items():
        floor = max(floor, old.get(name, 0))
        if into.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (floor, name)).rowcount == 0:
            into.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (name, floor))
    into.execute("COMMIT")
