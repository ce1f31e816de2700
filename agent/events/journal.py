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
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

from .model import Event, encode

log = logging.getLogger(__name__)

#: Estimated bytes a row costs beyond its body (row header, id index entry, page slack).
ROW_OVERHEAD = 120
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    evictable   INTEGER NOT NULL DEFAULT 0,
    recorded_at REAL    NOT NULL,
    body        BLOB    NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_id ON events(id);
CREATE INDEX IF NOT EXISTS events_evictable ON events(seq) WHERE evictable = 1;
CREATE TABLE IF NOT EXISTS subscribers (
    name          TEXT PRIMARY KEY,
    cursor        INTEGER NOT NULL,
    state         TEXT,
    last_error    TEXT,
    registered_at REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT,
    event_type      TEXT,
    subscriber      TEXT,
    origin          TEXT,
    reason          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    retry_requested INTEGER NOT NULL DEFAULT 0,
    body            BLOB
);
CREATE INDEX IF NOT EXISTS dead_letters_retry ON dead_letters(subscriber) WHERE retry_requested = 1;
CREATE INDEX IF NOT EXISTS dead_letters_bad_input ON dead_letters(id) WHERE subscriber IS NULL;
CREATE TABLE IF NOT EXISTS state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class JournalError(Exception):
    """The journal could not do what was asked; the message says what and why."""


class JournalFull(JournalError):
    """An append was refused because the journal is at ``max_bytes`` and nothing evictable is left."""


class StateConflict(JournalError):
    """``append(..., expect=...)`` found a state value other than expected (someone else changed it first)."""


class JournalClosed(JournalError):
    """The journal was closed (or its writer died) before the request completed."""


@dataclass(frozen=True)
class StoredEvent:
    """A row of the log as a subscriber reads it: offset, type and the encoded event."""

    seq: int
    type: str
    body: bytes
    recorded_at: float


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


class _Request:
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


_WAKE = object()
_STOP = object()


@dataclass
class JournalStats:
    path: str
    events: int
    first_seq: int | None
    last_seq: int | None
    used_bytes: int
    max_bytes: int
    file_bytes: int
    dead_letters: int
    subscribers: list[dict[str, Any]] = field(default_factory=list)
    bad_input_bytes: int = 0  # what bad input (dead letters without a subscriber) takes of used_bytes
    bad_input_max_bytes: int = 0  # its share (0: not known to the reader)
    refused_last_at: float | None = None  # when an append was last refused (journal full), any process
    evicted: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    corrupt_files: list[str] = field(default_factory=list)
    salvage: dict[str, Any] | None = None  # what was read out of the last corrupt file (``salvage.py``)
    stale_results: int = 0
    sources: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)


class Journal:
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
        self.corrupt_file: Path | None = None
        self._progress = progress  # told how a long salvage at open is going (the agent extends systemd's timeout)

        make_dirs(self.path.parent)  # durable before the first event is acknowledged in it
        self._lock_fd = self._lock_exclusive_if_alone()
        try:
            self._wconn = self._open_checked()
        except BaseException:
            os.close(self._lock_fd)
            raise
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH)  # others (the CLI beside the agent) may open it now
        self._last_seq = self._wconn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        self._writer = threading.Thread(target=self._writer_loop, name="journal-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------------------------------------ opening
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
        conn.execute("PRAGMA cache_size = -2048")  # 2 MB: the Pi's RAM matters more than re-reading a page
        return conn

    def _lock_exclusive_if_alone(self) -> int:
        """Every process holds ``<journal>.lock`` shared while it has the journal open; opening holds it exclusive
        if it can. Only a process that is alone may salvage a corrupt file or finish a salvage: swapping the file
        under a running agent would leave it writing into the copy kept aside."""
        lock = Path(str(self.path) + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o664)
        except PermissionError:  # created by the agent's user; another user may still lock it for reading
            fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._alone = True
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while another process is opening (or salvaging)
            self._alone = False
        return fd

    def _quick_check(self) -> tuple[sqlite3.Connection | None, str | None]:
        """The open connection and None, or None and what is wrong with the file."""
        conn = None
        try:
            conn = self._connect()
            rows = conn.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                problem = "; ".join(str(r[0]) for r in rows[:5])
            else:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return conn, None
        except sqlite3.DatabaseError as e:
            problem = str(e)
        if conn is not None:
            conn.close()
        return None, " ".join(problem.split())  # quick_check's answer spans lines: one log line

    def _open_checked(self) -> sqlite3.Connection:
        """Open and ``quick_check``. A corrupt file is salvaged into a new one (``salvage.py``): every row that can
        still be read keeps its key, so cursors, counters and undelivered events carry on; the corrupt file is
        moved aside and kept, never deleted."""
        if self._alone:
            self._finish_salvage_swap()
        if self.path.exists() and self.path.stat().st_size > 0:
            conn, problem = self._quick_check()
            if problem is None:
                self._init_schema(conn)
                return conn
            if not self._alone:
                raise JournalError(
                    f"journal {self.path} is corrupt ({problem}) and another process has it open (the agent?); "
                    "it is salvaged when it is opened alone: stop the agent and start it again")
            self._salvage(problem)
            conn, problem = self._quick_check()
            if problem is not None:
                raise JournalError(f"journal {self.path}: the salvaged copy fails its check too ({problem})")
            self._init_schema(conn)
            return conn
        conn = self._connect()
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file: free pages go back
        self._init_schema(conn)
        return conn

    def _aside_name(self) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside, n = self.path.with_name(f"{self.path.name}.corrupt-{stamp}"), 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        return aside

    def _salvage(self, problem: str) -> None:
        """Copy what can be read into ``<journal>.salvage``, mark it complete by renaming, then swap it in."""
        from .salvage import salvage

        work = self.path.with_name(self.path.name + ".salvage")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(work) + suffix).unlink(missing_ok=True)
        identity = _identity(self.path)
        aside = self._aside_name()
        log.error("journal %s failed its integrity check (%s); salvaging what can be read", self.path, problem)

        def progress(rows: int) -> None:
            log.info("salvaging %s: %d rows copied so far", self.path, rows)
            if self._progress is not None:
                self._progress(f"salvaging the corrupt journal: {rows} rows copied")

        conn = sqlite3.connect(work, isolation_level=None)
        try:
            conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self._init_schema(conn)
            report = salvage(self.path, conn, progress=progress)
            used = conn.execute(
                "SELECT COALESCE((SELECT SUM(LENGTH(body)) + COUNT(*) * ? FROM events), 0)"
                " + COALESCE((SELECT SUM(COALESCE(LENGTH(body), 0)) + COUNT(*) * ? FROM dead_letters), 0)",
                (ROW_OVERHEAD, ROW_OVERHEAD),
            ).fetchone()[0]
            record = {**report.to_dict(), "problem": problem, "moved_to": str(aside), "identity": identity}
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE meta SET value = ? WHERE key = 'used_bytes'", (int(used),))
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('bad_input_bytes', (" + _BAD_INPUT_SIZE
                         + "))", (ROW_OVERHEAD,))
            conn.execute("INSERT OR REPLACE INTO state(key, value, updated_at) VALUES (?, ?, ?)",
                         ("journal.corrupt_file", _json(str(aside)), now))
            conn.execute("INSERT OR REPLACE INTO state(key, value, updated_at) VALUES (?, ?, ?)",
                         ("journal.salvage", _json(record), now))
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as e:
            conn.close()
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(work) + suffix).unlink(missing_ok=True)
            if isinstance(e, (sqlite3.OperationalError, OSError)):
                # no room or an I/O error (a full file system shows as either): starting empty would strand the
                # undelivered events in the kept file for good; refuse, and salvage at the next start
                raise JournalError(
                    f"journal {self.path} is corrupt and could not be salvaged now ({e}); free space on its file "
                    "system if it is full; it is salvaged at the next start") from None
            log.critical("JOURNAL CORRUPT: salvaging %s failed (%r, a defect of the salvage); it is moved aside whole "
                         "and a new journal "
                         "started. Its events were NOT forwarded: recover them with the sqlite3 tool (.recover).",
                         self.path, e)
            self._move_aside(aside)
            self.corrupt_file = aside
            return
        conn.close()
        os.replace(work, self.path.with_name(self.path.name + ".salvaged"))  # complete: the next start swaps it in
        _fsync_dir(self.path.parent)
        (log.critical if not report.complete else log.error)(
            "JOURNAL CORRUPT: %s failed its integrity check (%s). %s. The corrupt file is kept as %s.%s",
            self.path, problem, report.summary(), aside,
            "" if report.complete else " Events in unreadable ranges were NOT forwarded: inspect the kept file "
            "with the sqlite3 tool (.recover) before deleting it.",
        )
        self._finish_salvage_swap(aside)

    def _move_aside(self, aside: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        _fsync_dir(self.path.parent)

    def _finish_salvage_swap(self, aside: Path | None = None) -> None:
        """Move the corrupt file aside and the completed salvage into its place. At start (``aside`` None) this
        finishes a swap a power cut interrupted, but only for the file that salvage was made from: a copy left
        from another file is set aside, never swapped over a journal that has moved on."""
        done = self.path.with_name(self.path.name + ".salvaged")
        if not done.exists():
            return
        if aside is None:
            c = sqlite3.connect(done)
            try:
                record = msgspec.json.decode(
                    c.execute("SELECT value FROM state WHERE key = 'journal.salvage'").fetchone()[0])
            except (sqlite3.Error, TypeError, msgspec.DecodeError):
                record = {}
            finally:
                c.close()
            ident = record.get("identity") or {}
            if self.path.exists():
                if ident != _identity(self.path):
                    stale = done.with_name(done.name + "-stale-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
                    os.replace(done, stale)
                    log.warning("a salvaged journal copy %s is not from %s as it is now; kept as %s, not used",
                                done, self.path, stale)
                    return
            aside = Path(record.get("moved_to") or self._aside_name())
            log.error("JOURNAL CORRUPT: finishing the salvage of %s interrupted at an earlier start: %s",
                      self.path, record.get("summary", "?"))
        self._move_aside(aside)
        os.replace(done, self.path)
        _fsync_dir(self.path.parent)
        self.corrupt_file = aside

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise JournalError(f"{self.path}: could not switch to WAL mode (got {mode!r})")
        conn.execute("PRAGMA journal_size_limit = 8388608")
        conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('used_bytes', 0)")
        # a journal from before the bad-input share: its figure from the table, once
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('bad_input_bytes', (" + _BAD_INPUT_SIZE + "))",
                     (ROW_OVERHEAD,))

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
        req = _Request(rows=rows, state=state, expect=expect)
        req.bad = [(origin, reason[:4000], now, raw) for origin, raw, reason in bad_input]
        self._submit(req)

    def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` inside the writer's next transaction (atomic with it) and return its result."""
        return self._submit(_Request(fn=fn))

    def _submit(self, req: _Request) -> Any:
        if self._closed:
            raise JournalClosed(f"journal {self.path} is closed")
        self._queue.put(req)
        while not req.lock.acquire(timeout=1.0):
            if not self._writer.is_alive():
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
            self._queue.put(_WAKE)

    def flush(self) -> None:
        """Commit pending cursors and subscriber states now."""
        self.call(lambda conn: None)

    # ------------------------------------------------------------------------------------------------ writer
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
            if first is _WAKE:
                continue
            batch: list[_Request] = []
            stop = first is _STOP
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
                    if nxt is _WAKE:
                        continue
                    if nxt is _STOP:
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

    def _run_transaction(self, conn: sqlite3.Connection, batch: list[_Request], maintain: bool) -> None:
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
    def _fail(batch: list[_Request], error: BaseException) -> None:
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
                    r.bad = [self._fit_bad_input(b) for b in r.bad]
                need = sum(len(row[4]) + ROW_OVERHEAD for row in r.rows) + sum(len(b[3]) + ROW_OVERHEAD
                                                                              for b in r.bad)
                if used + need > self.max_bytes:
                    freed = self._evict(conn, used + need - self.max_bytes, "max_bytes")
                    if used - freed + need > self.max_bytes:  # bad input gives way to events
                        freed += self._evict_bad_input(conn, used - freed + need - self.max_bytes, "max_bytes")
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
                            _bump(conn, f"refused:{t}", sum(1 for row in r.rows if row[1] == t))
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
            self._insert_bad_input(conn, bad)
        if states:
            conn.executemany(
                "INSERT INTO state(key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                states,
            )
        if dead:  # before the cursors that pass their events, in the same transaction
            conn.executemany(
                "INSERT INTO dead_letters(event_id, event_type, subscriber, origin, reason, attempts, created_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", dead)
            conn.execute("UPDATE meta SET value = value + ? WHERE key = 'used_bytes'",
                         (sum(len(row[7] or b"") + ROW_OVERHEAD for row in dead),))
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
    def _state_matches(conn: sqlite3.Connection, r: _Request) -> bool:
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
                _bump(conn, f"evicted:{reason}:{t}", n)
        if freed:
            conn.execute("UPDATE meta SET value = MAX(0, value - ?) WHERE key = 'used_bytes'", (freed,))
        return freed

    def _fit_bad_input(self, bad: tuple) -> tuple:
        """A single piece of bad input larger than the whole share is kept cut to it (the reason says so), so the
        share holds and the operator still sees how it began."""
        origin, reason, created, raw = bad
        room = self._bad_input_max - ROW_OVERHEAD - 200
        if len(raw) + ROW_OVERHEAD <= self._bad_input_max:
            return bad
        room = max(0, room)
        note = f" [kept the first {room} of {len(raw)} bytes: journal.bad_input_max_bytes]"
        return origin, (reason[:4000 - len(note)] + note), created, raw[:room]

    def _insert_bad_input(self, conn: sqlite3.Connection, bad: list[tuple]) -> int:
        """Insert (origin, reason, created_at, raw) rows, then hold bad input to its share. Returns the last id."""
        cur = None
        for b in bad:
            cur = conn.execute(
                "INSERT INTO dead_letters(origin, reason, attempts, created_at, body) VALUES (?, ?, 0, ?, ?)", b)
        size = sum(len(b[3]) + ROW_OVERHEAD for b in bad)
        conn.execute("UPDATE meta SET value = value + ? WHERE key = 'used_bytes'", (size,))
        conn.execute("UPDATE meta SET value = value + ? WHERE key = 'bad_input_bytes'", (size,))
        held = conn.execute("SELECT value FROM meta WHERE key = 'bad_input_bytes'").fetchone()[0]
        if held > self._bad_input_max:
            self._evict_bad_input(conn, held - self._bad_input_max, "bad_input_max_bytes")
        return cur.lastrowid if cur is not None else 0

    def _evict_bad_input(self, conn: sqlite3.Connection, need: int, reason: str) -> int:
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
            _bump(conn, f"evicted:bad_input:{origin}", n)
        if freed:
            conn.execute("UPDATE meta SET value = MAX(0, value - ?) WHERE key = 'used_bytes'", (freed,))
            conn.execute("UPDATE meta SET value = MAX(0, value - ?) WHERE key = 'bad_input_bytes'", (freed,))
            log.warning("journal: %d bad input dead letter(s) deleted, oldest first, to make room (%s): %s",
                        sum(counts.values()), reason, ", ".join(f"{o}={n}" for o, n in sorted(counts.items())))
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
            origin_, reason_, created, raw_ = self._fit_bad_input((row[3], row[4], row[6], body or b""))
            return self.call(lambda conn: self._insert_bad_input(conn, [(origin_, reason_, created, raw_)]))

        if lazy and subscriber is not None:
            self._pending(lambda: self._pending_dead_letters.append(row))
            return None

        def fn(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO dead_letters(event_id, event_type, subscriber, origin, reason, attempts, created_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            conn.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'used_bytes'", (len(body or b"") + ROW_OVERHEAD,)
            )
            return cur.lastrowid

        return self.call(fn)

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
        row = self.reader().execute("SELECT seq FROM sqlite_sequence WHERE name = 'dead_letters'").fetchone()
        return int(row[0]) if row else 0

    def request_retry(self, ids: Sequence[int] | None = None) -> tuple[list[int], list[str]]:
        """Mark dead letters for redelivery to their subscriber. Returns (marked ids, reasons others were not)."""

        def fn(conn: sqlite3.Connection):
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

        return self.call(fn)

    def retries_for(self, subscriber: str, limit: int = 50) -> list[DeadLetter]:
        rows = self.reader().execute(
            "SELECT * FROM dead_letters WHERE subscriber = ? AND retry_requested = 1 ORDER BY id LIMIT ?",
            (subscriber, limit),
        ).fetchall()
        return [DeadLetter(*r[:8], bool(r[8]), r[9]) for r in rows]

    def drop_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        """Delete dead letters (all of them when ``ids`` is None). Returns how many."""

        def fn(conn: sqlite3.Connection) -> int:
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

        return self.call(fn)

    def redelivered(self, dead_letter_id: int, ok: bool, reason: str | None = None, attempts: int = 0) -> None:
        """The outcome of a requested retry: delete the dead letter, or keep it with the new reason."""
        if ok:
            self.drop_dead_letters([dead_letter_id])
        else:
            self.call(
                lambda conn: conn.execute(
                    "UPDATE dead_letters SET retry_requested = 0, reason = ?, attempts = attempts + ? WHERE id = ?",
                    ((reason or "")[:4000], attempts, dead_letter_id),
                )
            )

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
        self._queue.put(_STOP)
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


def _bump(conn: sqlite3.Connection, key: str, n: int) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
        (key, n),
    )


def _identity(path: Path) -> dict[str, int]:
    """What tells one state of a file from another (a salvaged copy records its source's)."""
    st = path.stat()
    return {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


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


def open_readonly(path: str | os.PathLike[str], timeout: float = 10) -> sqlite3.Connection:
    """A connection that cannot change what is durable, for the commands that only read (``status``, ``events``,
    ``dlq list``, ``counters show``): it creates no file, writes no schema, salvages nothing and, closing, runs no
    checkpoint. A full ``Journal`` does all of these; a "show" must not move the file under the agent or a cut."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)


def make_dirs(path: str | os.PathLike[str]) -> None:
    """``mkdir -p`` whose directories survive a power cut: a directory exists durably only once the directory
    holding it was fsynced, so the parent of every directory made here is, and ``path``'s own parent always (it
    may have been made by an earlier run that died before). SQLite fsyncs the journal's directory when it creates
    its ``-wal``, never that directory's parent: without this a cut after the first publish into a new data
    directory lost the directory and every event in it (found on ``tests/faults/powercut_fs.py``)."""
    path = Path(path)
    missing, p = [], path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    for parent in dict.fromkeys([d.parent for d in reversed(missing)] + [path.parent, path]):
        _fsync_dir(parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: what the bad input in ``dead_letters`` takes, as ``meta.bad_input_bytes`` counts it (one parameter: ROW_OVERHEAD)
_BAD_INPUT_SIZE = ("SELECT COALESCE(SUM(COALESCE(length(body), 0)), 0) + COUNT(*) * ? FROM dead_letters "
                   "WHERE subscriber IS NULL")


def read_stats(conn: sqlite3.Connection, path: Path, max_bytes: int, max_age: float = 0.0,
               bad_input_max_bytes: int = 0) -> JournalStats:
    """Everything ``status`` and ``/metrics`` report, from one read connection (works while the agent runs)."""
    now = time.time()
    n, first, last = conn.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM events").fetchone()
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    file_bytes = sum(
        os.path.getsize(str(path) + s) for s in ("", "-wal") if os.path.exists(str(path) + s)
    )
    dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    subs = []
    for name, cursor, state, last_error, updated_at in conn.execute(
        "SELECT name, cursor, state, last_error, updated_at FROM subscribers ORDER BY name"
    ).fetchall():
        backlog = conn.execute("SELECT COUNT(*) FROM events WHERE seq > ?", (cursor,)).fetchone()[0]
        oldest = conn.execute(
            "SELECT recorded_at FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (cursor,)
        ).fetchone()
        dl = conn.execute("SELECT COUNT(*) FROM dead_letters WHERE subscriber = ?", (name,)).fetchone()[0]
        subs.append(
            {
                "name": name,
                "cursor": cursor,
                "backlog": backlog,
                "oldest_unacked_age_s": round(now - oldest[0], 3) if oldest else 0.0,
                "state": state,
                "last_error": last_error,
                "dead_letters": dl,
                "updated_at": datetime.fromtimestamp(updated_at, timezone.utc).isoformat(),
            }
        )
    stale = 0
    if max_age > 0:
        stale = conn.execute(
            "SELECT COUNT(*) FROM events WHERE evictable = 0 AND recorded_at < ?", (now - max_age,)
        ).fetchone()[0]
    corrupt = [r[0] for r in conn.execute("SELECT value FROM state WHERE key = 'journal.corrupt_file'")]
    salvaged = conn.execute("SELECT value FROM state WHERE key = 'journal.salvage'").fetchone()
    sources = {k.split(":", 1)[1]: msgspec.json.decode(v)
               for k, v in conn.execute("SELECT key, value FROM state WHERE key LIKE 'source:%'")}
    counters = {k.split(":", 1)[1]: msgspec.json.decode(v)
                for k, v in conn.execute("SELECT key, value FROM state WHERE key LIKE 'counters:%'")}
    return JournalStats(
        path=str(path),
        events=n,
        first_seq=first,
        last_seq=last,
        used_bytes=int(meta.get("used_bytes", 0)),
        max_bytes=max_bytes,
        file_bytes=file_bytes,
        dead_letters=dead,
        subscribers=subs,
        bad_input_bytes=int(meta.get("bad_input_bytes", 0)),
        bad_input_max_bytes=bad_input_max_bytes,
        refused_last_at=float(meta["refused_last_at"]) if "refused_last_at" in meta else None,
        evicted={k.split(":", 1)[1]: v for k, v in meta.items() if k.startswith("evicted:")},
        refused={k.split(":", 1)[1]: v for k, v in meta.items() if k.startswith("refused:")},
        corrupt_files=[msgspec.json.decode(c) for c in corrupt],
        salvage=msgspec.json.decode(salvaged[0]) if salvaged else None,
        stale_results=stale,
        sources=sources,
        counters=counters,
    )
