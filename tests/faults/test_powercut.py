"""Power cuts on ``powercut_fs``: the layer loses what POSIX says may be lost, and the agent's own durability holds.

The layer's own tests come first (a test of the reconciliation proves little unless the file system under it
really loses what was not made durable); then the two defects found by power-cutting the agent: a data directory
the agent created itself was never made durable in its parent, and ``counters show`` (a read command) opened a full
journal whose close ran a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.faults.powercut_fs import PowerCutMount

why_not = PowerCutMount.available()
needs_fuse = pytest.mark.skipif(why_not is not None, reason=f"powercut_fs cannot run here: {why_not}")


@pytest.fixture
def disk(tmp_path):
    m = PowerCutMount(tmp_path / "backing", tmp_path / "disk", tmp_path / "fs-state").start()
    yield m
    m.stop()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut(disk: PowerCutMount) -> dict:
    disk.freeze()
    return disk.remount()


@needs_fuse
def test_the_layer_loses_unsynced_data_and_entries_of_unsynced_directories(disk):
    root = disk.mountpoint
    (root / "synced").write_bytes(b"old")
    _fsync(root / "synced")
    (root / "kept").mkdir()
    _fsync(root)
    with open(root / "synced", "r+b") as f:  # a rewrite not fsynced: the old bytes come back
        f.write(b"NEW-AND-LONGER")
    (root / "dir").mkdir()  # a directory whose parent was not fsynced: gone, with a file fsynced in it
    (root / "dir" / "f").write_bytes(b"x")
    _fsync(root / "dir" / "f")
    _fsync(root / "dir")
    os.rename(root / "synced", root / "renamed")  # a rename whose directory was not fsynced: undone
    rebuilt = _cut(disk)
    assert rebuilt["event"] == "rebuilt"
    assert sorted(os.listdir(root)) == ["kept", "synced"]
    assert (root / "synced").read_bytes() == b"old"
    # and what was made durable survives: data after fsync, entries after the directory's fsync
    (root / "kept" / "g").write_bytes(b"durable")
    _fsync(root / "kept" / "g")
    _fsync(root / "kept")
    _cut(disk)
    assert (root / "kept" / "g").read_bytes() == b"durable"


@needs_fuse
def test_sqlite_wal_on_the_layer_keeps_every_commit_with_full_sync_and_loses_them_with_off(disk):
    """SQLite's own use of the file system: WAL frames fsynced per commit (FULL), the -shm mapped shared by a
    second process, the directory fsynced when SQLite creates the -wal; with synchronous OFF the commits are lost."""
    (disk.mountpoint / "data").mkdir()
    _fsync(disk.mountpoint)
    db = disk.mountpoint / "data" / "j.db"
    c = sqlite3.connect(db, isolation_level=None)
    assert c.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    c.execute("PRAGMA synchronous = FULL")
    c.execute("CREATE TABLE t(x)")
    for i in range(40):
        c.execute("INSERT INTO t VALUES (?)", (i,))
    other = subprocess.run([sys.executable, "-c", "import sqlite3, sys; print(sqlite3.connect("
                            f"'file:{db}?mode=ro', uri=True).execute('SELECT COUNT(*) FROM t').fetchone()[0])"],
                           capture_output=True, text=True, timeout=30)
    assert other.stdout.strip() == "40", other.stderr  # the reader beside it sees the writer's wal-index
    c.execute("PRAGMA synchronous = OFF")
    for i in range(40, 50):
        c.execute("INSERT INTO t VALUES (?)", (i,))
    cut = disk.freeze()
    assert "/data/j.db-wal" in cut["unsynced_bytes"]
    c.close()
    disk.remount()
    c = sqlite3.connect(db)
    assert c.execute("SELECT COUNT(*), MAX(x) FROM t").fetchone() == (40, 39)
    c.close()


def _config(tmp_path: Path, data_dir: Path) -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(textwrap.dedent(f"""
        [agent]
        station = "test-station"
        location = "Line 1"
        purpose = "Test"
        data_dir = "{data_dir}"
        [metrics]
        enabled = false
    """))
    return cfg


@needs_fuse
def test_publish_into_a_new_data_directory_survives_a_power_cut(disk, tmp_path):
    """The data directory (two levels the agent makes itself) must be durable before the first id is printed.
    Before, ``mkdir(parents=True)`` left its entry in the parent unsynced: SQLite fsyncs the journal's directory,
    never that directory's parent, so the cut took the directory and the acknowledged event with it."""
    data = disk.mountpoint / "site" / "data"
    cfg = _config(tmp_path, data)
    out = run_cli("publish", "--type", "custom", "--payload", '{"n": 1}', "-c", str(cfg), check=True)
    event_id = out.stdout.strip()
    _cut(disk)
    assert (data / "journal.db").exists(), f"the data directory was lost: {sorted(os.listdir(disk.mountpoint))}"
    conn = sqlite3.connect(f"file:{data / 'journal.db'}?mode=ro", uri=True)
    try:
        ids = [r[0] for r in conn.execute("SELECT id FROM events")]
    finally:
        conn.close()
    assert ids == [event_id]


def _digest(path: Path) -> dict[str, str | None]:
    return {s: hashlib.sha256(Path(str(path) + s).read_bytes()).hexdigest() if Path(str(path) + s).exists() else None
            for s in ("", "-wal")}


@pytest.mark.parametrize("command", [("counters", "show"), ("dlq", "list")])
def test_read_commands_change_nothing_durable(command, tmp_path):
    """A journal left by an agent that was killed (its last commits only in the -wal): a read command shows them
    and leaves the file and the -wal as they were. Before, ``counters show`` and ``dlq list`` opened a full
    Journal, whose close checkpointed the -wal into the file (and, as the last connection, deleted it)."""
    data = tmp_path / "data"
    cfg = _config(tmp_path, data)
    script = textwrap.dedent(f"""
        import os
        from agent.events.journal import Journal
        j = Journal({str(data / 'journal.db')!r})
        j.set_state("counters:FX-1", {{"running_count": 3, "total_count": 1234}})
        os._exit(0)  # killed: no close, no checkpoint
    """)
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)
    journal = data / "journal.db"
    before = _digest(journal)
    assert before["-wal"] is not None
    out = run_cli(*command, "--json", "-c", str(cfg), check=True)
    if command[0] == "counters":
        assert json.loads(out.stdout) == {"FX-1": {"running_count": 3, "total_count": 1234}}
    assert _digest(journal) == before, "a read command changed the journal"
