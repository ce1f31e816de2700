"""Bad data must not stall good data (issue 16.7): the WATS uplink draining 1,000 results of which a third are
poison, against the same uplink draining 1,000 good ones, in the same run, against the WATS stand-in.

Poison is what a real site sends: half are refused by the server (the stand-in's poison units: a 400 after a
round trip), half cannot even be mapped (a part number longer than WATS takes: no request at all). Both are
permanent failures: dead-lettered, and the queue goes on. Two layouts of the same third: every third result, and
runs of 10 bad between 20 good (the layout that paused the uplink for 30 s after every 5 bad results in a row,
when permanent failures counted toward its circuit breaker). ``ratio_*`` is poison rate / good rate (events/s,
every event counted whether delivered or dead-lettered); about 1 means bad data costs nothing extra.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from wats_drain import _events  # noqa: E402


def _poison(events: list, bad: set[int]) -> list:
    """The same results with those at ``bad`` spoiled, alternately for the server and for the mapping."""
    out = []
    for k, e in enumerate(events):
        if k in bad:
            spoil = {"unit_id": f"POISON-{k}"} if k % 2 else {"part_number": "P" * 500}
            e = msgspec.structs.replace(e, payload={**e.payload, **spoil})
        out.append(e)
    return out


#: The stand-in in its own process (it must not share the uplink's GIL), refusing the poison units with a 400.
SERVER = """
import sys
from tests.wats_standin import WatsStandIn
s = WatsStandIn()
s.faults.poison_serials.update(f"POISON-{k}" for k in range(int(sys.argv[1])))
print(s.url, s.token, flush=True)
sys.stdin.read()
s.close()
"""


def _drain(url: str, token: str, events: list, tmp: Path) -> tuple[float, int, int]:
    """events/s from a journal backlog until the cursor passed the last one; (rate, delivered, dead letters)."""
    from agent.sinks.wats_plugin import WatsSinkSection
    from agent.events import EventBus, Journal
    from agent.sinks.wats import WatsSink

    tmp.mkdir()
    tok = tmp / "token"
    tok.write_text(token)
    tok.chmod(0o600)
    cfg = msgspec.convert({"url": url, "token_file": str(tok), "process_codes": {"test": 50},
                           "requests_per_minute": 10_000_000, "require_clock_sync": False}, WatsSinkSection)
    j = Journal(tmp / "journal.db", max_bytes=1 << 34)
    bus = EventBus(j)
    sink = WatsSink(cfg, station="bench", location="Bench", purpose="Bench", data_dir=tmp, journal=j)
    sub = bus.register_handler(sink)
    bus.publish_many(events)
    last = j.last_seq
    sink.reports.processes.refresh(force=True)  # outside the timing, as in the plain drain
    t = time.perf_counter()
    bus.start()
    deadline = time.monotonic() + 600
    while sub.cursor < last and time.monotonic() < deadline:
        time.sleep(0.002)
    rate = len(events) / (time.perf_counter() - t)
    delivered, dead = sub.delivered, len(j.dead_letters(limit=100000))
    bus.stop()
    sink.close()
    j.close()
    return rate, delivered, dead


def bench_poison_drain(tmp: Path, n: int = 1000, rounds: int = 3) -> dict:
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(n)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    layouts = {"every_third": {i for i in range(n) if i % 3 == 2},
               "runs_of_10": {i for i in range(n) if i % 30 >= 20}}
    rates: dict[str, list[float]] = {"good": [], **{k: [] for k in layouts}}
    counts: dict[str, tuple[int, int]] = {}
    try:
        url, token = server.stdout.readline().split()
        good = _events(n)
        sets = {"good": good, **{k: _poison(_events(n), bad) for k, bad in layouts.items()}}
        for r in range(rounds):  # interleaved, best of each: the machine is shared
            for name, events in sets.items():
                rate, delivered, dead = _drain(url, token, events, tmp / f"poison-{name}-{r}")
                rates[name].append(rate)
                counts[name] = (delivered, dead)
    finally:
        server.stdin.close()
        server.wait(10)
    for name, bad in (("good", set()), *layouts.items()):
        if counts[name] != (n - len(bad), len(bad)):
            raise RuntimeError(f"{name}: {counts[name]} (delivered, dead letters), expected {(n - len(bad), len(bad))}")
    best = {k: max(v) for k, v in rates.items()}
    return {"results": n, "poison": {k: len(v) for k, v in layouts.items()},
            "good_per_s": round(best["good"]),
            **{f"{k}_per_s": round(best[k]) for k in layouts},
            **{f"ratio_{k}": round(best[k] / best["good"], 3) for k in layouts},
            "rounds": {k: [round(x) for x in v] for k, v in rates.items()}, "target": "ratio >= 0.8"}


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench_poison_drain(Path(d), int(sys.argv[1]) if len(sys.argv) > 1 else 1000), indent=2))
