"""MQTT, both directions, against bare paho loops on the same private mosquitto in the same run.

* Telemetry: events/s the ``mqtt`` sink publishes from a journal backlog (read, decode, add run/seq, QoS 1
  publish with its window, cursor on PUBACK) against a bare paho loop publishing the same payloads at QoS 1 with
  the same in-flight window (100, cut to the broker's Receive Maximum less 2: 18 with mosquitto's defaults)
  and waiting for every PUBACK.
* Ingest: QoS 1 messages/s the source turns into durable events (decode, adapt, one transaction and fsync per
  batch, then PUBACK) against a bare paho subscriber that acknowledges each message on arrival and keeps
  nothing, both with the same receive maximum. The publisher is the same in both.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import against_bare, drain_rate, test_results  # noqa: E402

WINDOW = 100
RECEIVE_MAXIMUM = 64


def _client(port: int, client_id: str, **kw):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kw)
    c.max_inflight_messages_set(WINDOW)
    c.max_queued_messages_set(0)
    return c


# ------------------------------------------------------------------------------------------------ telemetry
def _receive_maximum(port: int) -> int | None:
    """What the broker says it takes unacknowledged (paho cannot change its window once connected)."""
    got: list = []
    probe = _client(port, "bench-probe")
    probe.on_connect = lambda c, u, f, rc, props: got.append(getattr(props, "ReceiveMaximum", None))
    probe.connect("127.0.0.1", port)
    probe.loop_start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    probe.disconnect()
    probe.loop_stop()
    return got[0] if got else None


def _bare_publish(port: int, payloads: list[bytes]) -> float:
    """Same window as the agent's: the configured 100, cut to what the broker says it takes (less 2)."""
    rm = _receive_maximum(port)
    c = _client(port, "bench-bare-pub")
    c.max_inflight_messages_set(min(WINDOW, rm - 2) if rm else WINDOW)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        t = time.perf_counter()
        infos = [c.publish("bench/events/test.result", p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(60)
        return len(payloads) / (time.perf_counter() - t)
    finally:
        c.disconnect()
        c.loop_stop()


def _agent_publish(port: int, events, tmp: Path) -> float:
    import msgspec

    from agent.sinks.mqtt_plugin import MqttSinkSection
    from agent.sinks.mqtt import MqttTelemetrySink

    cfg = msgspec.convert({"port": port, "window": WINDOW, "health_interval": 3600}, MqttSinkSection)

    def connect(sink) -> None:
        sink.start()
        if not sink.conn.wait_connected(10):
            raise RuntimeError("telemetry sink did not connect")
        _agent_publish.window = sink.window  # type: ignore[attr-defined]

    return drain_rate(tmp, events, lambda j: MqttTelemetrySink(cfg, station="bench", journal=j), connect=connect,
                      close=lambda sink: sink.stop())


# ------------------------------------------------------------------------------------------------ ingest
def _payloads(n: int) -> list[bytes]:
    return [json.dumps({"running_count": i, "total_count": 100000 + i}).encode() for i in range(n)]


def _publish_all(port: int, payloads: list[bytes], done: threading.Event) -> None:
    c = _client(port, "bench-device")
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish("assets/FX-1/counters", p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(120)
    done.set()
    c.disconnect()
    c.loop_stop()


def _bare_subscribe(port: int, payloads: list[bytes]) -> float:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    got = [0]
    all_in = threading.Event()
    c = _client(port, "bench-bare-sub", manual_ack=True)

    def on_message(client, userdata, msg):
        client.ack(msg.mid, msg.qos)
        got[0] += 1
        if got[0] == len(payloads):
            all_in.set()

    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    c.connect("127.0.0.1", port, properties=props)
    c.subscribe("assets/+/counters", qos=1)
    c.loop_start()
    time.sleep(0.3)
    done = threading.Event()
    t = time.perf_counter()
    threading.Thread(target=_publish_all, args=(port, payloads, done), daemon=True).start()
    if not all_in.wait(120):
        raise RuntimeError(f"bare subscriber got {got[0]} of {len(payloads)}")
    rate = len(payloads) / (time.perf_counter() - t)
    c.disconnect()
    c.loop_stop()
    return rate


def _agent_ingest(port: int, payloads: list[bytes], tmp: Path) -> float:
    from agent.config import parse_config
    from agent.events import EventBus, Journal
    from agent.sources.mqtt import MqttSource

    tmp.mkdir()
    cfg = parse_config(f'[agent]\nstation = "bench"\n[sources.mqtt]\nport = {port}\nrate_limit = 1e6\n'
                       f'rate_burst = 1000000\nreceive_maximum = {RECEIVE_MAXIMUM}\nname = "{tmp.name}"\n')
    j = Journal(tmp / "journal.db", max_bytes=1 << 34)
    bus = EventBus(j)
    src = MqttSource(cfg.sources.mqtt, "bench")
    bus.register_transport(src)
    src.start()
    deadline = time.monotonic() + 10
    while not src.is_connected and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the SUBACK
    done = threading.Event()
    t = time.perf_counter()
    threading.Thread(target=_publish_all, args=(port, payloads, done), daemon=True).start()
    deadline = time.monotonic() + 120
    while j.last_seq < len(payloads) and time.monotonic() < deadline:
        time.sleep(0.002)
    rate = j.last_seq / (time.perf_counter() - t)
    got = j.last_seq
    src.stop()
    j.close()
    if got != len(payloads):
        raise RuntimeError(f"ingest incomplete: {got} of {len(payloads)}")
    return rate


def bench_mqtt(tmp: Path, n: int, rounds: int = 3) -> dict:
    sys.path.insert(0, str(ROOT))
    from agent.events.model import encode
    from tests.mosquitto import Mosquitto

    broker = Mosquitto(tmp / "mosquitto").start()
    try:
        events = test_results(n)
        bodies = [encode(e) for e in events]
        payloads = _payloads(n)
        pub_bare, pub_agent, in_bare, in_agent = [], [], [], []
        for r in range(rounds):  # interleaved, best of each: the machine is shared
            pub_bare.append(_bare_publish(broker.port, bodies))
            pub_agent.append(_agent_publish(broker.port, events, tmp / f"mqtt-pub-{r}"))
            in_bare.append(_bare_subscribe(broker.port, payloads))
            in_agent.append(_agent_ingest(broker.port, payloads, tmp / f"mqtt-in-{r}"))
    finally:
        broker.stop()

    return {
        "messages": n,
        "telemetry": {"agent_events_per_s": round(max(pub_agent)), "bare_paho_qos1_per_s": round(max(pub_bare)),
                      "window": getattr(_agent_publish, "window", None), **against_bare(pub_agent, pub_bare),
                      "target": ">= 0.5"},
        "ingest": {"agent_durable_events_per_s": round(max(in_agent)),
                   "bare_paho_ack_only_per_s": round(max(in_bare)), **against_bare(in_agent, in_bare),
                   "receive_maximum": RECEIVE_MAXIMUM},
    }

if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench_mqtt(Path(d), int(sys.argv[1]) if len(sys.argv) > 1 else 5000,
                                    int(sys.argv[2]) if len(sys.argv) > 2 else 2), indent=2))
