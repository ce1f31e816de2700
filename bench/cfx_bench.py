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
sys.path.insert(0, str(ROOT / "bench"))

from common import against_bare, drain_rate, test_results  # noqa: E402

WINDOW = 100


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

    from agent.sinks.cfx_plugin import CfxSinkSection
    from agent.sinks.cfx import CfxEndpoint

    cfg = msgspec.convert({"url": url, "handle": "Bench.Fixture.1", "address": "/exchange/cfx", "window": WINDOW,
                           "heartbeat_interval": 300}, CfxSinkSection)

    def connect(ep) -> None:
        ep.start()
        if not ep.ready.wait(20):
            raise RuntimeError("CFX endpoint did not connect")

    return drain_rate(tmp, events, lambda j: CfxEndpoint(cfg, station="bench"), connect=connect,
                      close=lambda ep: ep.stop())


def bench_cfx(tmp: Path, n: int, rounds: int = 3) -> dict:
    sys.path.insert(0, str(ROOT))
    from agent.protocols.cfx_mapping import to_cfx
    from agent.sinks.cfx import cfx_message
    from tests.rabbitmq import RabbitMQ

    broker = RabbitMQ(tmp / "rabbitmq").start()
    try:
        events = test_results(n)
        messages = [cfx_message(to_cfx(e, "Bench.Bare.1"), compress=True) for e in events]
        bare, agent = [], []
        for r in range(rounds):  # interleaved, best of each: the machine is shared
            bare.append(_bare(broker.url, messages))
            agent.append(_agent(broker.url, events, tmp / f"cfx-{r}"))
    finally:
        broker.stop()
    return {"messages": n, "window": WINDOW, "agent_messages_per_s": round(max(agent)),
            "bare_proton_per_s": round(max(bare)), **against_bare(agent, bare)}

if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench_cfx(Path(d), int(sys.argv[1]) if len(sys.argv) > 1 else 3000,
                                   int(sys.argv[2]) if len(sys.argv) > 2 else 2), indent=2))
