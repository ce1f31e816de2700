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
or finishes the swap at the next start (``Journal._open_checked``), so undelivered events are never left behind in
a file nobody reads.
"""

from __future__ import annotations

import logging
import sqlite3
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
}
_KEY = {"events": "seq", "dead_letters": "id", "subscribers": "rowid", "state": "rowid"}
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


def walk(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], *, chunk: int = 256,
         on_gap: Callable[[int, int], None]) -> Iterator[tuple]:
    """Every readable row of ``table`` as ``(key, *columns)`` in key order; unreadable key ranges go to ``on_gap``.

    A query that fails is retried with half the batch; once a single row after ``pos`` cannot be read, the walk
    probes ever further ahead for a key it can read from, then narrows the gap back down by bisection.
    """
    key = _KEY[table]
    sql = f"SELECT {key}, {', '.join(columns)} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?"

    def probe(after: int) -> bool:
        try:
            conn.execute(sql, (after, 1)).fetchall()
            return True
        except sqlite3.DatabaseError:
            return False

    pos, size = _MIN_KEY, chunk
    while True:
        try:
            rows = conn.execute(sql, (pos, size)).fetchall()
        except sqlite3.DatabaseError:
            if size > 1:
                size //= 2
                continue
            start = max(pos, 0)  # keys are never negative here; the first probe starts from 0
            step, good = 1, None
            while start + step < _MAX_KEY:
                if probe(start + step):
                    good = start + step
                    break
                step *= 2
            if good is None:  # nothing readable after pos
                on_gap(pos + 1 if pos > _MIN_KEY else 0, _MAX_KEY)
                return
            lo, hi = start, good  # probe(lo) failed (or lo is pos), probe(hi) succeeds
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if probe(mid):
                    hi = mid
                else:
                    lo = mid
            # ``key > hi`` can be read, but a seek for ``key > hi - 1`` lands on the bad page: the row at ``hi``
            # itself may well sit on the next, good page
            try:
                at_hi = conn.execute(sql.replace(f"{key} > ?", f"{key} = ?"), (hi, 1)).fetchall()
            except sqlite3.DatabaseError:
                at_hi = None
            on_gap(pos + 1 if pos > _MIN_KEY else 0, hi if at_hi is None else hi - 1)
            if at_hi:
                yield from at_hi
            pos, size = hi, chunk
            continue
        if not rows:
            return
        if rows[-1][0] <= pos:  # a damaged interior page pointing backwards: stop rather than loop
            on_gap(pos + 1, _MAX_KEY)
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
        return isinstance(row[1], str) and isinstance(row[2], str)
    return isinstance(row[0], int) and isinstance(row[5], str)  # dead_letters: its id and its reason


def salvage(src_path: Path, into: sqlite3.Connection, *, batch: int = 500) -> SalvageReport:
    """Copy every readable row of the journal at ``src_path`` into ``into`` (a new journal with the schema, no
    rows) in transactions of ``batch`` rows. ``into`` is left without a transaction open."""
    report = SalvageReport(source=str(src_path))
    try:
        src = open_readonly(src_path)
        names = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        report.error = f"its table list cannot be read: {e}"
        return report
    try:
        for table, columns in TABLES.items():
            report.rows[table] = report.rejected[table] = 0
            report.unreadable[table] = []
            if table not in names:
                report.unreadable[table].append((0, _MAX_KEY))
                continue
            _copy(src, into, table, columns, report, batch)
        _move_sequence_past_cursors(src, into)
    finally:
        src.close()
    return report


def _copy(src: sqlite3.Connection, into: sqlite3.Connection, table: str, columns: tuple[str, ...],
          report: SalvageReport, batch: int) -> None:
    if table in ("events", "dead_letters"):
        insert = (f"INSERT OR IGNORE INTO {table}({_KEY[table]}, {', '.join(columns)}) "
                  f"VALUES ({', '.join('?' * (len(columns) + 1))})")
    else:  # keyed by name: the rowid is not kept
        insert = f"INSERT OR REPLACE INTO {table}({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    pending: list[tuple] = []

    def flush() -> None:
        into.execute("BEGIN IMMEDIATE")
        into.executemany(insert, pending)
        into.execute("COMMIT")
        pending.clear()

    for row in walk(src, table, columns, on_gap=lambda a, b: report.unreadable[table].append((a, b))):
        if not _valid(table, row):
            report.rejected[table] += 1
            continue
        pending.append(row if table in ("events", "dead_letters") else row[1:])
        report.rows[table] += 1
        if len(pending) >= batch:
            flush()
    if pending:
        flush()


def _move_sequence_past_cursors(src: sqlite3.Connection, into: sqlite3.Connection) -> None:
    """New events must be numbered after every seq a cursor has passed, or a subscriber would skip them."""
    floor = into.execute(
        "SELECT MAX(COALESCE((SELECT MAX(cursor) FROM subscribers), 0), COALESCE((SELECT MAX(seq) FROM events), 0))"
    ).fetchone()[0]
    try:
        old = src.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        floor = max(floor, int(old[0]) if old else 0)
    except (sqlite3.DatabaseError, TypeError, ValueError):
        pass
    into.execute("BEGIN IMMEDIATE")
    if into.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'events'", (floor,)).rowcount == 0:
        into.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('events', ?)", (floor,))
    into.execute("COMMIT")
