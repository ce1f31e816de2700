"""Soak: the agent under a steady mixed load for a long time, sampled every minute. Not in CI.

Load: a fixture controller on a pseudo-terminal (counters, self-tests, state, faults), a test station publishing
results to mosquitto, CFX WorkStarted from the plant over RabbitMQ (when installed), the WATS uplink to the stand-in,
MQTT telemetry and the CFX endpoint, all as in the fault harness but without faults. Meanwhile a scraper GETs
/metrics and /healthz every ``--scrape`` seconds, as Prometheus and a health check would (each request used to leak a
journal reader: two descriptors). Every ``--every`` seconds it samples the agent's RSS, open files, threads, CPU
and the journal's size, and prints one JSON line; at the end a summary with the first-to-last change and the range
of each, and how many scrapes failed (flat lines expected: a leak shows as a slope, not a level).

    .venv/bin/python bench/soak.py --minutes 120            # the long form
    .venv/bin/python bench/soak.py --minutes 2 --every 10   # a look
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.harness import FaultRun  # noqa: E402


def sample(pid: int, journal: Path) -> dict:
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    size = sum(p.stat().st_size for p in journal.parent.glob(journal.name + "*") if p.exists())
    return {"t": round(time.time()), "rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1),
            "open_files": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(status["Threads"]),
            "cpu_s": round((int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"), 1),
            "journal_mb": round(size / 1e6, 2)}


class Scraper(threading.Thread):
    """GET /metrics and /healthz every ``interval`` seconds on fresh connections; counts answers by status."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(name="scraper", daemon=True)
        self.port, self.interval = port, interval
        self.codes: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            for path in ("/metrics", "/healthz"):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                try:
                    conn.request("GET", path)
                    r = conn.getresponse()
                    r.read()
                    key = str(r.status)
                except OSError as e:
                    key = type(e).__name__
                finally:
                    conn.close()
                self.codes[key] = self.codes.get(key, 0) + 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--every", type=float, default=60, help="seconds between samples")
    ap.add_argument("--rate", type=float, default=5, help="station results per second (the fixture adds as many)")
    ap.add_argument("--scrape", type=float, default=1.0, help="seconds between scrapes of /metrics and /healthz")
    args = ap.parse_args()
    seconds = args.minutes * 60
    n = max(10, int(seconds * args.rate))
    work = Path(tempfile.mkdtemp(prefix="fa-soak-"))
    run = FaultRun(work, seed=1, kills=0, seconds=seconds, results=n, serial_messages=n, spread=1.0, audit=False,
                   corruptions=0, clock_jumps=0, cfx_messages=n // 2)
    samples = []
    scraper = None
    try:
        run.start()
        journal = work / "data" / "journal.db"
        port = int(re.search(r"\[metrics\]\s*listen = \"127\.0\.0\.1:(\d+)\"", run.cfg.read_text()).group(1))
        scraper = Scraper(port, args.scrape)
        scraper.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            s = sample(run.agent.pid, journal)
            samples.append(s)
            print(json.dumps(s), flush=True)
            threading.Event().wait(min(args.every, max(0.0, end - time.monotonic())))
        samples.append(sample(run.agent.pid, journal))
    finally:
        if scraper is not None:
            scraper.stop.set()
            scraper.join(15)
        run.finish()
        run.unmount()
        shutil.rmtree(work, ignore_errors=True)
    first, last = samples[1] if len(samples) > 2 else samples[0], samples[-1]  # after the first minute's warm-up
    keys = ("rss_mb", "open_files", "threads", "journal_mb")
    steady = samples[1:] if len(samples) > 2 else samples
    print(json.dumps({"minutes": args.minutes, "samples": len(samples),
                      "scrapes": scraper.codes if scraper else {},
                      "change": {k: round(last[k] - first[k], 2) for k in keys},
                      "range": {k: [min(s[k] for s in steady), max(s[k] for s in steady)] for k in keys},
                      "cpu_fraction_of_one_core": round((last["cpu_s"] - first["cpu_s"])
                                                        / max(1, last["t"] - first["t"]), 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
