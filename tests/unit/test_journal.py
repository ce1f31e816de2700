import os
import threading
import time
from datetime import datetime, timezone

import pytest

from agent.events.journal import Journal, JournalFull
from agent.events.model import Event, decode


def telemetry(i=0, pad=0):
    return Event.create("asset.telemetry", {"asset_id": "A", "timestamp": datetime.now(timezone.utc),
                                            "readings": {"t": float(i)}, "custom_data": {"pad": "x" * pad}})


def result(i=0, pad=0):
    return Event.create("test.result", {"unit_id": f"SN{i}", "result": "pass",
                                        "start_time": "2026-01-01T00:00:00Z", "custom_data": {"pad": "x" * pad}})


def all_ids(j: Journal) -> list[str]:
    return [r[0] for r in j.reader().execute("SELECT id FROM events ORDER BY seq")]


def test_group_commit_from_eight_threads(journal):
    per_thread, threads = 300, 8
    published: dict[int, list[str]] = {}
    start = threading.Barrier(threads)

    def work(t):
        start.wait()
        ids = []
        for i in range(per_thread):
            ev = Event.create("custom", {"t": t, "i": i})
            journal.append([ev])
            ids.append(ev.id)
        published[t] = ids

    commits_before = journal.commits
    ws = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    stored = all_ids(journal)
    total = per_thread * threads
    assert len(stored) == total and len(set(stored)) == total
    assert set(stored) == {i for ids in published.values() for i in ids}
    # each publisher's events keep their order in the log
    pos = {i: n for n, i in enumerate(stored)}
    for ids in published.values():
        assert [pos[i] for i in ids] == sorted(pos[i] for i in ids)
    # group commit: far fewer transactions than events
    commits = journal.commits - commits_before
    assert commits < total / 2, f"{commits} commits for {total} events"


def test_append_is_durable_across_reopen_with_state(tmp_path):
    j = Journal(tmp_path / "j.db")
    evs = [result(i) for i in range(3)]
    j.append(evs, state={"counters:A": {"running_count": 3, "total_count": 10}})
    j.close()
    j2 = Journal(tmp_path / "j.db")
    try:
        rows = j2.read_after(0, 10)
        assert [decode(r.body) for r in rows] == evs
        assert j2.get_state("counters:A") == {"running_count": 3, "total_count": 10}
        assert j2.get_state("missing", 42) == 42
    finally:
        j2.close()


def test_duplicate_event_id_is_stored_once(journal):
    ev = result(1)
    journal.append([ev])
    journal.append([ev])
    assert all_ids(journal) == [ev.id]


def test_full_journal_evicts_telemetry_first_then_refuses_results(tmp_path):
    j = Journal(tmp_path / "j.db", max_bytes=64 * 1024)
    try:
        for i in range(60):  # ~1.1 KB each: fills the journal with telemetry
            j.append([telemetry(i, pad=900)])
        st = j.stats()
        assert st.used_bytes <= 64 * 1024
        assert st.evicted.get("max_bytes:asset.telemetry", 0) > 0, st.evicted
        # results push the remaining telemetry out
        accepted = []
        with pytest.raises(JournalFull) as err:
            for i in range(200):
                ev = result(i, pad=900)
                j.append([ev])
                accepted.append(ev.id)
        assert "refused 1 event(s) of type test.result" in str(err.value)
        assert "journal.max_bytes" in str(err.value)
        types = [r[0] for r in j.reader().execute("SELECT type FROM events")]
        assert set(types) == {"test.result"}  # every telemetry event gave way
        assert all_ids(j) == accepted  # no accepted result was dropped
        # telemetry can't push results out either: it is refused too, and counted
        with pytest.raises(JournalFull):
            j.append([telemetry(999, pad=900)])
        st = j.stats()
        assert st.refused == {"test.result": 1, "asset.telemetry": 1}
        assert all_ids(j) == accepted
    finally:
        j.close()


def test_refused_batch_stores_nothing_of_itself(tmp_path):
    j = Journal(tmp_path / "j.db", max_bytes=64 * 1024)
    try:
        with pytest.raises(JournalFull):
            j.append([result(i, pad=2000) for i in range(40)])
        assert all_ids(j) == []
    finally:
        j.close()


def test_max_age_evicts_telemetry_and_keeps_stale_results(tmp_path):
    j = Journal(tmp_path / "j.db", max_age=0.3, maintenance_interval=0.05)
    try:
        j.append([telemetry(1), result(1)])
        time.sleep(0.4)
        j.append([result(2)])  # a write after the interval triggers maintenance
        j.flush()
        types = [r[0] for r in j.reader().execute("SELECT type FROM events ORDER BY seq")]
        assert types == ["test.result", "test.result"]
        st = j.stats()
        assert st.evicted == {"max_age:asset.telemetry": 1}
        assert st.stale_results == 1
    finally:
        j.close()


def test_events_acknowledged_by_every_subscriber_are_deleted(journal):
    journal.register_subscriber("a")
    journal.register_subscriber("b")
    evs = [result(i, pad=500) for i in range(20)]
    journal.append(evs)
    rows = journal.read_after(0, 100)
    used_before = journal.stats().used_bytes
    journal.ack("a", rows[-1].seq)
    journal.ack("b", rows[9].seq)
    time.sleep(0.15)
    journal.flush()
    remaining = all_ids(journal)
    assert remaining == [e.id for e in evs[10:]]
    st = journal.stats()
    assert st.used_bytes < used_before
    subs = {s["name"]: s for s in st.subscribers}
    assert subs["a"]["backlog"] == 0 and subs["b"]["backlog"] == 10


def test_new_subscriber_starts_at_oldest_retained_or_latest(journal):
    journal.register_subscriber("old")
    journal.append([result(i) for i in range(5)])
    rows = journal.read_after(0, 10)
    journal.ack("old", rows[2].seq)
    journal.flush()
    time.sleep(0.15)
    journal.flush()
    # events 0..2 were deleted; a newcomer gets what is retained
    assert journal.register_subscriber("new") == rows[2].seq
    assert journal.register_subscriber("tail", start="latest") == rows[-1].seq
    assert journal.register_subscriber("new") == rows[2].seq  # idempotent


def test_cursor_never_moves_backwards(journal):
    journal.register_subscriber("s")
    journal.ack("s", 10)
    journal.flush()
    journal.ack("s", 5)
    journal.flush()
    assert journal.cursor("s") == 10


def garbage_then_open(tmp_path, content: bytes):
    path = tmp_path / "j.db"
    path.write_bytes(content)
    return path


def test_garbage_file_is_moved_aside_and_a_new_journal_started(tmp_path, caplog):
    path = garbage_then_open(tmp_path, b"this is not a database" * 100)
    j = Journal(path)
    try:
        assert j.corrupt_file is not None and j.corrupt_file.exists()
        assert j.corrupt_file.read_bytes().startswith(b"this is not a database")
        assert "JOURNAL CORRUPT" in caplog.text
        j.append([result(1)])
        assert len(all_ids(j)) == 1
        assert j.stats().corrupt_files == [str(j.corrupt_file)]
    finally:
        j.close()


def test_damaged_pages_are_detected_by_quick_check(tmp_path):
    path = tmp_path / "j.db"
    j = Journal(path)
    j.append([result(i, pad=3000) for i in range(200)])
    j.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:  # scribble over the middle of the file, leaving the header intact
        f.seek(size // 2)
        f.write(os.urandom(8192))
    j2 = Journal(path)
    try:
        assert j2.corrupt_file is not None
        assert j2.corrupt_file.stat().st_size == size  # kept as it was: the evidence
        salvage = j2.stats().salvage  # the rest is salvaged (tests/unit/test_salvage.py), the damage named
        assert 150 <= len(all_ids(j2)) < 200 and "UNREADABLE" in salvage["summary"]
    finally:
        j2.close()


def test_dead_letters_keep_events_and_raw_input(journal):
    ev = result(1)
    a = journal.dead_letter(reason="ValueError: boom", event=ev, subscriber="wats", attempts=4)
    b = journal.dead_letter(reason="not JSON", origin="mqtt:assets/x/status", raw=b"\xff{garbage")
    rows = journal.dead_letters()
    assert [r.id for r in rows] == [a, b]
    assert decode(rows[0].body) == ev and rows[0].attempts == 4 and rows[0].subscriber == "wats"
    assert rows[1].body == b"\xff{garbage" and rows[1].subscriber is None
    marked, skipped = journal.request_retry([a, b, 999])
    assert marked == [a]
    assert any("bad input" in s for s in skipped) and any("#999" in s for s in skipped)
    assert [r.id for r in journal.retries_for("wats")] == [a]
    assert journal.drop_dead_letters([b]) == 1
    assert [r.id for r in journal.dead_letters()] == [a]


def test_a_lazy_dead_letter_commits_with_the_cursor_that_passes_its_event_and_costs_no_commit(tmp_path):
    """A subscriber's dead letter is committed with its cursor, in one transaction: a crash loses both (the event is
    delivered again) or neither, and a permanent failure costs no fsync of its own (one each held a third of poison
    at 0.6 of the good drain rate). Seen from another connection, as ``status`` in another process sees it."""
    import sqlite3

    j = Journal(tmp_path / "j.db", cursor_flush_interval=3600)
    try:
        j.register_subscriber("wats", 0)
        j.append([result(1)])
        seq = j.last_seq
        other = sqlite3.connect(tmp_path / "j.db")
        seen = lambda: (other.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0],  # noqa: E731
                        other.execute("SELECT cursor FROM subscribers WHERE name = 'wats'").fetchone()[0])
        commits = j.commits
        assert j.dead_letter(reason="PermanentError: 400", event=result(1), subscriber="wats", lazy=True) is None
        j.ack("wats", seq)
        time.sleep(0.3)
        assert j.commits == commits and seen() == (0, 0)  # neither yet: a crash now redelivers the event
        j.append([telemetry()])  # the next write carries both
        assert seen() == (1, seq) and j.commits == commits + 1
        j.dead_letter(reason="PermanentError: 400", event=result(2), subscriber="wats", lazy=True)
        assert len(j.dead_letters()) == 2  # a read in this process flushes first
    finally:
        j.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs to fill (needs root)")
def test_a_full_disk_is_reported_as_such_and_the_journal_writes_again_once_there_is_room(tmp_path):
    """SQLite rolls a transaction back itself when a COMMIT finds the disk full; rolling back again hid the real
    error behind "cannot rollback - no transaction is active" (found by the fault harness filling the journal's
    file system)."""
    import subprocess

    from agent.events.journal import JournalError

    fs = tmp_path / "fs"
    fs.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(fs)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (a container without CAP_SYS_ADMIN)")
    try:
        j = Journal(fs / "j.db")
        j.append([result(i) for i in range(3)])
        j.register_subscriber("s")
        filler = fs / "filler"
        try:
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
        except OSError:
            pass
        big = {"unit_id": "X" * 20000, "result": "pass", "start_time": "2026-11-22T10:00:00Z"}
        j.ack("s", 3)  # a subscriber acknowledges while nothing can be written: its cursor waits, not vanishes
        with pytest.raises(JournalError) as err:
            for _ in range(200):
                j.append([Event.create("test.result", big, source="t")])
        assert "full" in str(err.value) and "cannot rollback" not in str(err.value), err.value
        filler.unlink()
        j.append([Event.create("test.result", big, source="t")])  # room again: it writes
        j.flush()
        assert j.reader().execute("SELECT cursor FROM subscribers WHERE name = 's'").fetchone()[0] == 3
        j.close()
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=True)
