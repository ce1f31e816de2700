"""The journal's writer thread: group commit, the bounds, and the housekeeping that runs in its transactions.

Publishers on any number of threads hand their rows to one writer thread (``Request`` on a queue), which drains
everything queued into a single transaction: one fsync per batch instead of one per event. The same transaction
carries the pending cursors, subscriber states and lazy dead letters (``Journal.dead_letter``), in that order
after the batch's rows, so a dead letter is never committed after the cursor that passes its event. Appends that
would pass ``max_bytes`` evict telemetry (then bad input) or are refused with ``JournalFull``; every
``maintenance_interval`` acknowledged events are deleted and old telemetry expired.

``GroupCommitWriter`` is the writer half of ``Journal`` (a base class sharing its state: the queue, the pending
tables and their lock, the bounds); it is not used alone. The module docstring of ``journal.py`` is the overview.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from typing import Any

import msgspec

from . import dead_letters as dl
from .journal_errors import JournalError, JournalFull, StateConflict
from .opening import ROW_OVERHEAD, bump

log = logging.getLogger("agent.events.journal")  # the journal's own log lines, as before the split


class Request:
    """One unit of work for the writer; the submitting thread blocks on ``lock`` until it is done."""

    __slots__ = ("rows", "state", "expect", "fn", "lock", "result", "error", "bad")

    def __init__(self, rows=None, state=None, fn=None, expect=None) -> None:
        self.rows = rows
        self.state = state
        self.expect = expect
        self.fn = fn
        self.lock = threading.Lock()
        self.lock.acquire()
        self.result: Any = None
        self.error: BaseException | None = None
        self.bad: list[tuple] = []  # bad input kept as dead letters with these rows


WAKE = object()  # tells the writer that cursors or states wait to be flushed
STOP = object()  # tells the writer to commit what is queued and end


class GroupCommitWriter:
    """The writer thread's loop and transactions; ``Journal`` sets up every attribute used here."""

    def _writer_loop(self) -> None:
        conn = self._wconn
        last_maintenance = 0.0
        while True:
            with self._pending_lock:
                dirty_since = self._dirty_since
            if dirty_since is None:
                timeout = self.idle_interval
            else:
                timeout = max(0.0, dirty_since + self.cursor_flush_interval - time.monotonic())
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                first = None
            if first is WAKE:
                continue
            batch: list[Request] = []
            stop = first is STOP
            if first is not None and not stop:
                batch.append(first)
                nrows = len(first.rows or ())
                # Linger (bounded) for publishers that were in the previous batch: blocked publishers otherwise
                # settle into two alternating half-size groups, and every fsync carries half what it could.
                want = self._last_batch_requests
                linger_until = time.monotonic() + self.linger
                while nrows < self.batch_max_rows:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        left = linger_until - time.monotonic()
                        if len(batch) >= want or left <= 0:
                            break
                        try:
                            nxt = self._queue.get(timeout=left)
                        except queue.Empty:
                            break
                    if nxt is WAKE:
                        continue
                    if nxt is STOP:
                        stop = True
                        break
                    batch.append(nxt)
                    nrows += len(nxt.rows or ())
            if batch:
                self._last_batch_requests = len(batch)
            now = time.monotonic()
            maintain = stop or first is None or now - last_maintenance >= self.maintenance_interval
            self._run_transaction(conn, batch, maintain)
            if maintain:
                last_maintenance = now
            if stop:
                break

    def _run_transaction(self, conn: sqlite3.Connection, batch: list[Request], maintain: bool) -> None:
        with self._pending_lock:
            cursors, self._pending_cursors = self._pending_cursors, {}
            sub_states, self._pending_sub_state = self._pending_sub_state, {}
            dead, self._pending_dead_letters = self._pending_dead_letters, []
            self._dirty_since = None
        if not batch and not cursors and not sub_states and not dead and not maintain:
            return
        max_seq = None
        for attempt in range(5):
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    max_seq = self._apply(conn, batch, cursors, sub_states, dead)
                    if maintain:
                        self._maintain(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # a failed COMMIT (disk full) has rolled back already: keep its error
                        conn.execute("ROLLBACK")
                    raise
                break
            except sqlite3.OperationalError as e:
                # "database is locked" beyond busy_timeout (another process held a long write): try again.
                if "locked" in str(e) and attempt < 4:
                    for r in batch:
                        r.error = None
                    continue
                self._keep_pending(cursors, sub_states, dead)
                self._fail(batch, JournalError(f"journal {self.path}: write failed: {e}"))
                return
            except Exception as e:  # noqa: BLE001 - the publishers must hear about any failure
                self._keep_pending(cursors, sub_states, dead)
                self._fail(batch, e if isinstance(e, JournalError) else JournalError(f"journal {self.path}: {e!r}"))
                return
        self.commits += 1
        if max_seq is not None:
            with self._appended:
                self._last_seq = max(self._last_seq, max_seq)
                self._appended.notify_all()
        for r in batch:
            r.lock.release()

    def _keep_pending(self, cursors: dict[str, int], sub_states: dict[str, tuple[str, str | None]],
                      dead: list[tuple] = ()) -> None:
        """A failed transaction (disk full) took the pending cursors and states with it: put them back for the
        next one, unless a newer value was marked meanwhile. Lost, they only made ``status`` lag until the next
        ack; a subscriber that acknowledged its last event and went idle would have shown a backlog for good."""
        if not cursors and not sub_states and not dead:
            return
        with self._pending_lock:
            self._pending_dead_letters[:0] = dead  # before any marked meanwhile: their cursors came later
            for name, seq in cursors.items():
                self._pending_cursors[name] = max(seq, self._pending_cursors.get(name, seq))
            for name, state in sub_states.items():
                self._pending_sub_state.setdefault(name, state)
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()

    @staticmethod
    def _fail(batch: list[Request], error: BaseException) -> None:
        for r in batch:
            r.error = r.error or error
            r.lock.release()

    def _apply(self, conn, batch, cursors, sub_states, dead=()) -> int | None:
        now = time.time()
        used = conn.execute("SELECT value FROM meta WHERE key = 'used_bytes'").fetchone()[0]
        rows: list[tuple] = []
        states: list[tuple] = []
        bad: list[tuple] = []
        evicted_bytes = 0
        for r in batch:
            if r.rows is not None:
                if r.expect and not self._state_matches(conn, r):
                    continue
                if r.bad:
                    r.bad = [dl.fit_bad_input(b, self._bad_input_max) for b in r.bad]
                need = sum(len(row[4]) + ROW_OVERHEAD for row in r.rows) + sum(len(b[3]) + ROW_OVERHEAD
                                                                              for b in r.bad)
                if used + need > self.max_bytes:
                    freed = self._evict(conn, used + need - self.max_bytes, "max_bytes")
                    if used - freed + need > self.max_bytes:  # bad input gives way to events
                        freed += dl.evict_bad_input(conn, used - freed + need - self.max_bytes, "max_bytes")
                    used -= freed
                    evicted_bytes += freed
                    if used + need > self.max_bytes:
                        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('refused_last_at', ?)",
                                     (int(now),))
                        types = sorted({row[1] for row in r.rows})
                        r.error = JournalFull(
                            f"journal {self.path} is full ({used / 1e6:.1f} MB of {self.max_bytes / 1e6:.1f} MB used "
                            f"by undelivered events that must not be dropped); refused {len(r.rows)} event(s) of "
                            f"type {', '.join(types)}. Restore the uplinks or raise journal.max_bytes."
                        )
                        for t in types:
                            bump(conn, f"refused:{t}", sum(1 for row in r.rows if row[1] == t))
                        continue
                used += need
                rows.extend(r.rows)
                bad.extend(r.bad)
                if r.state:
                    states.extend((k, _json(v), now) for k, v in r.state.items())
            elif r.fn is not None:
                conn.execute("SAVEPOINT call")
                try:
                    r.result = r.fn(conn)
                    conn.execute("RELEASE call")
                except Exception as e:  # noqa: BLE001 - handed to the caller
                    conn.execute("ROLLBACK TO call")
                    conn.execute("RELEASE call")
                    r.error = e
        max_seq = None
        if rows:
            conn.executemany(
                "INSERT OR IGNORE INTO events(id, type, evictable, recorded_at, body) VALUES (?, ?, ?, ?, ?)", rows
            )
            max_seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()[0]
            conn.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'used_bytes'",
                (sum(len(row[4]) + ROW_OVERHEAD for row in rows),),
            )
        if bad:
            dl.insert_bad_input(conn, bad, self._bad_input_max)
        if states:
            conn.executemany(
                "INSERT INTO state(key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                states,
            )
        if dead:  # before the cursors that pass their events, in the same transaction
            dl.insert_many(conn, dead)
        for name, seq in cursors.items():
            conn.execute(
                "UPDATE subscribers SET cursor = MAX(cursor, ?), updated_at = ? WHERE name = ?", (seq, now, name)
            )
        for name, (st, err) in sub_states.items():
            conn.execute(
                "UPDATE subscribers SET state = ?, last_error = ?, updated_at = ? WHERE name = ?",
                (st, err, now, name),
            )
        return max_seq

    @staticmethod
    def _state_matches(conn: sqlite3.Connection, r: Request) -> bool:
        for key, expected in r.expect.items():
            row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
            current = None if row is None else msgspec.json.decode(row[0])
            if current != expected:
                r.error = StateConflict(f"state {key!r} is {current!r}, expected {expected!r}")
                return False
        return True

    def _evict(self, conn: sqlite3.Connection, need: int, reason: str, older_than: float | None = None) -> int:
        """Delete the oldest evictable events until ``need`` bytes are freed; count them per type and reason."""
        freed = 0
        while freed < need:
            if older_than is None:
                victims = conn.execute(
                    "SELECT seq, type, length(body) FROM events WHERE evictable = 1 ORDER BY seq LIMIT 500"
                ).fetchall()
            else:
                victims = conn.execute(
                    "SELECT seq, type, length(body) FROM events WHERE evictable = 1 AND recorded_at < ? "
                    "ORDER BY seq LIMIT 500",
                    (older_than,),
                ).fetchall()
            if not victims:
                break
            take, counts = [], {}
            for seq, t, n in victims:
                take.append((seq,))
                counts[t] = counts.get(t, 0) + 1
                freed += n + ROW_OVERHEAD
                if freed >= need:
                    break
            conn.executemany("DELETE FROM events WHERE seq = ?", take)
            for t, n in counts.items():
                bump(conn, f"evicted:{reason}:{t}", n)
        if freed:
            conn.execute("UPDATE meta SET value = MAX(0, value - ?) WHERE key = 'used_bytes'", (freed,))
        return freed

    def _maintain(self, conn: sqlite3.Connection) -> None:
        """Delete what every durable subscriber acknowledged, expire old telemetry, give back free pages."""
        row = conn.execute("SELECT MIN(cursor), COUNT(*) FROM subscribers").fetchone()
        if row[1]:
            horizon = row[0]
            done = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(body)), 0), MAX(seq) FROM "
                "(SELECT seq, body FROM events WHERE seq <= ? ORDER BY seq LIMIT 5000)",
                (horizon,),
            ).fetchone()
            if done[0]:
                conn.execute("DELETE FROM events WHERE seq <= ?", (done[2],))
                conn.execute(
                    "UPDATE meta SET value = MAX(0, value - ?) WHERE key = 'used_bytes'",
                    (done[1] + done[0] * ROW_OVERHEAD,),
                )
        if self.max_age > 0:
            self._evict(conn, 1 << 62, "max_age", older_than=time.time() - self.max_age)
        free, total = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("freelist_count", "page_count"))
        if free > 256 and free > total // 4:
            conn.execute("PRAGMA incremental_vacuum(256)").fetchall()


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()
