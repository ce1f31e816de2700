"""The journal: one SQLite file holding the event log, subscriber cursors, dead letters and small state.

It is Kafka's log-plus-consumer-offsets idea on a Pi's SD card:

* ``events`` is append-only; ``seq`` (AUTOINCREMENT, never reused) is the offset every cursor points at.
* ``subscribers`` holds each durable subscriber's cursor: the last ``seq`` it acknowledged. Cursors are flushed
  lazily, in the next write transaction or within ``cursor_flush_interval``; losing a flush to a crash only means
  redelivery, which sinks make harmless. Events every durable subscriber has acknowledged are deleted.
* ``dead_letters`` keeps what could not be delivered (with the whole event) and bad input that never became an
  event (with the raw bytes), so nothing is lost and everything can be replayed or inspected.
* ``state`` is a small key/value table for things that must move together with events (e.g. a fixture's
  counter is written in the same transaction as the ``asset.counters`` event that reports it).

Group commit: publishers on any number of threads hand their rows to one writer thread, which drains everything
queued into a single transaction: one fsync per batch instead of one per event. That is the whole game on an SD
card that needs milliseconds per sync.

Bounds: ``max_bytes`` counts the stored events and dead letters (body plus a per-row overhead estimate), kept in
the ``meta`` table inside the same transactions, so several processes writing the same file (the agent and a
``fixture-agent publish`` script) share one exact figure. When an append would pass the bound, the oldest
*evictable* (telemetry-class) events are deleted and counted; if that is not enough, the append is refused with
``JournalFull``: results are never dropped silently. Telemetry older than ``max_age`` is evicted too; result-class
events past ``max_age`` are kept and reported as stale, because deleting a test result is never our call.

Bad input (a source's raw bytes that never became an event: dead letters without a subscriber) has its own share
of ``max_bytes``, ``bad_input_max_bytes`` (a twentieth by default): past it the oldest bad input is deleted and
counted (``evicted:bad_input:<origin>``), and it gives way to events too when they need the room. One device
sending junk once filled the whole journal with dead letters, which were never evicted, and the journal then
refused every other source's results. Dead letters of a subscriber hold whole events and are never evicted.

The hot path uses the standard library's ``sqlite3`` directly; see the README for why sqlite-utils stays out of it.

This module is the public face (``Journal``: appending, reading, cursors, state, dead letters, stats, closing). Its
parts: ``writer.py`` (the writer thread, group commit, the bounds), ``opening.py`` (the lock, the check, the schema,
a corrupt file's salvage and swap, with ``salvage.py`` reading the rows out), ``dead_letters.py`` (the rows and
their SQL), ``journal_stats.py`` (what ``status`` reads) and ``journal_errors.py``.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from . import dead_letters as dl
from .dead_letters import DeadLetter, read_dead_letters
from .journal_errors import JournalClosed, JournalError, JournalFull, StateConflict
from .journal_stats import JournalStats, open_readonly, read_stats
from .model import Event, encode
from .opening import ROW_OVERHEAD, SCHEMA, SCHEMA_VERSION, JournalFile, make_dirs
from .writer import STOP, WAKE, GroupCommitWriter, Request


#: Moved out with the split of this module (issue 17), importable from here as before: the errors
#: (``journal_errors``), the schema and the opening (``opening``), the dead-letter rows (``dead_letters``) and what
#: ``status`` reads (``journal_stats``).
__all__ = [
    "Journal", "StoredEvent", "type_matcher", "JournalError", "JournalFull", "StateConflict", "JournalClosed",
    "ROW_OVERHEAD", "SCHEMA", "SCHEMA_VERSION", "make_dirs", "DeadLetter", "read_dead_letters", "JournalStats",
    "read_stats", "open_readonly",
]

@dataclass(frozen=True)
class StoredEvent:
    """A row of the log as a subscriber reads it: offset, type and the encoded event."""

    seq: int
    type: str
    body: bytes
    recorded_at: float



def type_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """``["asset.telemetry", "system.*"]`` → predicate; ``*`` alone matches everything."""
    exact, prefixes = set(), []
    for pat in patterns:
        if pat.endswith("*"):
            prefixes.append(pat[:-1])
        else:
            exact.add(pat)
    pre = tuple(prefixes)
    return lambda t: t in exact or (bool(pre) and t.startswith(pre))


class Journal(GroupCommitWriter):
    """The durable log. Thread-safe: ``append`` from any thread, readers get their own connections."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 512 * 1024 * 1024,
        max_age: float = 30 * 86400.0,
        sync: str = "full",
        evictable_types: Sequence[str] = ("asset.telemetry",),
        bad_input_max_bytes: int | None = None,
        cursor_flush_interval: float = 0.2,
        maintenance_interval: float = 2.0,
        idle_interval: float = 30.0,
        batch_max_rows: int = 2000,
        busy_timeout_ms: int = 30000,
        linger: float = 0.0005,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if sync not in ("full", "normal"):
            raise ValueError(f"journal sync must be 'full' or 'normal', got {sync!r}")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self._bad_input_max = int(bad_input_max_bytes if bad_input_max_bytes is not None else self.max_bytes // 20)
        if not 0 < self._bad_input_max <= self.max_bytes:
            raise ValueError(f"bad_input_max_bytes must be between 1 and max_bytes, got {self._bad_input_max}")
        self.max_age = float(max_age)
        self.sync = sync
        self._is_evictable = type_matcher(evictable_types)
        self._evictable_cache: dict[str, int] = {}
        self.cursor_flush_interval = cursor_flush_interval
        self.maintenance_interval = maintenance_interval
        self.idle_interval = idle_interval
        self.batch_max_rows = batch_max_rows
        self.busy_timeout_ms = busy_timeout_ms
        self.linger = linger
        self._last_batch_requests = 1

        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending_cursors: dict[str, int] = {}
        self._pending_sub_state: dict[str, tuple[str, str | None]] = {}
        # A subscriber's dead letters, committed with the next flush of cursors (see ``dead_letter(lazy=True)``)
        self._pending_dead_letters: list[tuple] = []
        self._dirty_since: float | None = None
        self._pending_lock = threading.Lock()
        self._appended = threading.Condition()
        self._last_seq = 0
        self._local = threading.local()
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._readers_lock = threading.Lock()
        self._stats_conn: sqlite3.Connection | None = None  # one for stats(), from any thread, under the lock
        self._stats_lock = threading.Lock()
        self._closed = False
        self.commits = 0  # transactions committed by this process; benchmarks and tests read it
        # opening: the lock, the check, the schema, a corrupt file's salvage and swap (``opening.py``)
        self._file = JournalFile(self.path, sync=sync, busy_timeout_ms=busy_timeout_ms, progress=progress)
        self._lock_fd, self._wconn = self._file.open()
        #: a corrupt file found at this open and moved aside (kept, never deleted), or None
        self.corrupt_file: Path | None = self._file.corrupt_file
        self._last_seq = self._wconn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        self._writer = threading.Thread(target=self._writer_loop, name="journal-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        return self._file.connect()

    @property
    def writer_alive(self) -> bool:
        """Whether the writer thread runs: every append and every commit of cursors goes through it, so ``/healthz``
        fails and the systemd watchdog is no longer fed once it has stopped."""
        return self._writer.is_alive()

    # ------------------------------------------------------------------------------------------------ readers
    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (WAL: readers never block the writer or each other).

        A connection costs two descriptors and a page cache; one kept for every thread that ever read leaked them
        for short-lived threads (the old HTTP listener made one per request: a Prometheus scrape every 15 s ran a
        Pi out of descriptors in about two hours). So the connections of threads that have ended are closed
        whenever a new one is made: at most one per live reading thread."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                alive = []
                for thread, c in self._readers:
                    if thread.is_alive():
                        alive.append((thread, c))
                    else:
                        _close_quietly(c)
                alive.append((threading.current_thread(), conn))
                self._readers = alive
        return conn

    def reader_count(self) -> int:
        """Read connections open now (tests hold it to one per live reading thread)."""
        with self._readers_lock:
            return len(self._readers) + (self._stats_conn is not None)

    def read_after(self, seq: int, limit: int = 200) -> list[StoredEvent]:
        """Up to ``limit`` events after offset ``seq``, in order. Streams: never the whole backlog."""
        rows = self.reader().execute(
            "SELECT seq, type, body, recorded_at FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        ).fetchall()
        return [StoredEvent(*r) for r in rows]

    def wait_for_append(self, after_seq: int, timeout: float) -> bool:
        """Block until this process appended past ``after_seq`` or ``timeout`` passed (other processes: poll)."""
        with self._appended:
            if self._last_seq > after_seq:
                return True
            self._appended.wait(timeout)
            return self._last_seq > after_seq

    def wake_waiters(self) -> None:
        """Wake every ``wait_for_append`` (a subscriber being stopped should not sleep out its poll interval)."""
        with self._appended:
            self._appended.notify_all()

    @property
    def last_seq(self) -> int:
        return self._last_seq

    # ------------------------------------------------------------------------------------------------ writing
    def append(self, events: Sequence[Event], state: dict[str, Any] | None = None,
               expect: dict[str, Any] | None = None,
               bad_input: Sequence[tuple[str, bytes, str]] = ()) -> None:
        """Make ``events`` durable (and ``state`` with them, atomically). Returns once committed.

        ``expect`` makes it a compare-and-set: each key must currently hold that value (None: absent), or nothing
        is stored and ``StateConflict`` is raised. Raises ``JournalFull`` when the bound is reached and nothing
        evictable is left; nothing of this call is then stored. ``bad_input`` (origin, raw bytes, reason) become
        dead letters in the same transaction: a source that remembers what it took (in ``state``) then keeps a
        bad message once, even when a crash makes the far end send it again.
        """
        now = time.time()
        rows = []
        for ev in events:
            t = ev.event_type
            ev_flag = self._evictable_cache.get(t)
            if ev_flag is None:
                ev_flag = self._evictable_cache[t] = int(self._is_evictable(t))
            rows.append((ev.metadata.event_id, t, ev_flag, now, encode(ev)))
        req = Request(rows=rows, state=state, expect=expect)
        req.bad = [(origin, reason[:4000], now, raw) for origin, raw, reason in bad_input]
        self._submit(req)

    def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` inside the writer's next transaction (atomic with it) and return its result."""
        return self._submit(Request(fn=fn))

    def _submit(self, req: Request) -> Any:
        if self._closed:
            raise JournalClosed(f"journal {self.path} is closed")
        self._queue.put(req)
        while not req.lock.acquire(timeout=1.0):
            if not self.writer_alive:
                raise JournalClosed(f"journal writer for {self.path} stopped before the request was committed")
        if req.error is not None:
            raise req.error
        return req.result

    def ack(self, subscriber: str, seq: int) -> None:
        """Record that ``subscriber`` has handled everything up to ``seq``; flushed within the flush interval."""
        self._mark_pending("_pending_cursors", subscriber, seq)

    def set_subscriber_state(self, subscriber: str, state: str, last_error: str | None = None) -> None:
        """What ``status`` shows for a subscriber (running, retrying, circuit open …); flushed like cursors."""
        self._mark_pending("_pending_sub_state", subscriber, (state, last_error))

    def _mark_pending(self, table: str, key: str, value: Any) -> None:
        self._pending(lambda: getattr(self, table).__setitem__(key, value))

    def _pending(self, update: Callable[[], None]) -> None:
        # The writer swaps the pending tables under the lock, so they are looked up inside it. The writer may be
        # asleep for idle_interval: wake it once, so it flushes within cursor_flush_interval.
        with self._pending_lock:
            update()
            wake = self._dirty_since is None
            if wake:
                self._dirty_since = time.monotonic()
        if wake:
            self._queue.put(WAKE)

    def flush(self) -> None:
        """Commit pending cursors and subscriber states now."""
        self.call(lambda conn: None)

    # ------------------------------------------------------------------------------------------- subscribers
    def register_subscriber(self, name: str, start: str = "earliest") -> int:
        """Create a durable cursor (or return the existing one). A new one starts at the oldest retained event
        (``earliest``) so a sink added to a running fixture receives the backlog, or at the end (``latest``)."""

        def fn(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT cursor FROM subscribers WHERE name = ?", (name,)).fetchone()
            if row:
                return row[0]
            if start == "latest":
                cursor = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            else:
                oldest = conn.execute("SELECT MIN(seq) FROM events").fetchone()[0]
                if oldest is not None:
                    cursor = oldest - 1
                else:  # empty log: start after everything ever written
                    cursor = conn.execute(
                        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"
                    ).fetchone()[0]
            now = time.time()
            conn.execute(
                "INSERT INTO subscribers(name, cursor, state, registered_at, updated_at) VALUES (?, ?, 'registered', ?, ?)",
                (name, cursor, now, now),
            )
            return cursor

        return self.call(fn)

    def drop_subscriber(self, name: str) -> bool:
        """Forget a durable subscriber: its backlog no longer holds events in the journal."""
        return self.call(lambda conn: conn.execute("DELETE FROM subscribers WHERE name = ?", (name,)).rowcount > 0)

    def cursor(self, name: str) -> int | None:
        row = self.reader().execute("SELECT cursor FROM subscribers WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    # ------------------------------------------------------------------------------------------ dead letters
    def dead_letter(
        self,
        *,
        reason: str,
        event: Event | None = None,
        subscriber: str | None = None,
        origin: str | None = None,
        raw: bytes | None = None,
        attempts: int = 0,
        lazy: bool = False,
    ) -> int | None:
        """Keep an undeliverable event (for ``subscriber``) or bad input (``raw`` from ``origin``). Durable on return,
        and its id returned.

        ``lazy`` (a subscriber's dead letter only): committed with the next flush of cursors, in the same transaction
        and before the subscriber's cursor that passes the event, so a crash loses either both (the event is
        delivered again, fails again and is dead-lettered then) or neither; never the event. Its id is not known
        on return (None). A permanent failure then costs no commit of its own: one fsync per dead letter made a
        third of poison drain at 0.6 of the good rate. Reads in this process (``dead_letters``) flush first."""
        body = encode(event) if event is not None else raw
        row = (
            event.metadata.event_id if event else None,
            event.event_type if event else None,
            subscriber,
            origin or (event.source if event else None),
            reason[:4000],
            attempts,
            time.time(),
            body,
        )

        if subscriber is None and event is None:  # bad input: its own bounded share
            origin_, reason_, created, raw_ = dl.fit_bad_input((row[3], row[4], row[6], body or b""),
                                                               self._bad_input_max)
            return self.call(lambda conn: dl.insert_bad_input(conn, [(origin_, reason_, created, raw_)],
                                                              self._bad_input_max))

        if lazy and subscriber is not None:
            self._pending(lambda: self._pending_dead_letters.append(row))
            return None

        return self.call(lambda conn: dl.insert(conn, row))

    def dead_letters(
        self, limit: int | None = None, subscriber: str | None = None, event_type: str | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[DeadLetter]:
        self.flush_dead_letters()
        return read_dead_letters(self.reader(), limit, subscriber, event_type, ids)

    def flush_dead_letters(self) -> None:
        """Commit the lazy dead letters now, if any wait (a read in this process sees what it was told)."""
        if self._pending_dead_letters:
            self.flush()

    def last_dead_letter_id(self) -> int:
        """The highest dead-letter id ever handed out (ids are never reused, not even after a salvage)."""
        return dl.last_id(self.reader())

    def request_retry(self, ids: Sequence[int] | None = None) -> tuple[list[int], list[str]]:
        """Mark dead letters for redelivery to their subscriber. Returns (marked ids, reasons others were not)."""
        return self.call(lambda conn: dl.request_retry(conn, ids))

    def retries_for(self, subscriber: str, limit: int = 50) -> list[DeadLetter]:
        return dl.retries_for(self.reader(), subscriber, limit)

    def drop_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        """Delete dead letters (all of them when ``ids`` is None). Returns how many."""
        return self.call(lambda conn: dl.drop(conn, ids))

    def redelivered(self, dead_letter_id: int, ok: bool, reason: str | None = None, attempts: int = 0) -> None:
        """The outcome of a requested retry: delete the dead letter, or keep it with the new reason."""
        if ok:
            self.drop_dead_letters([dead_letter_id])
        else:
            self.call(lambda conn: dl.keep_after_retry(conn, dead_letter_id, reason, attempts))

    # ------------------------------------------------------------------------------------------------ state
    def get_state(self, key: str, default: Any = None) -> Any:
        row = self.reader().execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else msgspec.json.decode(row[0])

    def set_state(self, key: str, value: Any) -> None:
        v = _json(value)
        self.call(
            lambda conn: conn.execute(
                "INSERT INTO state(key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, v, time.time()),
            )
        )

    # ------------------------------------------------------------------------------------------------ stats
    def stats(self) -> JournalStats:
        """What ``/metrics``, ``/healthz`` and ``status`` report. One shared connection whatever thread asks: the
        health listener's answers, the sinks' health messages and the CLI all come through here."""
        with self._stats_lock:
            if self._closed:
                raise JournalClosed(f"journal {self.path} is closed")
            if self._stats_conn is None:
                self._stats_conn = self._connect()
            return read_stats(self._stats_conn, self.path, self.max_bytes, self.max_age, self._bad_input_max)

    # ------------------------------------------------------------------------------------------------ closing
    def close(self) -> None:
        """Flush cursors, commit what is queued, and close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(STOP)
        self._writer.join()
        try:
            self._wconn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass
        self._wconn.close()
        os.close(self._lock_fd)
        with self._readers_lock:
            for _thread, c in self._readers:
                _close_quietly(c)
            self._readers.clear()
        with self._stats_lock:
            if self._stats_conn is not None:
                _close_quietly(self._stats_conn)
                self._stats_conn = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        pass


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()
