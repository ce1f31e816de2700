"""WATS backlog drain: reports/s the uplink delivers from a journal backlog, against a bare httpx POST loop.

Both send the same WSJF payloads, one keep-alive connection each, to the WATS stand-in running in its own
process. The bare loop posts pre-encoded bodies and does nothing else; the agent reads the journal, decodes,
maps to WSJF, encodes, checks its rate budget and process codes, posts, and moves its cursor. The ratio is what
the uplink's own work costs per report.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent


def _events(n: int):
    from agent.events import Event

    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    return [Event.create("test.result", {
        "unit_id": f"SN{i:08d}", "result": "pass", "start_time": start, "part_number": "PCBA-100", "revision": "A",
        "steps": [{"name": "VCC", "status": "pass", "measurements": [
            {"name": "VCC_3V3", "status": "pass", "value": 3.301, "unit": "V", "low_limit": 3.2, "high_limit": 3.4,
             "comp_op": "GELE"}]},
                  {"name": "Boot", "status": "pass", "measurements": [{"name": "Boot", "status": "pass", "value": True}]}],
    }, source="bench") for i in range(n)]


def _bare(url: str, token: str, bodies: list[bytes]) -> float:
    import httpx

    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json", "Accept": "application/json"}
    with httpx.Client(base_url=url, headers=headers) as c:
        t = time.perf_counter()
        for b in bodies:
            c.post("/api/Report/WSJF", content=b).raise_for_status()
        return len(bodies) / (time.perf_counter() - t)


def _agent(url: str, token: str, events, tmp: Path) -> float:
    from agent.config import WatsSinkSection
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
    for k in range(0, len(events), 1000):
        bus.publish_many(events[k:k + 1000])
    last = j.last_seq
    t = time.perf_counter()
    bus.start()
    while sub.cursor < last:
        time.sleep(0.002)
    rate = len(events) / (time.perf_counter() - t)
    delivered, dead = sub.delivered, len(j.dead_letters())
    bus.stop()
    sink.close()
    j.close()
    if delivered != len(events) or dead:
        raise RuntimeError(f"drain incomplete: {delivered} delivered, {dead} dead letters of {len(events)}")
    return rate


def bench_wats_drain(tmp: Path, n: int, rounds: int = 5) -> dict:
    from agent.protocols.wsjf import Station, to_wsjf

    server = subprocess.Popen([sys.executable, "-c", "from tests.wats_standin import serve; serve()"], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url, token = server.stdout.readline().split()
        events = _events(n)
        station = Station(machine_name="bench", location="Bench", purpose="Bench", process_codes={"test": 50})
        bodies = [json.dumps(to_wsjf(e, station)).encode() for e in events]
        bare, agent = [], []
        for r in range(rounds):  # interleaved, best of each: the machine is shared
            bare.append(_bare(url, token, bodies))
            agent.append(_agent(url, token, events, tmp / f"wats-drain-{r}"))
    finally:
        server.stdin.close()
        server.wait(10)
    paired = sorted(a / b for a, b in zip(agent, bare))
    return {"reports": n, "agent_reports_per_s": round(max(agent)), "bare_httpx_posts_per_s": round(max(bare)),
            "ratio_to_bare": round(max(agent) / max(bare), 3), "median_paired_ratio": round(paired[len(paired) // 2], 3),
            "target": ">= 0.8",
            "rounds": {"agent": [round(x) for x in agent], "bare": [round(x) for x in bare]}}


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench_wats_drain(Path(d), int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
