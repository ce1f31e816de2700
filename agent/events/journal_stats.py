"""What ``status``, ``/metrics``, ``/healthz`` and the status page report of a journal, read through any connection
(a ``Journal``'s own, or a read-only one from another process while the agent runs).

The journal's figures (events, bytes, the bound, evictions, refusals, subscribers and their backlogs, a salvage)
are its own. What sources keep in the ``state`` table is theirs: ``read_state`` returns the rows under one key
prefix as plain data, and the two groups ``status`` shows are named here once, by the prefixes their owners write
(``sources/base.py`` keeps a source's status under ``source:<name>``; ``events/counters.py`` a fixture's counter
under ``counters:<asset>``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

#: the state keys of a source's own status (``sources/base.py``) and of a fixture's counter (``counters.counter_key``)
SOURCE_STATUS_PREFIX = "source:"
COUNTERS_PREFIX = "counters:"


@dataclass
class JournalStats:
    """One reading of the journal's figures; ``sources`` and ``counters`` are the two ``read_state`` groups."""

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


def open_readonly(path: str | os.PathLike[str], timeout: float = 10) -> sqlite3.Connection:
    """A connection that cannot change what is durable, for the commands that only read (``status``, ``events``,
    ``dlq list``, ``counters show``): it creates no file, writes no schema, salvages nothing and, closing, runs no
    checkpoint. A full ``Journal`` does all of these; a "show" must not move the file under the agent or a cut."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)


def read_state(conn: sqlite3.Connection, prefix: str) -> dict[str, Any]:
    """The ``state`` rows whose key begins with ``prefix``, by the rest of the key, their values decoded (the
    ``counters show`` command and the two groups of ``read_stats``). Plain data: what it means is the caller's."""
    return {k[len(prefix):]: msgspec.json.decode(v)
            for k, v in conn.execute("SELECT key, value FROM state WHERE key LIKE ? ORDER BY key", (prefix + "%",))}


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
    sources = read_state(conn, SOURCE_STATUS_PREFIX)
    counters = read_state(conn, COUNTERS_PREFIX)
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
