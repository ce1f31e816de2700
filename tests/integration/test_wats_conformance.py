"""The conformance corpus end to end (issue 15): one running agent with every source that reports results — a
fixture controller on a pseudo-terminal, a SCPI instrument (the simulator), the simulated station, test stations
and ESP32s on a real mosquitto, testers and AOIs on a real RabbitMQ, scripts through ``publish --stdin`` — and the
strict WATS stand-in, which refuses what reference/wats-api.md §2 forbids and audits every status it accepts.

Every result the agent journaled must be in WATS, accepted, with no audit finding, except the inputs designed to
be refused, which must be dead letters naming why. On the code before issue 15 this corpus could not even be read
(unknown fields `expected`, `sub_units`; 'NaN' from CFX) and of what could, 17 of 46 reports broke the contract
(a step without a value written as ET_NLT with value null, statuses that ignored the operator, duplicate names).
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
import pytest

from agent import simulator
from tests import wats_corpus
from tests.agent_process import dead_letters, events, source_status, start_agent, stop_agent
from tests.conftest import run_cli, wait_for
from tests.mosquitto import Mosquitto
from tests.rabbitmq import RabbitMQ, send
from tests.wats_standin import WatsStandIn



@pytest.fixture
def parts(tmp_path):
    wats = WatsStandIn()
    broker = Mosquitto(tmp_path / "broker").start()
    rabbit = RabbitMQ(tmp_path / "rabbitmq").start()
    yield wats, broker, rabbit
    rabbit.stop()
    broker.stop()
    wats.close()


def test_every_source_every_shape_reaches_wats_as_wats_defines_it(parts, write_config, tmp_path):
    wats, broker, rabbit = parts
    token = tmp_path / "wats.token"
    token.write_text(wats.token)
    token.chmod(0o600)
    link = tmp_path / "data" / "fixture.tty"
    link.parent.mkdir(exist_ok=True)
    pty = simulator.PtyFixture(link=link)
    cfg = write_config(f"""
[[sources.serial]]
name = "fixture"
port = "{link}"
driver = "jsonl"
asset_id = "FX-9"
reconnect_min = "0.1s"
reconnect_max = "0.5s"
[[sources.serial]]
name = "dmm"
port = "simulator:scpi"
driver = "scpi"
asset_id = "DMM-1"
poll_interval = "0.5s"
[[sources.serial.queries]]
name = "Rail 5V"
command = "MEAS:VOLT:DC?"
unit = "V"
low = 4.75
high = 5.25
[sources.simulated]
asset_id = "ST-1"
part_number = "PCBA-SIM"
interval = "0.3s"
fail_rate = 0.3
seed = 5
[sources.mqtt]
port = {broker.port}
reconnect_min = "0.2s"
reconnect_max = "1s"
[sources.cfx]
url = "{rabbit.url}"
address = "/amq/queue/agent-in"
reconnect_min = "0.2s"
reconnect_max = "1s"
[sinks.wats]
url = "{wats.url}"
token_file = "{token}"
process_codes = {{ test = 50, selftest = 90, poll = 90, ict = 50, inspection = 10, functional = 50 }}
default_part_number = "FIXTURE-9"
requests_per_minute = 1000000
require_clock_sync = false
retry_max = "0.5s"
[[sinks.wats.products]]
match = "{wats_corpus.RULE_RECIPE}*"
part_number = "PCBA-RULED"
revision = "R1"
[[sinks.wats.products]]
match = "{wats_corpus.CFX_RECIPE}*"
part_number = "PCB-4711"
""")
    rng = random.Random(2026)
    now = datetime.now(timezone.utc)
    lines, exp_pub = wats_corpus.published(rng, 60, now)
    msgs, exp_mqtt = wats_corpus.mqtt_messages(rng, 20)
    docs, exp_cfx = wats_corpus.cfx_messages(rng, 16)
    serial, exp_serial = wats_corpus.serial_lines(rng, 8)
    # the journal forgets what every subscriber acknowledged: a subscriber that never reads keeps every result
    from agent.events.journal import Journal

    with Journal(tmp_path / "data" / "journal.db") as j:
        j.register_subscriber("audit")
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: source_status(cfg, "cfx:cfx").get("online")
                        and source_status(cfg, "mqtt:mqtt").get("online"), 30)
        pub = run_cli("publish", "--stdin", "-c", str(cfg), input="\n".join(lines) + "\n")
        assert pub.returncode == 0, pub.stderr
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="corpus-devices")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        for topic, doc in msgs:
            client.publish(topic, json.dumps(doc), qos=1).wait_for_publish(10)
        client.loop_stop()
        client.disconnect()
        from proton.utils import BlockingConnection

        conn = BlockingConnection(rabbit.url, allowed_mechs="ANONYMOUS", timeout=20)
        snd = conn.create_sender("/amq/queue/agent-in")
        for doc in docs:
            send(snd, doc, compress=True)
        conn.close()
        acked: set[int] = set()
        deadline = time.monotonic() + 30
        while len(acked) < len(serial) and time.monotonic() < deadline:  # resend until acknowledged, as a
            for i, line in enumerate(serial):                             # controller does
                if i + 1 not in acked:
                    pty.write(line)
            for reply in pty.read_lines(0.3):
                try:
                    acked.add(json.loads(reply).get("ack"))
                except ValueError:
                    pass
        assert len(acked) >= len(serial)
        designed = exp_pub.reports + exp_mqtt.reports + exp_cfx.reports + exp_serial.reports
        # the simulated station and the SCPI instrument add their own results while this runs
        assert wait_for(lambda: wats.unique_reports >= designed + 20, 60), (wats.unique_reports, wats.rejected[:3])
    finally:
        stop_agent(agent)
        pty.close()
    results = [e for e in events(cfg) if e["event_type"] in ("test.result", "inspection.result")]
    refusals = exp_pub.refusals + exp_mqtt.refusals + exp_cfx.refusals
    dlq = dead_letters(cfg)
    wats_dlq = [d for d in dlq if d["subscriber"] == "wats"]
    assert wats.rejected == []  # the stand-in refused nothing: every report kept the contract
    assert wats.audit == []  # and every status agreed with its value, limits and operator
    assert wats.duplicates() == {} or all(n <= 2 for n in wats.duplicates().values())
    assert {e["metadata"]["event_id"] for e in results} == set(wats.reports) | {d["event_id"] for d in wats_dlq}
    reasons = [d["reason"] for d in dlq]
    for reason in refusals:  # each designed refusal, with the reason it must name
        hit = next((r for r in reasons if reason in r), None)
        assert hit is not None, (reason, reasons)
        reasons.remove(hit)
    print(f"corpus: {len(results)} results journaled, {len(wats.reports)} reports in WATS, {len(wats_dlq)} dead-lettered by the uplink, {len(dlq) - len(wats_dlq)} bad input")
    assert len(wats.reports) >= 100
    sources = {e["metadata"]["source"].split(":")[0] for e in results}
    assert sources >= {"cli", "mqtt", "cfx", "serial", "simulated"}, sources
