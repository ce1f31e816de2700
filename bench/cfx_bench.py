"""CFX endpoint: UnitsTested messages/s published from a journal backlog, against a bare proton send loop.

Both send to the same private RabbitMQ node (AMQP 1.0 plugin) at ``/exchange/cfx``, unsettled, counting a message
only when the broker's outcome is Accepted, with the same window of unsettled messages. The bare loop sends
pre-built messages (the same gzip Data bodies and properties) and does nothing else; the agent reads and decodes
the journal, maps each result to UnitsTested, encodes and compresses it, hands it to the container thread, and
moves its cursor in order as outcomes arrive.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 100


def _events(n: int):
    from agent.events import Event

    sys.path.insert(0, str(ROOT / "bench"))
    from run import PAYLOAD

    return [Event.create("test.result", PAYLOAD, source="bench") for _ in range(n)]


def _bare(url: str, messages: list) -> float:
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    class Send(MessagingHandler):
        def __init__(self) -> None:
            super().__init__()
            self.sent = self.accepted = 0
            self.t0 = self.t1 = 0.0

        def on_start(self, event):
            conn = event.container.connect(url, allowed_mechs="ANONYMOUS")
            event.container.create_sender(conn, "/exchange/cfx")

        def on_sendable(self, event):
            if not self.t0:
                self.t0 = time.perf_counter()
            while event.sender.credit and self.sent < len(messages) and self.sent - self.accepted < WINDOW:
                event.sender.send(messages[self.sent])
                self.sent += 1

        def on_accepted(self, event):
            self.accepted += 1
            if self.accepted == len(messages):
                self.t1 = time.perf_counter()
                event.connection.close()
            elif self.sent < len(messages):
                self.on_sendable(event)

    h = Send()
    Container(h).run()
    return len(messages) / (h.t1 - h.t0)


def _agent(url: str, events, tmp: Path) -> float:
    import msgspec

    from agent.config import CfxSinkSection
    from agent.events import EventBus, Journal
    from agent.sinks.cfx import CfxEndpoint

    tmp.mkdir()
    j = Journal(tmp / "journal.db", max_bytes=1 << 34)
    bus = EventBus(j)
    cfg = msgspec.convert({"url": url, "handle": "Bench.Fixture.1", "address": "/exchange/cfx", "window": WINDOW,
                           "heartbeat_interval": 300}, CfxSinkSection)
    ep = CfxEndpoint(cfg, station="bench")
    sub = bus.register_handler(ep)
    for k in range(0, len(events), 1000):
        bus.publish_many(events[k:k + 1000])
    last = j.last_seq
    ep.start()
    if not ep.ready.wait(20):
        raise RuntimeError("CFX endpoint did not connect")
    t = time.perf_counter()
    bus.start()
    while sub.cursor < last:
        time.sleep(0.002)
    rate = len(events) / (time.perf_counter() - t)
    delivered = sub.delivered
    bus.stop()
    ep.stop()
    j.close()
    if delivered != len(events):
        raise RuntimeError(f"CFX publish incomplete: {delivered} of {len(events)}")
    return rate


def bench_cfx(tmp: Path, n: int, rounds: int = 3) -> dict:
    sys.path.insert(0, str(ROOT))
    from proton import Message

    from agent.protocols import cfx
    from agent.protocols.cfx_mapping import to_cfx
    from tests.rabbitmq import RabbitMQ

    broker = RabbitMQ(tmp / "rabbitmq").start()
    try:
        events = _events(n)
        messages = []
        for e in events:
            doc = to_cfx(e, "Bench.Bare.1")
            p = cfx.amqp_properties(doc, compressed=True)
            messages.append(Message(body=cfx.encode(doc, compress=True), inferred=True, durable=True, id=p["id"],
                                    subject=p["subject"], reply_to=p["reply_to"], content_type=p["content_type"],
                                    content_encoding="gzip", properties=p["properties"]))
        bare, agent = [], []
        for r in range(rounds):  # interleaved, best of each: the machine is shared
            bare.append(_bare(broker.url, messages))
            agent.append(_agent(broker.url, events, tmp / f"cfx-{r}"))
    finally:
        broker.stop()
    paired = sorted(a / b for a, b in zip(agent, bare))
    return {"messages": n, "window": WINDOW, "agent_messages_per_s": round(max(agent)),
            "bare_proton_per_s": round(max(bare)), "ratio_to_bare": round(max(agent) / max(bare), 3),
            "median_paired_ratio": round(paired[len(paired) // 2], 3),
            "rounds": {"agent": [round(x) for x in agent], "bare": [round(x) for x in bare]}}


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench_cfx(Path(d), int(sys.argv[1]) if len(sys.argv) > 1 else 3000,
                                   int(sys.argv[2]) if len(sys.argv) > 2 else 2), indent=2))
