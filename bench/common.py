"""What the uplink benchmarks share: the events they send, draining a journal backlog through a real subscriber,
and summarising interleaved rounds against the raw loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAYLOAD = {"unit_id": "SN2611220001", "result": "pass", "start_time": "2026-11-22T10:00:00Z",
           "part_number": "PCBA-100", "revision": "A", "station_id": "ict-01",
           "steps": [{"name": "VCC", "status": "pass", "measurements": [
               {"name": "VCC_3V3", "status": "pass", "value": 3.301, "unit": "V", "low_limit": 3.2, "high_limit": 3.4,
                "comp_op": "GELE"}]}]}


def test_results(n: int) -> list:
    from agent.events import Event

    return [Event.create("test.result", PAYLOAD, source="bench") for _ in range(n)]


def drain_rate(tmp: Path, events: list, make_sink: Callable[[Any], Any], *,
               connect: Callable[[Any], None] = lambda sink: None,
               close: Callable[[Any], None] = lambda sink: None) -> float:
    """Events/s a durable subscriber delivers from a journal backlog of ``events``: the backlog is written first,
    ``connect(sink)`` is outside the timing, and every event must be delivered (none dead-lettered)."""
    from agent.events import EventBus, Journal

    tmp.mkdir()
    j = Journal(tmp / "journal.db", max_bytes=1 << 34)
    bus = EventBus(j)
    sink = make_sink(j)
    sub = bus.register_handler(sink)
    for k in range(0, len(events), 1000):
        bus.publish_many(events[k:k + 1000])
    last = j.last_seq
    connect(sink)
    t = time.perf_counter()
    bus.start()
    while sub.cursor < last:
        time.sleep(0.002)
    rate = len(events) / (time.perf_counter() - t)
    delivered, dead = sub.delivered, len(j.dead_letters())
    bus.stop()
    close(sink)
    j.close()
    if delivered != len(events) or dead:
        raise RuntimeError(f"{sub.name}: {delivered} delivered, {dead} dead letters of {len(events)}")
    return rate


def against_bare(agent: list[float], bare: list[float]) -> dict[str, Any]:
    """Best of each (the machine is shared), and the median of the per-round ratios."""
    paired = sorted(a / b for a, b in zip(agent, bare))
    return {"ratio_to_bare": round(max(agent) / max(bare), 3), "median_paired_ratio": round(paired[len(paired) // 2], 3),
            "rounds": {"agent": [round(x) for x in agent], "bare": [round(x) for x in bare]}}
