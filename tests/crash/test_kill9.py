"""kill -9 at random moments: every id a publisher printed is in the journal, every event reaches its subscriber.

Rounds default to 40 (publisher) and 15 (consumer); set FA_CRASH_ROUNDS to run more (e.g. 500 for a soak).
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from agent.events import Event, Journal
from tests.conftest import ROOT, cli_cmd

ROUNDS = int(os.environ.get("FA_CRASH_ROUNDS", "40"))
SEED = int(os.environ.get("FA_CRASH_SEED", "20261122"))


def journal_ids(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        return {r[0] for r in conn.execute("SELECT id FROM events")}
    finally:
        conn.close()


def test_kill9_during_publish_stdin_loses_no_printed_id(write_config, tmp_path):
    rng = random.Random(SEED)
    cfg = write_config()
    db = tmp_path / "data" / "journal.db"
    printed_total: list[str] = []
    line = json.dumps({"type": "test.result", "payload": {"unit_id": "SN", "result": "pass",
                                                          "start_time": "2026-01-01T00:00:00Z"}}) + "\n"
    kills_mid_stream = 0
    for round_no in range(ROUNDS):
        proc = subprocess.Popen(cli_cmd("publish", "-c", str(cfg), "--stdin"), cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        printed: list[str] = []

        def feed():
            try:
                while True:
                    proc.stdin.write(line.encode() * rng.randint(1, 50))
                    proc.stdin.flush()
                    time.sleep(rng.random() * 0.003)
            except (BrokenPipeError, ValueError, OSError):
                pass

        def read():
            for raw in proc.stdout:
                if raw.endswith(b"\n"):  # a torn last line was never fully printed
                    printed.append(raw.decode().strip())

        tf, tr = threading.Thread(target=feed, daemon=True), threading.Thread(target=read, daemon=True)
        tf.start(), tr.start()
        if round_no % 2:
            time.sleep(0.15 + rng.random() * 0.6)  # startup included: some kills land before the first commit
        else:  # the others surely mid-stream, however slow the machine is at starting a process today
            deadline = time.monotonic() + 10
            while not printed and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.random() * 0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        tr.join(5)
        kills_mid_stream += bool(printed)
        stored = journal_ids(db)
        missing = [i for i in printed if i not in stored]
        assert not missing, f"{len(missing)} printed ids missing after kill -9: {missing[:3]}"
        printed_total += printed
    assert kills_mid_stream >= ROUNDS // 2, "most kills should land while events were flowing"
    assert len(printed_total) > ROUNDS * 10
    assert len(set(printed_total)) == len(printed_total)
    # and the journal still works for the agent after all that
    j = Journal(db)
    try:
        j.append([Event.create("custom", {})])
        assert j.corrupt_file is None
    finally:
        j.close()


def test_kill9_of_a_consumer_redelivers_unacknowledged_events(tmp_path):
    rng = random.Random(SEED + 1)
    db, out = tmp_path / "j.db", tmp_path / "handled.txt"
    journal = Journal(db)
    ids = []
    for _ in range(20):
        batch = [Event.create("custom", {"n": len(ids) + k}) for k in range(50)]
        journal.append(batch)
        ids += [e.id for e in batch]
    journal.close()

    def run_consumer(delay="0.002"):
        return subprocess.Popen([sys.executable, str(Path(__file__).with_name("consumer.py")), str(db), str(out), delay],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})

    rounds = max(5, ROUNDS // 3)
    for _ in range(rounds):
        proc = run_consumer()
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.random() * 0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        handled = out.read_text().split() if out.exists() else []
        conn = sqlite3.connect(db)
        cursor = conn.execute("SELECT cursor FROM subscribers WHERE name = 'appender'").fetchone()
        conn.close()
        # nothing is acknowledged before its side effect happened (seq n is ids[n - 1])
        assert set(ids[: cursor[0] if cursor else 0]) <= set(handled)
    assert 0 < len(set(out.read_text().split())) < len(ids), "the kills should interrupt delivery part-way"
    proc = run_consumer("0")
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not set(ids) <= set(out.read_text().split()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    handled = out.read_text().split()
    assert set(handled) == set(ids)  # at least once: every event handled
    first_seen = list(dict.fromkeys(handled))
    assert first_seen == ids  # and in journal order
