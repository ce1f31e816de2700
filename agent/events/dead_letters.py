"""Dead letters: the rows of the journal's ``dead_letters`` table, the SQL that writes, reads, retries and drops
them, and the Python API's view of them (``DeadLetterEntry``, ``DeadLetterQueue``).

Two kinds share the table: a subscriber's undeliverable event (``subscriber`` set, the whole event as the body;
never evicted) and bad input from a source that never became an event (``subscriber`` NULL, the raw bytes; held
to its own share of ``journal.max_bytes`` and evicted oldest first past it). The functions here run inside a
transaction the journal's writer owns (``Journal.call``), so each is atomic with whatever else that batch commits;
when a subscriber's dead letter is committed (lazily, with its cursor) is the journal's business, not this
module's: see ``Journal.dead_letter``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .model import Event, EventValidationError, decode
from .opening import ROW_OVERHEAD, bump

if TYPE_CHECKING:
    from .journal import Journal

log = logging.getLogger("agent.events.journal")  # the journal's own log lines, as before the split

#: a subscriber's dead letter: (event_id, event_type, subscriber, origin, reason, attempts, created_at, body)
_INSERT = ("INSERT INTO dead_letters(event_id, event_type, subscriber, origin, reason, attempts, created_at, body) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


# ------------------------------------------------------------------------------------------------ rows
@dataclass
class DeadLetter:
    """A dead-letter row. ``subscriber`` is None for bad input that never became an event."""

    id: int
    event_id: str | None
    event_type: str | None
    subscriber: str | None
    origin: str | None
    reason: str
    attempts: int
    created_at: float
    retry_requested: bool
    body: bytes | None

    def to_dict(self, with_body: bool = False) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "body"}
        d["created_at"] = datetime.fromtimestamp(self.created_at, timezone.utc).isoformat()
        if with_body and self.body is not None:
            d["body"] = self.body.decode("utf-8", "backslashreplace")
        return d


def read_dead_letters(conn: sqlite3.Connection, limit: int | None = None, subscriber: str | None = None,
                      event_type: str | None = None, ids: Sequence[int] | None = None) -> list[DeadLetter]:
    """Dead letters through any connection: ``Journal.dead_letters`` and the CLI's read-only ``dlq list``."""
    sql, args = "SELECT * FROM dead_letters WHERE 1=1", []
    if subscriber is not None:
        sql += " AND subscriber = ?"
        args.append(subscriber)
    if event_type is not None:
        sql += " AND event_type = ?"
        args.append(event_type)
    if ids:
        sql += f" AND id IN ({','.join('?' * len(ids))})"
        args.extend(ids)
    sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [DeadLetter(*r[:8], bool(r[8]), r[9]) for r in conn.execute(sql, args)]


def insert(conn: sqlite3.Connection, row: tuple) -> int:
    """One subscriber's dead letter, counted in ``used_bytes``; its id."""
    cur = conn.execute(_INSERT, row)
    conn.execute("UPDATE meta SET value = value + ? WHERE key = 'used_bytes'", (len(row[7] or b"") + ROW_OVERHEAD,))
    return cur.lastrowid


def insert_many(conn: sqlite3.Connection, rows: Sequence[tuple]) -> None:
    """The lazy dead letters of a batch (their ids come at the commit and are not needed)."""
    conn.executemany(_INSERT, rows)
    conn.execute("UPDATE meta SET value = value + ? WHERE key = 'used_bytes'",
                 (sum(len(row[7] or b"") + ROW_OVERHEAD for row in rows),))


def last_id(conn: sqlite3.Connection) -> int:
    """The highest dead-letter id ever handed out (ids are never reused, not even after a salvage)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'dead_letters'").fetchone()
    return int(row[0]) if row else 0


def request_retry(conn: sqlite3.Connection, ids: Sequence[int] | None) -> tuple[list[int], list[str]]:
    """Mark dead letters for redelivery to their subscriber. Returns (marked ids, reasons others were not)."""
    sql = "SELECT id, subscriber, body FROM dead_letters"
    rows = conn.execute(sql + (f" WHERE id IN ({','.join('?' * len(ids))})" if ids else ""), ids or ()).fetchall()
    found = {r[0] for r in rows}
    marked, skipped = [], [f"#{i}: no such dead letter" for i in (ids or ()) if i not in found]
    for i, sub, body in rows:
        if sub is None:
            skipped.append(f"#{i}: bad input from a source is kept for inspection; it has no subscriber to retry")
            continue
        conn.execute("UPDATE dead_letters SET retry_requested = 1 WHERE id = ?", (i,))
        marked.append(i)
    return marked, skipped


def retries_for(conn: sqlite3.Connection, subscriber: str, limit: int = 50) -> list[DeadLetter]:
    """The dead letters of ``subscriber`` marked for redelivery, oldest first."""
    rows = conn.execute(
        "SELECT * FROM dead_letters WHERE subscriber = ? AND retry_requested = 1 ORDER BY id LIMIT ?",
        (subscriber, limit),
    ).fetchall()
    return [DeadLetter(*r[:8], bool(r[8]), r[9]) for r in rows]


def drop(conn: sqlite3.Connection, ids: Sequence[int] | None) -> int:
    """Delete dead letters (all of them when ``ids`` is None), and their bytes from the bound. Returns how many."""
    where = f" WHERE id IN ({','.join('?' * len(ids))})" if ids else ""
    size = conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM dead_letters{where}", ids or ()
    ).fetchone()
    bad = conn.execute(
        f"SELECT COALESCE(SUM(COALESCE(length(body), 0)), 0) + COUNT(*) * ? FROM dead_letters{where}"
        + (" AND" if where else " WHERE") + " subscriber IS NULL", (ROW_OVERHEAD, *(ids or ()))
    ).fetchone()[0]
    conn.execute(f"DELETE FROM dead_letters{where}", ids or ())
    conn.execute(
        "UPDATE meta SET value = MAX(0, value - ?) WHERE key = 'used_bytes'", (size[1] + size[0] * ROW_OVERHEAD,)
    )
    conn.execute("UPDATE meta SET value = MAX(0, value - ?) WHERE key = 'bad_input_bytes'", (bad,))
    return size[0]


def keep_after_retry(conn: sqlite3.Connection, dead_letter_id: int, reason: str | None, attempts: int) -> None:
    """A requested retry failed again: keep the dead letter with the new reason, no longer marked."""
    conn.execute(
        "UPDATE dead_letters SET retry_requested = 0, reason = ?, attempts = attempts + ? WHERE id = ?",
        ((reason or "")[:4000], attempts, dead_letter_id),
    )


# ------------------------------------------------------------------------------------------------ bad input
def fit_bad_input(bad: tuple, share: int) -> tuple:
    """A single piece of bad input larger than the whole share is kept cut to it (the reason says so), so the
    share holds and the operator still sees how it began."""
    origin, reason, created, raw = bad
    room = share - ROW_OVERHEAD - 200
    if len(raw) + ROW_OVERHEAD <= share:
        return bad
    room = max(0, room)
    note = f" [kept the first {room} of {len(raw)} bytes: journal.bad_input_max_bytes]"
    return origin, (reason[:4000 - len(note)] + note), created, raw[:room]

def insert_bad_input(conn: sqlite3.Connection, bad: list[tuple], share: int) -> int:
    """Insert (origin, reason, created_at, raw) rows, then hold bad input to its ``share`` of the bound. Returns the last id."""
    cur = None
    for b in bad:
        cur = conn.execute(
            "INSERT INTO dead_letters(origin, reason, attempts, created_at, body) VALUES (?, ?, 0, ?, ?)", b)
    size = sum(len(b[3]) + ROW_OVERHEAD for b in bad)
    conn.execute("UPDATE meta SET value = value + ? WHERE key = 'used_bytes'", (size,))
    conn.execute("UPDATE meta SET value = value + ? WHERE key = 'bad_input_bytes'", (size,))
    held = conn.execute("SELECT value FROM meta WHERE key = 'bad_input_bytes'").fetchone()[0]
    if held > share:
        evict_bad_input(conn, held - share, "bad_input_max_bytes")
    return cur.lastrowid if cur is not None else 0

def evict_bad_input(conn: sqlite3.Connection, need: int, reason: str) -> int:
    """Delete the oldest bad input until ``need`` bytes are freed; count it per origin as
    ``evicted:bad_input:<origin>`` (the reason is in the log line, the count is what ``status`` shows)."""
    freed, counts = 0, {}
    while freed < need:
        victims = conn.execute(
            "SELECT id, origin, COALESCE(length(body), 0) FROM dead_letters WHERE subscriber IS NULL "
            "ORDER BY id LIMIT 500").fetchall()
        if not victims:
            break
        take = []
        for i, origin, n in victims:
            take.append((i,))
            counts[origin or "?"] = counts.get(origin or "?", 0) + 1
            freed += n + ROW_OVERHEAD
            if freed >= need:
                break
        conn.executemany("DELETE FROM dead_letters WHERE id = ?", take)
    for origin, n in counts.items():
        bump(conn, f"evicted:bad_input:{origin}", n)
    if freed:
        conn.execute("UPDATE meta SET value = MAX(0, value - ?) WHERE key = 'used_bytes'", (freed,))
        conn.execute("UPDATE meta SET value = MAX(0, value - ?) WHERE key = 'bad_input_bytes'", (freed,))
        log.warning("journal: %d bad input dead letter(s) deleted, oldest first, to make room (%s): %s",
                    sum(counts.values()), reason, ", ".join(f"{o}={n}" for o, n in sorted(counts.items())))
    return freed


# ------------------------------------------------------------------------------------------------ the Python API
@dataclass
class DeadLetterEntry:
    """A dead letter as the Python API shows it; the row lives in the journal's ``dead_letters`` table."""

    id: int | None  # None for a dead letter committed lazily, with its subscriber's cursor (ids come at the commit)
    event: Event | None
    error: str
    timestamp: datetime
    handler_name: str | None = None
    retry_count: int = 0
    origin: str | None = None
    raw: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "event": self.event.to_dict() if self.event else None,
            "error": self.error,
            "timestamp": self.timestamp.isoformat(),
            "handler_name": self.handler_name,
            "retry_count": self.retry_count,
            "origin": self.origin,
        }


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class DeadLetterQueue:
    """The seed's DLQ API over the journal's dead-letter table: durable, locked by SQLite, never silently
    truncated (the pyWATS one was an in-memory ``deque(maxlen)``)."""

    def __init__(self, journal: "Journal") -> None:
        self._journal = journal

    @staticmethod
    def _entry(row) -> DeadLetterEntry:
        event = None
        if row.subscriber is not None and row.body is not None:
            try:
                event = decode(row.body)
            except EventValidationError:
                event = None
        return DeadLetterEntry(
            id=row.id,
            event=event,
            error=row.reason,
            timestamp=datetime.fromtimestamp(row.created_at, timezone.utc),
            handler_name=row.subscriber,
            retry_count=row.attempts,
            origin=row.origin,
            raw=None if event is not None else row.body,
        )

    def add(self, event: Event, error: BaseException | str, handler_name: str | None = None,
            attempts: int | None = None, lazy: bool = False) -> DeadLetterEntry:
        """``lazy``: committed with the subscriber's next cursor flush (see ``Journal.dead_letter``)."""
        reason = error if isinstance(error, str) else _describe(error)
        n = event.metadata.retry_count + 1 if attempts is None else attempts
        dl_id = self._journal.dead_letter(reason=reason, event=event, subscriber=handler_name, attempts=n, lazy=lazy)
        return DeadLetterEntry(dl_id, event, reason, datetime.now(timezone.utc), handler_name, n, event.source)

    def add_bad_input(self, origin: str, raw: bytes, reason: str) -> int:
        """Bad input from a source (garbled line, malformed JSON): kept with its raw bytes, never an event."""
        return self._journal.dead_letter(reason=reason, origin=origin, raw=raw)

    @property
    def size(self) -> int:
        self._journal.flush_dead_letters()
        return self._journal.reader().execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]

    @property
    def is_empty(self) -> bool:
        return self.size == 0

    def get_entries(self, limit: int | None = None, event_type: str | None = None) -> list[DeadLetterEntry]:
        return [self._entry(r) for r in self._journal.dead_letters(limit=limit, event_type=event_type)]

    def clear(self) -> int:
        return self._journal.drop_dead_letters(None)
