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
sys.path.insert(0, str(ROOT / "bench"))

from common import against_bare, drain_rate  # noqa: E402


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
    from agent.sinks.wats_plugin import WatsSinkSection
    from agent.sinks.wats import WatsSink

    tok = tmp.with_name(tmp.name + ".token")
    tok.write_text(token)
    tok.chmod(0o600)
    cfg = msgspec.convert({"url": url, "token_file": str(tok), "process_codes": {"test": 50},
                           "requests_per_minute": 10_000_000, "require_clock_sync": False}, WatsSinkSection)
    return drain_rate(tmp, events, lambda j: WatsSink(cfg, station="bench", location="Bench", purpose="Bench",
                                                       data_dir=tmp, journal=j), close=lambda sink: sink.close())


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
    return {"reports": n, "agent_reports_per_s": round(max(agent)), "bare_httpx_posts_per_s": round(max(bare)),
            **against_bare(agent, bare), "target": ">= 0.8"}

if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench_wats_drain(Path(d), int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
