"""Opening a journal file: the lock that tells whether this process is alone, the integrity check, the schema, and
the salvage of a corrupt file and its swap (the rows are read out by ``salvage.py``).

``JournalFile.open`` returns the writer's connection to a sound file with the schema in place, and leaves the
process holding ``<journal>.lock`` shared. A corrupt file is salvaged into ``<journal>.salvage``, renamed
``<journal>.salvaged`` once complete, and only then swapped in, the corrupt file moved aside and kept: a power cut
at any point either repeats the salvage or finishes the swap at the next open. Only a process that holds the lock
exclusive (alone) salvages or swaps.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import msgspec

from .journal_errors import JournalError

log = logging.getLogger("agent.events.journal")  # the journal's own log lines, as before the split

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


#: what the bad input in ``dead_letters`` takes, as ``meta.bad_input_bytes`` counts it (one parameter: ROW_OVERHEAD)
BAD_INPUT_SIZE = ("SELECT COALESCE(SUM(COALESCE(length(body), 0)), 0) + COUNT(*) * ? FROM dead_letters "
                  "WHERE subscriber IS NULL")


class JournalFile:
    """One journal file's opening: ``open()`` once, then ``connect()`` for every further connection."""

    def __init__(self, path: Path, *, sync: str, busy_timeout_ms: int,
                 progress: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.sync = sync
        self.busy_timeout_ms = busy_timeout_ms
        self._progress = progress  # told how a long salvage at open is going (the agent extends systemd's timeout)
        self._alone = False
        self.corrupt_file: Path | None = None

    def open(self) -> tuple[int, sqlite3.Connection]:
        """The lock's descriptor (held shared from now on: others may open the file) and the writer's connection."""
        make_dirs(self.path.parent)  # durable before the first event is acknowledged in it
        lock_fd = self._lock_exclusive_if_alone()
        try:
            conn = self._open_checked()
        except BaseException:
            os.close(lock_fd)
            raise
        fcntl.flock(lock_fd, fcntl.LOCK_SH)  # others (the CLI beside the agent) may open it now
        return lock_fd, conn

    def connect(self) -> sqlite3.Connection:
        """A connection with the journal's pragmas (the writer's, each reader's, the stats')."""
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
            conn = self.connect()
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
        conn = self.connect()
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
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('bad_input_bytes', (" + BAD_INPUT_SIZE
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
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('bad_input_bytes', (" + BAD_INPUT_SIZE + "))",
                     (ROW_OVERHEAD,))


def _json(value) -> str:
    return msgspec.json.encode(value).decode()


def _identity(path: Path) -> dict[str, int]:
    """What tells one state of a file from another (a salvaged copy records its source's)."""
    st = path.stat()
    return {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


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


def bump(conn: sqlite3.Connection, key: str, n: int) -> None:
    """Add ``n`` to the ``meta`` counter ``key`` (evicted and refused counts), creating it at ``n``."""
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
        (key, n),
    )
