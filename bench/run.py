"""Benchmarks for the event core, each measured against its raw limit in the same run.

    .venv/bin/python bench/run.py            # full run, writes bench/results/latest.json and docs/performance.md
    .venv/bin/python bench/run.py --quick    # smaller counts (a smoke test of the benchmarks themselves)

Prints one JSON document. Machines here are shared and noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import msgspec
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from agent.events import Event, EventBus, Journal  # noqa: E402
from agent.events.journal import SCHEMA  # noqa: E402
from agent.events.model import encode  # noqa: E402
from cfx_bench import bench_cfx  # noqa: E402
from disk_writes import bench_disk_writes  # noqa: E402
from common import PAYLOAD  # noqa: E402
from mqtt_bench import bench_mqtt  # noqa: E402
from poison_drain import bench_poison_drain  # noqa: E402
from wats_drain import bench_wats_drain  # noqa: E402

def make_event() -> Event:
    return Event.create("test.result", PAYLOAD, source="bench")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# -------------------------------------------------------------------------------------------- raw limits
def _raw_setup(path: Path, sync: str, n: int) -> tuple[sqlite3.Connection, list[tuple]]:
    """A bare connection with the journal's schema and pragmas, and ``n`` encoded rows ready to insert."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync}")
    conn.executescript(SCHEMA)
    rows = [(e.id, e.event_type, 0, time.time(), encode(e)) for e in (make_event() for _ in range(n))]
    return conn, rows


def raw_commit_rate(path: Path, sync: str, n: int) -> float:
    """Commits/s of a bare connection: one row per transaction, same schema and pragmas as the journal."""
    conn, rows = _raw_setup(path, sync, n)
    t = time.perf_counter()
    for r in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO events(id, type, evictable, recorded_at, body) VALUES (?, ?, ?, ?, ?)", r)
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t)
    conn.close()
    return rate


def raw_executemany_rate(path: Path, n: int) -> float:
    """Rows/s of executemany of already-encoded rows in one transaction: the batch ceiling."""
    conn, rows = _raw_setup(path, "FULL", n)
    t = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO events(id, type, evictable, recorded_at, body) VALUES (?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t)
    conn.close()
    return rate


def raw_blocking_group_commit(path: Path, threads: int, per_thread: int) -> float:
    """The structural ceiling of *blocking* publishers in CPython: ``threads`` threads each hand a pre-encoded row
    to a bare writer thread and block until it is committed; the writer commits whatever is queued (same linger)
    with one transaction. No agent code at all: this is what thread wake-ups plus fsync allow on this machine."""
    import queue

    conn, flat = _raw_setup(path, "FULL", threads * per_thread)
    q: queue.SimpleQueue = queue.SimpleQueue()
    stop = object()

    def writer() -> None:
        while True:
            first = q.get()
            if first is stop:
                return
            batch = [first]
            deadline = time.monotonic() + 0.0005
            while len(batch) < threads:
                try:
                    batch.append(q.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO events(id, type, evictable, recorded_at, body) VALUES (?, ?, ?, ?, ?)",
                             [r for r, _ in batch])
            conn.execute("COMMIT")
            for _, lock in batch:
                lock.release()

    rows = [flat[k * per_thread:(k + 1) * per_thread] for k in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def pub(k: int) -> None:
        barrier.wait()
        for r in rows[k]:
            lock = threading.Lock()
            lock.acquire()
            q.put((r, lock))
            lock.acquire()

    wt = threading.Thread(target=writer)
    wt.start()
    ts = [threading.Thread(target=pub, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    rate = threads * per_thread / (time.perf_counter() - t0)
    q.put(stop)
    wt.join()
    conn.close()
    return rate


# -------------------------------------------------------------------------------------------- benchmarks
def bench_publish_8_threads(tmp: Path, per_thread: int) -> dict:
    limit_single = raw_commit_rate(tmp / "raw.db", "FULL", max(500, per_thread))
    j = Journal(tmp / "pub.db", max_bytes=1 << 34)
    bus = EventBus(j)
    lat: list[list[float]] = [[] for _ in range(8)]
    barrier = threading.Barrier(9)

    def work(k: int) -> None:
        mine = lat[k]
        barrier.wait()
        for _ in range(per_thread):
            t0 = time.perf_counter()
            bus.publish(make_event())
            mine.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    commits0 = j.commits
    barrier.wait()
    t = time.perf_counter()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    commits = j.commits - commits0
    j.close()
    total = 8 * per_thread
    all_lat = [x * 1000 for xs in lat for x in xs]
    rate = total / elapsed

    # the pyWATS in-memory bus, one handler, in one thread (it has no durability to wait for)
    from pywats_bus import Handler, PyWatsEvent, PyWatsSyncBus

    pb = PyWatsSyncBus()
    h = Handler(["test.result"])
    pb.register_handler(h)
    n = max(2000, total // 2)
    t = time.perf_counter()
    for _ in range(n):
        pb.publish(PyWatsEvent("test.result", dict(PAYLOAD)))
    pywats_rate = n / (time.perf_counter() - t)
    assert h.count == n
    fsync_limit = limit_single * 8
    ceiling = raw_blocking_group_commit(tmp / "ceiling.db", 8, per_thread)
    return {
        "events": total, "events_per_s": round(rate), "p50_ms": round(pct(all_lat, 0.5), 3),
        "p99_ms": round(pct(all_lat, 0.99), 3), "commits": commits, "events_per_commit": round(total / commits, 1),
        "raw_commits_per_s_1_row": round(limit_single), "fsync_limit_x8": round(fsync_limit),
        "ratio_to_fsync_limit": round(rate / fsync_limit, 3),
        "bare_blocking_group_commit_per_s": round(ceiling),
        "ratio_to_bare_blocking_group_commit": round(rate / ceiling, 3),
        "pywats_inmemory_bus_events_per_s": round(pywats_rate),
        "ratio_to_pywats_bus": round(rate / pywats_rate, 2),
        "targets": {"ratio_to_fsync_limit": ">= 0.60", "ratio_to_pywats_bus": "> 1", "p99_ms": "< 20"},
    }


def bench_publish_many(tmp: Path, n: int, batch: int) -> dict:
    raw = raw_executemany_rate(tmp / "raw_many.db", n)
    j = Journal(tmp / "many.db", max_bytes=1 << 34)
    bus = EventBus(j)
    t = time.perf_counter()
    for _ in range(n // batch):
        bus.publish_many([make_event() for _ in range(batch)])
    rate = (n // batch) * batch / (time.perf_counter() - t)
    j.close()
    return {"events": n, "batch": batch, "events_per_s": round(rate), "raw_executemany_rows_per_s": round(raw),
            "ratio_to_raw": round(rate / raw, 3), "target": ">= 0.25"}


def bench_publish_stdin(tmp: Path, n: int) -> dict:
    raw = raw_executemany_rate(tmp / "raw_stdin.db", n)
    cfg = tmp / "stdin.toml"
    cfg.write_text(f'[agent]\ndata_dir = "{tmp / "stdin-data"}"\n[journal]\nmax_bytes = "16GB"\n')
    line = json.dumps({"type": "test.result", "payload": PAYLOAD}) + "\n"
    data = (line * n).encode()
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "agent", "publish", "-c", str(cfg), "--stdin"], input=data,
                          capture_output=True, cwd=ROOT, check=True)
    elapsed = time.perf_counter() - t
    printed = proc.stdout.count(b"\n")
    assert printed == n, (printed, proc.stderr[-500:])
    return {"events": n, "events_per_s_including_startup": round(n / elapsed),
            "raw_executemany_rows_per_s": round(raw), "ratio_to_raw": round(n / elapsed / raw, 3),
            "target": ">= 0.25"}


def _pty_feed(lines: list[bytes]) -> tuple[int, int, threading.Thread, threading.Event]:
    """A pty pair with a writer thread blasting ``lines`` into the master (and draining what comes back)."""
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    go = threading.Event()

    def feed() -> None:
        go.wait()
        data = b"".join(lines)
        view = memoryview(data)
        while view:
            try:
                n = os.write(master, view[:4096])
            except BlockingIOError:
                continue
            view = view[n:]
            try:  # drain acks so the agent's writes never block
                import select

                while select.select([master], [], [], 0)[0]:
                    os.read(master, 65536)
            except OSError:
                break

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    return master, slave, t, go


def bench_serial(tmp: Path, n: int) -> dict:
    import serial as pyserial

    from agent.sources.serial_plugin import SerialSourceSection
    from agent.sources.serial import JsonLinesSource

    lines = [json.dumps({"type": "counters", "seq": i, "session": "bench", "running_count": i,
                         "total_count": i}).encode() + b"\n" for i in range(1, n + 1)]
    # raw: a bare pyserial read loop counting newlines
    master, slave, feeder, go = _pty_feed(lines)
    port = pyserial.Serial(os.ttyname(slave), timeout=0.1)
    got = 0
    go.set()
    t = time.perf_counter()
    while got < n:
        got += port.read(max(1, port.in_waiting)).count(b"\n")
    raw = n / (time.perf_counter() - t)
    port.close()
    os.close(master)
    os.close(slave)
    # the agent: JSON-lines source, journal with synchronous=FULL, acks written back
    master, slave, feeder, go = _pty_feed(lines)
    j = Journal(tmp / "serial.db", max_bytes=1 << 34)
    bus = EventBus(j)
    cfg = msgspec.convert({"name": "bench", "port": os.ttyname(slave), "driver": "jsonl", "asset_id": "B"},
                          SerialSourceSection)
    src = JsonLinesSource(cfg)
    bus.register_transport(src)
    bus.start()
    while not src.is_connected:
        time.sleep(0.01)
    time.sleep(0.2)
    go.set()
    t = time.perf_counter()
    while (j.get_state(f"serial-seq:{cfg.name}") or {}).get("seq", 0) < n:
        time.sleep(0.002)
    agent = n / (time.perf_counter() - t)
    commits = j.commits
    bus.stop()
    j.close()
    os.close(master)
    os.close(slave)
    avg_len = sum(map(len, lines)) / n
    return {"lines": n, "agent_lines_per_s_durable": round(agent), "raw_pty_read_lines_per_s": round(raw),
            "ratio_to_raw": round(agent / raw, 3), "commits": commits,
            "lines_per_s_a_115200_baud_wire_carries": round(11520 / avg_len)}


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_ticks(pid: int) -> int:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run_agent_sample(cfg: Path, seconds: float) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(cfg)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        samples, t0, c0 = [], time.monotonic(), cpu_ticks(proc.pid)
        while time.monotonic() - t0 < seconds:
            samples.append(rss_kb(proc.pid))
            time.sleep(0.5)
        cpu = (cpu_ticks(proc.pid) - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
    finally:
        proc.terminate()
        proc.wait(15)
    return {"rss_mb_max": round(max(samples) / 1024, 1), "rss_mb_median": round(statistics.median(samples) / 1024, 1),
            "cpu_fraction_of_one_core": round(cpu, 4)}


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nobody listens there once closed


def agent_config(tmp: Path, name: str, simulated: bool, data: Path) -> Path:
    cfg = tmp / f"{name}.toml"
    # the uplinks as in the demo: WATS configured with no token yet, MQTT source and sink with no broker there, so
    # everything is held in the journal and both MQTT clients keep retrying
    text = (f'[agent]\nstation = "bench"\nlocation = "Bench"\npurpose = "Bench"\ndata_dir = "{data}"\n'
            f'[journal]\nmax_bytes = "4GB"\n[metrics]\nenabled = false\n'
            f'[sinks.wats]\nurl = "https://wats.invalid"\ntoken_file = "{data}/wats.token"\n'
            f'default_process_code = 10\ndefault_part_number = "BENCH"\n')
    if simulated:
        text += '[sources.simulated]\ninterval = "1s"\n'
        text += f'[sources.mqtt]\nport = {_closed_port()}\n[sinks.mqtt]\nport = {_closed_port()}\n'
    cfg.write_text(text)
    return cfg


def bench_rss(tmp: Path, backlog: int, seconds: float) -> dict:
    idle = run_agent_sample(agent_config(tmp, "idle", False, tmp / "idle-data"), seconds)
    demo = run_agent_sample(agent_config(tmp, "demo", True, tmp / "demo-data"), seconds)
    # fill a journal with a backlog the (parked) WATS subscriber has not taken
    data = tmp / "backlog-data"
    data.mkdir()
    j = Journal(data / "journal.db", max_bytes=1 << 36)
    j.register_subscriber("wats")
    t = time.perf_counter()
    template = make_event()
    for start in range(0, backlog, 10000):
        j.append([Event.create("test.result", PAYLOAD, source="bench", validate=False)
                  for _ in range(min(10000, backlog - start))])
    fill = time.perf_counter() - t
    j.close()
    size_mb = (data / "journal.db").stat().st_size / 1e6
    loaded = run_agent_sample(agent_config(tmp, "backlog", True, data), seconds)
    # and a subscriber streaming through that whole backlog, in-process, sampling RSS as it goes
    j = Journal(data / "journal.db", max_bytes=1 << 36)
    bus = EventBus(j)
    count = [0]
    bus.register_handler(lambda e: count.__setitem__(0, count[0] + 1), name="drain")
    before = rss_kb(os.getpid())
    samples = []
    bus.start()
    t = time.perf_counter()
    while count[0] < backlog and time.perf_counter() - t < 600:
        samples.append(rss_kb(os.getpid()))
        time.sleep(0.25)
    drain_rate = count[0] / (time.perf_counter() - t)
    bus.stop()
    j.close()
    del template
    return {
        "idle_no_sources": idle, "demo_config": demo, "backlog_events": backlog,
        "backlog_fill_seconds": round(fill, 1), "backlog_journal_mb": round(size_mb, 1),
        "with_backlog": loaded,
        "rss_growth_with_backlog_mb": round(loaded["rss_mb_max"] - demo["rss_mb_max"], 1),
        "drain": {"events": count[0], "events_per_s": round(drain_rate),
                  "rss_growth_while_streaming_mb": round((max(samples) - before) / 1024, 1) if samples else None},
        "targets": {"demo_config.rss_mb_max": "< 40", "rss_growth_with_backlog_mb": "<= 5"},
    }


def bench_import() -> dict:
    def best(cmd: list[str], n: int = 5) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
            times.append(time.perf_counter() - t)
        return min(times)

    bare = best([sys.executable, "-c", "pass"])
    imp = best([sys.executable, "-c", "import agent"])
    ver = best([sys.executable, "-m", "agent", "--version"])
    return {"python_startup_ms": round(bare * 1000, 1), "import_agent_ms": round(imp * 1000, 1),
            "version_cmd_ms": round(ver * 1000, 1), "import_agent_over_startup_ms": round((imp - bare) * 1000, 1)}


def write_markdown(doc: dict, path: Path) -> None:
    p, m, s, r, i = (doc[k] for k in ("publish_8_threads", "publish_many", "publish_stdin", "memory", "import"))
    dw = doc["disk_writes"]
    ser = doc["serial"]
    wd = doc["wats_drain"]
    pd = doc["poison_drain"]
    mt, mi = doc["mqtt"]["telemetry"], doc["mqtt"]["ingest"]
    cx = doc["cfx"]
    lines = [
        "# Performance",
        "",
        f"Measured {doc['when']} on {doc['machine']} by `bench/run.py`; every figure is set against its raw limit",
        "measured in the same run. These machines are shared and noisy: compare ratios, not absolute numbers.",
        "Rerun: `.venv/bin/python bench/run.py` (it rewrites this file and `bench/results/latest.json`).",
        "",
        "| What | Agent | Raw limit (same run) | Ratio | Target |",
        "|---|---|---|---|---|",
        f"| Blocking `publish`, 8 threads, synchronous=FULL | {p['events_per_s']:,} ev/s | fsync limit "
        f"{p['fsync_limit_x8']:,}/s (bare 1-row commits {p['raw_commits_per_s_1_row']:,}/s × 8) | "
        f"{p['ratio_to_fsync_limit']:.2f} | ≥ 0.60 |",
        f"| same, against 8 blocked threads + bare writer thread + bare SQLite commit (no agent code) | "
        f"{p['events_per_s']:,} ev/s | {p['bare_blocking_group_commit_per_s']:,} ev/s | "
        f"{p['ratio_to_bare_blocking_group_commit']:.2f} | — |",
        f"| same, against the pyWATS in-memory bus (1 handler, no durability) | {p['events_per_s']:,} ev/s | "
        f"{p['pywats_inmemory_bus_events_per_s']:,} ev/s | {p['ratio_to_pywats_bus']:.2f}× | > 1 |",
        f"| `publish` latency, 8 threads | p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms | — | — | p99 < 20 ms |",
        f"| `publish_many` (batches of {m['batch']}) | {m['events_per_s']:,} ev/s | executemany "
        f"{m['raw_executemany_rows_per_s']:,} rows/s | {m['ratio_to_raw']:.2f} | ≥ 0.25 |",
        f"| `fixture-agent publish --stdin` ({s['events']:,} lines, process start included) | "
        f"{s['events_per_s_including_startup']:,} ev/s | executemany {s['raw_executemany_rows_per_s']:,} rows/s | "
        f"{s['ratio_to_raw']:.2f} | ≥ 0.25 |",
        f"| Serial JSON-lines ingest to durable, acks written back ({ser['lines']:,} lines over a pty) | "
        f"{ser['agent_lines_per_s_durable']:,} lines/s | bare pyserial read loop {ser['raw_pty_read_lines_per_s']:,} "
        f"lines/s | {ser['ratio_to_raw']:.2f} | — |",
        f"| same, against what a 115200-baud wire can carry of these lines | "
        f"{ser['agent_lines_per_s_durable']:,} lines/s | {ser['lines_per_s_a_115200_baud_wire_carries']:,} lines/s | "
        f"{ser['agent_lines_per_s_durable'] / ser['lines_per_s_a_115200_baud_wire_carries']:.0f}× | > 1 |",
        f"| WATS uplink draining a backlog of {wd['reports']:,} reports (stand-in server in its own process) | "
        f"{wd['agent_reports_per_s']:,} reports/s | bare httpx POST loop, same payloads {wd['bare_httpx_posts_per_s']:,}/s "
        f"| {wd['ratio_to_bare']:.2f} (median of {len(wd['rounds']['agent'])} paired rounds "
        f"{wd['median_paired_ratio']:.2f}) | ≥ 0.80 |",
        f"| WATS uplink draining {pd['results']:,} results of which a third are poison (400s and mapping errors, "
        f"dead-lettered): every third one / in runs of 10 | {pd['every_third_per_s']:,} / {pd['runs_of_10_per_s']:,} "
        f"results/s | the same uplink, {pd['results']:,} good results {pd['good_per_s']:,}/s | "
        f"{pd['ratio_every_third']:.2f} / {pd['ratio_runs_of_10']:.2f} | ≈ 1 |",
        f"| MQTT telemetry publishing a backlog of {doc['mqtt']['messages']:,} events (QoS 1, window {mt['window']}, "
        f"cursor on PUBACK; local mosquitto) | {mt['agent_events_per_s']:,} ev/s | bare paho QoS 1 loop, same payloads "
        f"and window {mt['bare_paho_qos1_per_s']:,}/s | {mt['ratio_to_bare']:.2f} (median paired "
        f"{mt['median_paired_ratio']:.2f}) | ≥ 0.50 |",
        f"| MQTT ingest, QoS 1 messages to durable events, PUBACK after the commit | "
        f"{mi['agent_durable_events_per_s']:,} ev/s | bare paho subscriber acknowledging on arrival, keeping nothing "
        f"{mi['bare_paho_ack_only_per_s']:,}/s | {mi['ratio_to_bare']:.2f} (median paired "
        f"{mi['median_paired_ratio']:.2f}) | — |",
        f"| CFX endpoint publishing a backlog of {cx['messages']:,} test results as UnitsTested (gzip, window "
        f"{cx['window']}, cursor on Accepted; RabbitMQ 3.10 AMQP 1.0) | {cx['agent_messages_per_s']:,} msg/s | bare "
        f"proton send loop, same messages pre-built, same window {cx['bare_proton_per_s']:,}/s | "
        f"{cx['ratio_to_bare']:.2f} (median paired {cx['median_paired_ratio']:.2f}) | — |",
        f"| RSS of idle `run`, no sources | {r['idle_no_sources']['rss_mb_max']} MB | — | — | — |",
        f"| RSS of `run` on the demo config | {r['demo_config']['rss_mb_max']} MB | — | — | < 40 MB |",
        f"| RSS of `run` with {r['backlog_events']:,} events backlog ({r['backlog_journal_mb']} MB journal) | "
        f"{r['with_backlog']['rss_mb_max']} MB | demo config {r['demo_config']['rss_mb_max']} MB | "
        f"+{r['rss_growth_with_backlog_mb']} MB | ≤ +5 MB |",
        f"| Streaming that backlog through a durable subscriber | {r['drain']['events_per_s']:,} ev/s | — | "
        f"RSS +{r['drain']['rss_growth_while_streaming_mb']} MB | flat |",
        f"| CPU of idle `run` (demo config) | {r['demo_config']['cpu_fraction_of_one_core'] * 100:.2f} % of a core | — "
        f"| — | no spinning |",
        f"| `import agent` | {i['import_agent_ms']} ms | bare interpreter {i['python_startup_ms']} ms | "
        f"+{i['import_agent_over_startup_ms']} ms | — |",
        f"| `fixture-agent --version` | {i['version_cmd_ms']} ms | — | — | — |",
        f"| Bytes written to disk per event (SD-card wear; {dw['event_bytes']}-byte events, one commit each) | "
        f"{dw['agent_bytes_per_event']:,} B | bare SQLite {dw['raw_sqlite_bytes_per_event']:,} B | "
        f"{dw['ratio_to_raw']:.2f} | ≤ 1.5 |",
        f"| same, with an uplink's cursor following every event | {dw['agent_with_uplink_bytes_per_event']:,} B | "
        f"bare SQLite {dw['raw_sqlite_bytes_per_event']:,} B | {dw['ratio_with_uplink_to_raw']:.2f} | — |",
        f"| same, events arriving 50 at a time | {dw['batches_of_50']['agent_with_uplink_bytes_per_event']:,} B | "
        f"bare SQLite {dw['batches_of_50']['raw_sqlite_bytes_per_event']:,} B | "
        f"{dw['batches_of_50']['ratio_to_raw']:.2f} | — |",
        "",
        f"Group commit at work: the 8-thread run committed {p['events']:,} events in {p['commits']:,} transactions "
        f"({p['events_per_commit']} events per fsync).",
        "",
        "## Blocking `publish` from 8 threads: below target, and why",
        "",
        "The issue's targets for this row (≥ 0.60 of the fsync limit, faster than the in-memory pyWATS bus) are",
        "**not met on this machine**. What was measured while looking for the cause:",
        "",
        "- Blocked publishers first settled into two alternating groups of 4 per fsync (one group committing while the",
        "  other enqueued), which caps the ratio near 0.5 whatever the code costs. The writer now lingers up to 0.5 ms",
        "  for the previous batch's publishers: 8 events per commit, about +30 %.",
        "- The second raw limit in the table is the same *structure* with no agent code: 8 threads handing a",
        "  pre-encoded row to a bare writer thread and blocking until its bare SQLite commit. On this 2-core VM it",
        "  reaches only about 0.5 of the × 8 limit itself, because every blocking publish costs two thread wake-ups",
        "  (about 60 µs round trip here, measured bare) and they happen in series with the commit.",
        "- The rest of the gap is the agent's own per-publish Python (validation, enrichment, encoding, request and",
        "  metrics bookkeeping, about 15 µs, multiplied about threefold by the serial phase). A leader/follower commit",
        "  (publishers commit for each other) and a single-wake linger were tried and measured no better; the",
        "  `auto_vacuum` setting was ruled out.",
        "- Where throughput matters, the batch paths meet their targets: `publish_many` and `publish --stdin` commit",
        "  every waiting event in one transaction. On a Pi's SD card, where one fsync costs milliseconds rather",
        "  than 0.25 ms, the fixed per-publish cost is a far smaller share of each commit (not measured here: no",
        "  slow-sync device is available on this machine).",
        "",
        "## WATS uplink",
        "",
        "The drain row sends the same WSJF payloads both ways over one keep-alive connection to the stand-in running",
        "in its own process; the agent's extra work per report is reading and decoding the journal row, mapping it",
        "to WSJF, encoding it, the rate budget and process-code check, and moving its cursor. Across runs on this",
        "machine the ratio has ranged from about 0.75 to 0.93: it sits at the 0.80 target's edge, with the",
        "machine's noise larger than the difference. Profiled, the agent's own share is small next to httpx's",
        "per-request cost (which the bare loop pays too); the Authorization header is set once on the client and",
        "reports are encoded with msgspec to keep it so.",
        "",
        "Bad data beside good (`bench/poison_drain.py`): a permanent failure is the event's fault, so it is",
        "dead-lettered and the queue moves on; it does not count toward the circuit breaker. When it did, every 5",
        "bad results in a row paused the uplink for 30 s (the runs-of-10 layout: 116 of 300 results drained in",
        "10 minutes). What a dead letter still costs is its own commit (one fsync each, where a delivered result's",
        "cursor is flushed with others).",
        "",
        "Memory: the idle config has the WATS uplink (configured, no token); the demo config adds the simulated",
        "station and the MQTT source and sink (configured, no broker listening), as `config/demo.toml` does. Importing httpx and creating its",
        "TLS-verifying client costs about 9 MB of the RSS above; the agent keeps httpx from importing its",
        "command-line client (click, pygments), which saved about 2 MB more.",
        "",
        "## MQTT",
        "",
        "Both rows run against one private mosquitto started by the benchmark (`bench/mqtt_bench.py`). Telemetry:",
        "the bare loop publishes pre-encoded payloads with the same in-flight window (100, cut to the broker's MQTT 5",
        "Receive Maximum less 2, as the sink does: mosquitto says 20) and waits for every PUBACK; the agent also",
        "reads and decodes journal rows, adds `id`/`run`/`seq`, and moves its cursor in order as PUBACKs return. Ingest: both subscribers get the same publisher's QoS 1 stream with a receive maximum of",
        f"{mi['receive_maximum']}; the agent decodes, adapts and validates each message and acknowledges it only after",
        "the batch's transaction (one fsync) committed, so at most a receive maximum of messages wait on each fsync.",
        "",
        "## CFX",
        "",
        "`bench/cfx_bench.py` starts a private RabbitMQ node. The bare loop sends pre-built messages (the same gzip",
        "Data bodies and properties) from a proton container and counts Accepted outcomes with the same window; the",
        "agent also reads and decodes the journal, maps each result to a UnitsTested envelope, encodes and",
        "compresses it, hands it to the container thread (one wake-up per burst), and moves its cursor in order.",
        "Mapping and compression are about 45 µs of Python per message on this machine, which is most of the gap.",
        "",
        "## Disk writes (SD-card wear)",
        "",
        "`bench/disk_writes.py` reads `write_bytes` from `/proc/self/io` around each run, on a real disk (beside the",
        "benchmark, not a tmpfs). One fsync'd commit per event costs SQLite about 20 kB of writes for a 570-byte",
        "event (WAL frames of whole pages, the checkpoint, the file system's journal); the agent adds its metadata",
        "row and counters, and an uplink's cursor commits add more. Events that arrive together share a commit,",
        "which is where the wear goes down by an order of magnitude: the serial and MQTT sources journal whatever",
        "is waiting in one transaction. `journal.sync = \"normal\"` trades power-cut safety for fewer syncs.",
        "",
        "The pyWATS baseline is `bench/pywats_bus.py`, a reconstruction of its sync `EventBus.publish` from",
        "`reference/wats-api.md` §8 (handlers in the caller's thread, a new asyncio loop per handler call); pyWATS",
        "itself is not installable here.",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small counts: checks the benchmarks run")
    ap.add_argument("--backlog", type=int, help="events in the backlog RSS test (default 1,000,000)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not rewrite docs/performance.md")
    args = ap.parse_args()
    quick = args.quick
    tmp = Path(tempfile.mkdtemp(prefix="fa-bench-", dir=os.environ.get("FA_BENCH_DIR")))
    try:
        doc = {
            "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                       f"SQLite {sqlite3.sqlite_version}",
            "publish_8_threads": bench_publish_8_threads(tmp, 300 if quick else 2500),
            "publish_many": bench_publish_many(tmp, 20000 if quick else 200000, 1000),
            "publish_stdin": bench_publish_stdin(tmp, 20000 if quick else 200000),
            "serial": bench_serial(tmp, 5000 if quick else 50000),
            "memory": bench_rss(tmp, args.backlog or (20000 if quick else 1_000_000), 3 if quick else 8),
            "wats_drain": bench_wats_drain(tmp, 300 if quick else 3000, rounds=2 if quick else 5),
            "poison_drain": bench_poison_drain(tmp, 150 if quick else 1000, rounds=1 if quick else 3),
            "mqtt": bench_mqtt(tmp, 1000 if quick else 10000, rounds=1 if quick else 3),
            "cfx": bench_cfx(tmp, 300 if quick else 5000, rounds=1 if quick else 3),
            "import": bench_import(),
            "disk_writes": bench_disk_writes(500 if quick else 3000),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(doc, indent=2))
    if not args.no_write and not quick:
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        (ROOT / "bench" / "results" / "latest.json").write_text(json.dumps(doc, indent=2) + "\n")
        write_markdown(doc, ROOT / "docs" / "performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
