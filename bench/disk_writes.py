"""Bytes written to storage per event: SD-card wear, the thing that kills Pis in the field.

Counted from ``write_bytes`` in ``/proc/self/io`` (what this process sent to the block layer, WAL checkpoints
included) around each run, on the file system of the benchmark's temp dir (it must be a real disk: tmpfs counts
nothing). The raw limit is a bare SQLite connection with the journal's schema and pragmas committing the same
events one transaction each, as a slow fixture produces them; the agent runs the same way through ``publish``,
then once more with a durable subscriber moving its cursor past every event (an uplink), which costs writes too.
Events that arrive together (a serial burst, an MQTT batch) share one commit: the same in batches of 50.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from common import test_results


def written() -> int:
    for line in open("/proc/self/io"):
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def _raw(path: Path, events: list, batch: int = 1) -> int:
    from agent.events.journal import SCHEMA
    from agent.events.model import encode

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(SCHEMA)
    rows = [(e.id, e.event_type, 0, time.time(), encode(e)) for e in events]
    before = written()
    for k in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO events(id, type, evictable, recorded_at, body) VALUES (?, ?, ?, ?, ?)",
                         rows[k:k + batch])
        conn.execute("COMMIT")
    conn.close()
    return written() - before


def _agent(path: Path, events: list, subscriber: bool, batch: int = 1) -> int:
    from agent.events import EventBus, Journal

    j = Journal(path, max_bytes=1 << 34)
    bus = EventBus(j)
    sub = bus.register_handler(lambda e: None, name="uplink") if subscriber else None
    bus.start()
    before = written()
    for k in range(0, len(events), batch):
        if batch == 1:
            bus.publish(events[k])
        else:
            bus.publish_many(events[k:k + batch])
    if sub is not None:
        while sub.cursor < j.last_seq:
            time.sleep(0.002)
    bus.stop()
    j.close()
    return written() - before


def bench_disk_writes(n: int) -> dict:
    """In a temp dir beside this file: the system temp dir may be tmpfs, which writes nothing to count."""
    tmp = Path(tempfile.mkdtemp(prefix=".wear-", dir=Path(__file__).resolve().parent))
    try:
        return _measure(tmp, n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(tmp: Path, n: int) -> dict:
    raw = _raw(tmp / "wear-raw.db", test_results(n))
    alone = _agent(tmp / "wear-agent.db", test_results(n), subscriber=False)
    uplink = _agent(tmp / "wear-uplink.db", test_results(n), subscriber=True)
    from agent.events.model import encode

    size = len(encode(test_results(1)[0]))
    raw_50 = _raw(tmp / "wear-raw-50.db", test_results(n), batch=50)
    agent_50 = _agent(tmp / "wear-agent-50.db", test_results(n), subscriber=True, batch=50)
    return {"events": n, "event_bytes": size,
            "raw_sqlite_bytes_per_event": round(raw / n), "agent_bytes_per_event": round(alone / n),
            "agent_with_uplink_bytes_per_event": round(uplink / n),
            "ratio_to_raw": round(alone / raw, 2), "ratio_with_uplink_to_raw": round(uplink / raw, 2),
            "batches_of_50": {"raw_sqlite_bytes_per_event": round(raw_50 / n),
                              "agent_with_uplink_bytes_per_event": round(agent_50 / n),
                              "ratio_to_raw": round(agent_50 / raw_50, 2)},
            "target": "ratio_to_raw <= 1.5"}


if __name__ == "__main__":
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print(json.dumps(bench_disk_writes(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
