"""CFX ingest against a real RabbitMQ 3.10 with its AMQP 1.0 plugin, started by the tests; the agent as a process."""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
import uuid
from datetime import datetime, timezone

import pytest

from agent.protocols import cfx
from agent.protocols.cfx_samples import SAMPLES
from tests.conftest import run_cli, wait_for
from tests import agent_process
from tests.agent_process import events, start_agent, stop_agent
from tests.mosquitto import make_certs
from tests.rabbitmq import RabbitMQ, envelope_of, send
from tests.wats_standin import WatsStandIn


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory):
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    r = RabbitMQ(tmp_path_factory.mktemp("rabbitmq"), certs=certs).start()
    r.certs = certs
    yield r
    r.stop()


def sender(rabbit, address):
    from proton.utils import BlockingConnection

    conn = BlockingConnection(rabbit.url, allowed_mechs="ANONYMOUS", timeout=20)
    return conn, conn.create_sender(address)


def agent_config(write_config, rabbit, address, extra=""):
    return write_config(f"""
[sources.cfx]
url = "{rabbit.url}"
address = "{address}"
reconnect_min = "0.2s"
reconnect_max = "1s"
{extra}
""")


def source_status(cfg) -> dict:
    return agent_process.source_status(cfg, "cfx:cfx")


def queue_address():
    return f"/queue/t-{uuid.uuid4().hex[:10]}"


def test_units_tested_from_a_tester_reaches_wats_as_a_valid_report(write_config, rabbit, tmp_path):
    wats = WatsStandIn()
    token = tmp_path / "wats.token"
    token.write_text(wats.token)
    token.chmod(0o600)
    cfg = agent_config(write_config, rabbit, "/amq/queue/agent-in", f"""
[sinks.wats]
url = "{wats.url}"
token_file = "{token}"
process_codes = {{ ict = 50, fct = 50 }}
require_clock_sync = false
retry_max = "1s"
[[sinks.wats.products]]
match = "PCB4711_*"
part_number = "PCB4711"
""")
    agent = start_agent(cfg)
    conn, snd = sender(rabbit, "/exchange/plant")  # as equipment publishes: to the exchange, routed by subject
    try:
        assert wait_for(lambda: source_status(cfg).get("online"), 20)
        send(snd, SAMPLES["ict-units-tested"][1], compress=True)  # the SDK's default codec
        assert wait_for(lambda: wats.unique_reports == 1, 20), (wats.unique_reports, source_status(cfg))
    finally:
        conn.close()
        stop_agent(agent)
        wats.close()
    (report,) = wats.reports.values()
    assert report["sn"] == "PNL000123" and report["pn"] == "PCB4711" and report["processCode"] == 50
    assert report["result"] == "F"  # the 3V3 rail below its limit
    assert report["root"]  # the steps (the stand-in refused anything not WSJF)


def test_gzip_array_missing_type_and_bad_messages(write_config, rabbit):
    address = queue_address()
    cfg = agent_config(write_config, rabbit, address)
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: source_status(cfg).get("online"), 20)  # the agent declared the durable queue
        conn, snd = sender(rabbit, "/amq/queue/" + address.rsplit("/", 1)[1])
        # an SDK batch: a JSON array of envelopes in one gzip message
        send(snd, [SAMPLES["temperature-fault"][1], SAMPLES["fault-cleared"][1]], compress=True)
        # a measurement without $type (the SDK itself could not read it)
        doc = json.loads(cfx.encode(SAMPLES["fct-units-tested"][1]))
        del doc["MessageBody"]["TestedUnits"][0]["Tests"][0]["Measurements"][0]["$type"]
        send(snd, doc)
        send(snd, None, raw=b"{this is not json", subject="Acme.Broken.CFX.Heartbeat")
        send(snd, None, raw=gzip.compress(b"[]"), encoding="gzip")
        send(snd, SAMPLES["station-state-changed"][1])  # behind the bad ones: still arrives
        send(snd, SAMPLES["station-state-changed"][1])  # the same UniqueID again (an SDK spool resend)
        hb = cfx.envelope_doc("CFX.Heartbeat", {"CFXHandle": "Acme.X.1", "HeartbeatFrequency": "00:01:00",
                                                "ActiveFaults": [], "ActiveRecipes": []},
                              source="Acme.X.1", when=datetime.now(timezone.utc))
        send(snd, hb)
        conn.close()
        assert wait_for(lambda: source_status(cfg).get("received", 0) >= 7, 20), source_status(cfg)
        st = source_status(cfg)
    finally:
        stop_agent(agent)
    faults = events(cfg, "asset.fault")
    assert [f["payload"].get("cleared", False) for f in faults] == [False, True]
    (fct1, fct2) = events(cfg, "test.result")
    assert any("no $type" in n for n in fct1["payload"]["custom_data"]["cfx"]["notes"])
    assert len(events(cfg, "asset.state_changed")) == 1  # the resend was recognised
    assert st["duplicates"] == 1 and st["bad"] == 2 and st["not_mapped"] == {"CFX.Heartbeat": 1}
    dls = json.loads(run_cli("dlq", "list", "-c", str(cfg), "--json", check=True).stdout)
    assert len(dls) == 2 and "not JSON" in dls[0]["reason"] and "empty array" in dls[1]["reason"]
    assert "Acme.Broken.CFX.Heartbeat" in dls[0]["origin"]  # where it came from


def test_broker_restart_mid_stream_loses_nothing_and_duplicates_nothing(write_config, rabbit):
    address = queue_address()
    cfg = agent_config(write_config, rabbit, address)
    agent = start_agent(cfg)
    sent = []
    try:
        assert wait_for(lambda: source_status(cfg).get("online"), 20)
        target = "/amq/queue/" + address.rsplit("/", 1)[1]
        conn, snd = sender(rabbit, target)
        base = SAMPLES["work-started"][1]
        for i in range(200):
            doc = json.loads(cfx.encode(base))
            doc["UniqueID"] = str(uuid.uuid4())
            doc["MessageBody"]["PrimaryIdentifier"] = f"PNL{i:06d}"
            send(snd, doc)
            sent.append(doc["MessageBody"]["PrimaryIdentifier"])
            if i == 100:
                conn.close()
                rabbit.stop()  # mid-stream; the queue and its persistent messages survive
                rabbit.start()
                conn, snd = sender(rabbit, target)
        conn.close()
        assert wait_for(lambda: len(events(cfg, "production.work_started")) >= 200, 60), source_status(cfg)
        time.sleep(1.0)
    finally:
        stop_agent(agent)
    got = sorted(e["payload"]["unit_id"] for e in events(cfg, "production.work_started"))
    assert got == sorted(sent)  # none lost, none twice


# ---------------------------------------------------------------------------------------------------- the endpoint
HANDLE = "Acme.Fixture.PI7"


def consume(rabbit, address, want, timeout=30.0):
    """Messages from ``address`` until ``want(messages)`` is true (proton Message objects, accepted)."""
    from proton.utils import BlockingConnection

    conn = BlockingConnection(rabbit.url, allowed_mechs="ANONYMOUS", timeout=20)
    rcv = conn.create_receiver(address, credit=100)
    got = []
    deadline = time.monotonic() + timeout
    try:
        while not want(got) and time.monotonic() < deadline:
            try:
                m = rcv.receive(timeout=1.0)
            except Exception:  # noqa: BLE001 - a receive timeout: look again
                continue
            rcv.accept()
            got.append(m)
    finally:
        conn.close()
    return got


def names(msgs):
    return [envelope_of(m).message_name for m in msgs]


def endpoint_config(write_config, rabbit, listen_port):
    return write_config(f"""
[sinks.cfx]
url = "{rabbit.url}"
address = "/exchange/cfx"
handle = "{HANDLE}"
heartbeat_interval = "1s"
listen = "127.0.0.1:{listen_port}"
reconnect_min = "0.2s"
reconnect_max = "1s"
""")


def test_own_events_are_published_as_cfx_with_the_sdk_properties(write_config, rabbit):
    from tests.conftest import free_port

    consume(rabbit, "/amq/queue/mes", lambda g: False, timeout=1)  # whatever an earlier test left
    cfg = endpoint_config(write_config, rabbit, free_port())
    agent = start_agent(cfg)
    try:
        result = {"unit_id": "SN-77", "result": "fail", "start_time": "2026-11-23T10:00:00Z",
                  "steps": [{"name": "VCC", "status": "fail", "measurements": [
                      {"name": "VCC", "status": "fail", "value": 3.6, "unit": "V", "low_limit": 3.2,
                       "high_limit": 3.4, "comp_op": "GELE"}]}], "custom_data": {"test_type": "fct"}}
        ids = run_cli("publish", "-c", str(cfg), "--type", "test.result", "--payload", json.dumps(result),
                      check=True).stdout.split()
        run_cli("publish", "-c", str(cfg), "--type", "asset.fault", "--payload", json.dumps(
            {"asset_id": "FX-1", "fault_code": "E7", "fault_message": "vacuum low", "timestamp": "2026-11-23T10:00:01Z"}),
            check=True)
        got = consume(rabbit, "/amq/queue/mes", lambda g: {"CFX.Production.TestAndInspection.UnitsTested",
                                                           "CFX.ResourcePerformance.FaultOccurred",
                                                           "CFX.Heartbeat"} <= set(names(g)))
    finally:
        stop_agent(agent)
    assert names(got)[0] == "CFX.EndpointConnected"
    tested = next(m for m in got if envelope_of(m).short_name == "UnitsTested")
    env = envelope_of(tested)
    assert env.unique_id == ids[0] and tested.id == ids[0]  # message-id = UniqueID = the event id
    assert tested.subject == f"{HANDLE}.CFX.Production.TestAndInspection.UnitsTested"
    assert tested.content_encoding == "gzip" and tested.durable and tested.reply_to == HANDLE
    assert tested.properties == {"cfx-topic": "CFX.Production.TestAndInspection",
                                 "cfx-message": "CFX.Production.TestAndInspection.UnitsTested",
                                 "cfx-handle": HANDLE, "cfx-target": None}
    unit = env.body["TestedUnits"][0]
    assert unit["UnitIdentifier"] == "SN-77" and unit["OverallResult"] == "Failed"
    meas = unit["Tests"][0]["Measurements"][0]
    assert meas["$type"] == "CFX.Structures.NumericMeasurement, CFX" and meas["MeasuredValue"]["Value"] == 3.6
    assert env.body["TestMethod"] == "FCT"
    shutdown = consume(rabbit, "/amq/queue/mes", lambda g: "CFX.EndpointShuttingDown" in names(g), timeout=10)
    assert "CFX.EndpointShuttingDown" in names(shutdown)


def test_requests_are_answered_the_way_the_sdk_asks(write_config, rabbit):
    from proton import Message
    from proton.reactor import LinkOption
    from proton.utils import BlockingConnection

    from tests.conftest import free_port

    port = free_port()
    cfg = endpoint_config(write_config, rabbit, port)
    agent = start_agent(cfg)
    me = "Plant.MES.Main"
    try:
        def listening():
            try:
                BlockingConnection(f"amqp://127.0.0.1:{port}", timeout=2, allowed_mechs="ANONYMOUS").close()
                return True
            except Exception:  # noqa: BLE001
                return False

        assert wait_for(listening, 20)
        reply_addr = f"{me}-{uuid.uuid4()}"

        class ReplyTarget(LinkOption):
            def apply(self, link):
                link.target.address = reply_addr

        conn = BlockingConnection(f"amqp://127.0.0.1:{port}", timeout=10, allowed_mechs="ANONYMOUS")
        rcv = conn.create_receiver(HANDLE, name="request-receiver", options=ReplyTarget(), credit=10)
        snd = conn.create_sender(HANDLE, name=reply_addr)

        def ask(name, body):
            req = cfx.envelope_doc(name, body, source=me, target=HANDLE, when=datetime.now(timezone.utc),
                                   request_id=f"REQUEST-{uuid.uuid4()}")
            snd.send(Message(body=cfx.encode(req, compress=True), inferred=True, id="command-request",
                             reply_to=reply_addr, correlation_id=req["RequestID"], content_encoding="gzip",
                             content_type=cfx.CONTENT_TYPE, properties={"offset": 1}))
            reply = rcv.receive(timeout=10)
            rcv.accept()
            return req, reply

        req, reply = ask("CFX.AreYouThereRequest", {"CFXHandle": HANDLE})
        env = envelope_of(reply)
        assert reply.correlation_id == "command-request"  # the request's message-id, as the SDK answers
        assert env.message_name == "CFX.AreYouThereResponse" and env.request_id == req["RequestID"]
        assert env.source == HANDLE and env.target == me and env.body["Result"]["Result"] == "Success"
        _, reply = ask("CFX.GetEndpointInformationRequest", {"CFXHandle": HANDLE})
        info = envelope_of(reply).body["EndpointInformation"]
        assert info["CFXHandle"] == HANDLE and info["RequestTargetAddress"] == HANDLE
        assert any(t["TopicName"] == "CFX.Production.TestAndInspection" for t in info["SupportedTopics"])
        _, reply = ask("CFX.InformationSystem.UnitValidation.ValidateUnitsRequest", {"PrimaryUnitIdentifier": "X"})
        env = envelope_of(reply)
        assert env.message_name == "CFX.NotSupportedResponse" and env.body["RequestResult"]["Result"] == "Failed"
        conn.close()
    finally:
        stop_agent(agent)


def test_tls_and_sasl_plain_from_config_and_wrong_password_reported_without_it(write_config, rabbit, tmp_path):
    pw = tmp_path / "cfx.password"
    pw.write_text("wrong-Pa55\n")
    pw.chmod(0o600)
    address = queue_address()
    cfg = write_config(f"""
[sources.cfx]
url = "{rabbit.tls_url}"
ca_file = "{rabbit.certs['ca.crt']}"
username = "fixture"
password_file = "{pw}"
address = "{address}"
reconnect_min = "0.2s"
reconnect_max = "1s"
""")
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: "unauthorized" in (source_status(cfg).get("last_error") or "").lower()
                        or "auth" in (source_status(cfg).get("last_error") or "").lower(), 20), source_status(cfg)
        assert not source_status(cfg).get("online")
    finally:
        err = stop_agent(agent)
    assert "wrong-Pa55" not in err and "wrong-Pa55" not in json.dumps(source_status(cfg))
    pw.write_text("fx-Pa55\n")  # the right one: over TLS (verified against the test CA), SASL PLAIN
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: source_status(cfg).get("online"), 20), source_status(cfg)
        conn, snd = sender(rabbit, "/amq/queue/" + address.rsplit("/", 1)[1])
        send(snd, SAMPLES["fct-units-tested"][1], compress=True)
        conn.close()
        assert wait_for(lambda: len(events(cfg, "test.result")) == 2, 20)
    finally:
        err = stop_agent(agent)
    assert "fx-Pa55" not in err


def test_tls_verification_is_on_by_default(write_config, rabbit):
    cfg = write_config(f"""
[sources.cfx]
url = "{rabbit.tls_url}"
address = "{queue_address()}"
reconnect_min = "0.2s"
reconnect_max = "1s"
""")  # no ca_file: the system's CAs do not know the test CA
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: "certificate" in (source_status(cfg).get("last_error") or "").lower(), 20), \
            source_status(cfg)
        assert not source_status(cfg).get("online")
    finally:
        stop_agent(agent)


def test_endpoint_across_a_broker_restart_every_result_arrives(write_config, rabbit):
    from tests.conftest import free_port

    consume(rabbit, "/amq/queue/mes", lambda g: False, timeout=1)  # whatever an earlier test left
    cfg = endpoint_config(write_config, rabbit, free_port())
    agent = start_agent(cfg)
    line = json.dumps({"type": "test.result", "payload": {"unit_id": "SN", "result": "pass",
                                                          "start_time": "2026-11-23T10:00:00Z"}}) + "\n"
    try:
        ids = run_cli("publish", "-c", str(cfg), "--stdin", input=line * 60, check=True).stdout.split()
        time.sleep(0.3)  # some on their way
        rabbit.stop()
        ids += run_cli("publish", "-c", str(cfg), "--stdin", input=line * 60, check=True).stdout.split()
        time.sleep(1.0)  # the endpoint retries meanwhile; the journal holds them
        rabbit.start()
        got = consume(rabbit, "/amq/queue/mes", lambda g: set(ids) <= {envelope_of(m).unique_id for m in g}, 60)
    finally:
        stop_agent(agent)
    received = [envelope_of(m).unique_id for m in got]
    assert set(ids) <= set(received), f"{len(set(ids) - set(received))} of {len(ids)} missing"


def test_while_the_journal_refuses_no_more_than_credit_is_held(rabbit, tmp_path, monkeypatch):
    """In process: credit is granted only as messages are accepted, so a refusing journal cannot pull the whole
    queue into memory."""
    from agent.config import parse_config
    from agent.events import EventBus, Journal
    from agent.events.journal import JournalFull
    from agent.sources.cfx import CfxSource

    address = queue_address()
    cfg = parse_config(f'[agent]\nstation = "s"\n[sources.cfx]\nurl = "{rabbit.url}"\naddress = "{address}"\n'
                       'credit = 10\n').sources.cfx
    j = Journal(tmp_path / "j.db")
    bus = EventBus(j)
    src = CfxSource(cfg, "s")
    bus.register_transport(src)
    refusing = [True]
    real = bus.publish_many

    def maybe(events, **kw):
        if refusing[0]:
            raise JournalFull("journal is full")
        return real(events, **kw)

    monkeypatch.setattr(bus, "publish_many", maybe)
    monkeypatch.setattr("agent.sources.cfx.backoff_delay", lambda *a, **k: 0.5)
    src.start()
    try:
        assert wait_for(lambda: src.is_connected, 20)
        conn, snd = sender(rabbit, "/amq/queue/" + address.rsplit("/", 1)[1])
        for i in range(40):
            doc = json.loads(cfx.encode(SAMPLES["work-started"][1]))
            doc["UniqueID"] = str(uuid.uuid4())
            send(snd, doc)
        conn.close()
        time.sleep(2.0)
        assert src.counts["received"] == 10  # the credit, and no more, while nothing could be accepted
        refusing[0] = False
        assert wait_for(lambda: src.counts["journaled"] == 40, 20), dict(src.counts)
    finally:
        src.stop()
        j.close()


# ---------------------------------------------------------------------------------------------------- the plant
# One broker as plants run it (issue 16): testers and the agent's endpoint publish to the exchange "site"; the
# agent's ingest reads "site-agent", bound to all of it (so the agent's own messages arrive there too); the MES
# reads "site-mes" with the usual binding #.CFX.Production.TestAndInspection.#, which matches the agent's subject.
TESTER = "Acme.ICT3070.SN40117"  # the samples' sender


def plant_config(write_config, rabbit, *, extra_sink="", extra_source="", listen_port=None):
    listen = f'listen = "127.0.0.1:{listen_port}"' if listen_port else ""
    return write_config(f"""
[sources.cfx]
url = "{rabbit.url}"
address = "/amq/queue/site-agent"
reconnect_min = "0.2s"
reconnect_max = "1s"
{extra_source}
[sinks.cfx]
url = "{rabbit.url}"
address = "/exchange/site"
handle = "{HANDLE}"
heartbeat_interval = "1s"
reconnect_min = "0.2s"
reconnect_max = "1s"
{listen}
{extra_sink}
""")


def fresh(name):
    """A sample as a tester sends it, with a UniqueID of its own."""
    doc = json.loads(cfx.encode(SAMPLES[name][1]))
    doc["UniqueID"] = str(uuid.uuid4())
    return doc


def drain(rabbit, address):
    consume(rabbit, address, lambda g: False, timeout=1)  # whatever an earlier test left


def wait_endpoint_up(rabbit, address, timeout=30):
    got = consume(rabbit, address, lambda g: "CFX.EndpointConnected" in names(g), timeout)
    assert "CFX.EndpointConnected" in names(got), names(got)


def wait_own_arrived(cfg):
    """The endpoint is up once its first message (EndpointConnected) reached the agent's own ingest."""
    assert wait_for(lambda: source_status(cfg).get("received", 0) >= 1, 30), source_status(cfg)


def test_one_units_tested_stays_one_event_on_a_plant_broker(write_config, rabbit):
    """16.1: source and endpoint on one broker, the ingest bound to everything, the MES bound as MESes are: one
    UnitsTested from a tester is one event per unit, for good (today's code made thousands in 10 s), the MES gets
    the tester's message once and nothing under the agent's handle for it; the agent's own result still goes out
    once and is not read back."""
    drain(rabbit, "/amq/queue/site-mes")
    drain(rabbit, "/amq/queue/site-agent")
    cfg = plant_config(write_config, rabbit)
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: source_status(cfg).get("online"), 20)
        wait_own_arrived(cfg)
        conn, snd = sender(rabbit, "/exchange/site")
        tested = fresh("ict-units-tested")
        send(snd, tested, compress=True)
        for name in ("station-state-changed", "temperature-fault", "fault-cleared"):
            send(snd, fresh(name))
        conn.close()
        own = run_cli("publish", "-c", str(cfg), "--type", "test.result", "--payload", json.dumps(
            {"unit_id": "SN-OWN", "result": "pass", "start_time": "2026-11-23T10:00:00Z"}), check=True).stdout.split()
        mes = consume(rabbit, "/amq/queue/site-mes", lambda g: False, timeout=10)  # count for 10 s
        st = source_status(cfg)
    finally:
        stop_agent(agent)
    # (the journal deletes what every subscriber acknowledged: the source's own count says what it journaled)
    units = len(tested["MessageBody"]["TestedUnits"])
    assert st["journaled"] == units + 3, f"{st['journaled']} events from one UnitsTested, one state, two faults"
    assert [envelope_of(m).source for m in mes] == [TESTER, HANDLE], [(envelope_of(m).source, m.subject) for m in mes]
    mine = envelope_of(mes[1])
    assert mine.unique_id == own[0] and mine.body["TestedUnits"][0]["UnitIdentifier"] == "SN-OWN"
    assert st["own_messages"] >= 2 and not st.get("loops")  # its own UnitsTested, EndpointConnected, heartbeats


def test_others_events_are_not_published_as_the_fixtures_own(write_config, rabbit):
    """16.2: a tester's results, state changes and faults never go out under the agent's handle (today: all of
    them did, stripped of RecipeName, symptoms and defects folded into text)."""
    drain(rabbit, "/amq/queue/mes")
    cfg = agent_config(write_config, rabbit, "/amq/queue/agent-in", f"""
[sinks.cfx]
url = "{rabbit.url}"
address = "/exchange/cfx"
handle = "{HANDLE}"
heartbeat_interval = "5m"
""")
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: source_status(cfg).get("online"), 20)
        wait_endpoint_up(rabbit, "/amq/queue/mes")
        conn, snd = sender(rabbit, "/exchange/plant")
        for name in ("ict-units-tested", "fct-units-tested", "station-state-changed", "temperature-fault",
                     "fault-cleared"):
            send(snd, fresh(name))
        conn.close()
        assert wait_for(lambda: source_status(cfg).get("journaled", 0) >= 5, 20), source_status(cfg)
        out = consume(rabbit, "/amq/queue/mes", lambda g: False, timeout=4)  # what the endpoint published
    finally:
        stop_agent(agent)
    published = [n for n in names(out) if n not in ("CFX.Heartbeat", "CFX.EndpointConnected",
                                                    "CFX.EndpointShuttingDown")]
    assert published == [], published


def test_republish_relays_others_events_with_their_origin(write_config, rabbit):
    """16.2 with ``republish = true``: the tester's message goes on as the tester wrote it (its handle, UniqueID,
    RecipeName, symptoms and defects as CFX structures), marked as relayed, and coming back it is not read
    again."""
    drain(rabbit, "/amq/queue/site-mes")
    drain(rabbit, "/amq/queue/site-agent")
    cfg = plant_config(write_config, rabbit, extra_sink="republish = true")
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: source_status(cfg).get("online"), 20)
        wait_own_arrived(cfg)
        conn, snd = sender(rabbit, "/amq/queue/site-agent")  # straight to the agent: the MES sees only the relay
        tested = fresh("ict-units-tested")
        send(snd, tested, compress=True)
        conn.close()
        mes = consume(rabbit, "/amq/queue/site-mes", lambda g: False, timeout=8)
        st = source_status(cfg)
    finally:
        stop_agent(agent)
    assert len(mes) == 1, [(envelope_of(m).source, m.properties) for m in mes]
    relay, env = mes[0], envelope_of(mes[0])
    assert relay.properties["fixture-agent-relayed-by"] == HANDLE
    assert env.source == TESTER and env.unique_id == tested["UniqueID"].lower()
    assert relay.subject == f"{TESTER}.CFX.Production.TestAndInspection.UnitsTested"
    sent = tested["MessageBody"]
    assert env.body["RecipeName"] == sent["RecipeName"]
    got_tests, sent_tests = env.body["TestedUnits"][0]["Tests"], sent["TestedUnits"][0]["Tests"]
    assert [t["SymptomsFound"] for t in got_tests] == [t["SymptomsFound"] for t in sent_tests]
    assert [t["DefectsFound"] for t in got_tests] == [t["DefectsFound"] for t in sent_tests]
    assert any(t["SymptomsFound"] for t in got_tests) and any(t["DefectsFound"] for t in got_tests)
    assert [t["Error"] for t in got_tests] == [t["Error"] for t in sent_tests]  # not folded into text
    assert st["journaled"] == len(sent["TestedUnits"]) and st["own_messages"] >= 1


def test_two_relays_bound_to_each_other_stop_the_loop_and_say_so(write_config, rabbit, tmp_path):
    """16.1, a loop of another shape: agent A reads relay1 and relays to relay2, agent B reads relay2 and relays
    to relay1. One UnitsTested makes one event at each, the loop is stopped at the first return and said: an
    error in the log, ``loops`` in status, the bad-input metric."""
    for q in ("q1", "q2", "mes1", "mes2"):
        drain(rabbit, f"/amq/queue/{q}")

    def relay(name, source_q, sink_x, handle):
        d = tmp_path / name
        d.mkdir()
        cfg = d / "agent.toml"
        cfg.write_text(f"""
[agent]
station = "{name}"
data_dir = "{d / 'data'}"
[metrics]
enabled = false
[sources.cfx]
url = "{rabbit.url}"
address = "/amq/queue/{source_q}"
reconnect_min = "0.2s"
reconnect_max = "1s"
[sinks.cfx]
url = "{rabbit.url}"
address = "/exchange/{sink_x}"
handle = "{handle}"
heartbeat_interval = "5m"
republish = true
reconnect_min = "0.2s"
reconnect_max = "1s"
""")
        return cfg

    a = relay("a", "q1", "relay2", "Acme.Relay.A")
    b = relay("b", "q2", "relay1", "Acme.Relay.B")
    agents = [start_agent(a), start_agent(b)]
    errs = []
    try:
        assert wait_for(lambda: agent_process.source_status(a, "cfx:cfx").get("online")
                        and agent_process.source_status(b, "cfx:cfx").get("online"), 20)
        wait_endpoint_up(rabbit, "/amq/queue/mes2")
        wait_endpoint_up(rabbit, "/amq/queue/mes1")
        conn, snd = sender(rabbit, "/exchange/relay1")
        tested = fresh("fct-units-tested")
        send(snd, tested)
        conn.close()
        on_relay1 = consume(rabbit, "/amq/queue/mes1", lambda g: False, timeout=10)
        sa = agent_process.source_status(a, "cfx:cfx")
        sb = agent_process.source_status(b, "cfx:cfx")
    finally:
        errs = [stop_agent(x) for x in agents]
    units = len(tested["MessageBody"]["TestedUnits"])
    assert sa["journaled"] == units and sb["journaled"] == units, (sa, sb)
    tested_on_relay1 = [m for m in on_relay1 if envelope_of(m).short_name == "UnitsTested"]
    assert len(tested_on_relay1) == 1 + units  # the tester's, and B's relay of it: nothing after
    assert sa["loops"] == units and "Acme.Relay.A > Acme.Relay.B" in sa["loop_last"]
    assert "message loop" in errs[0]


# ---------------------------------------------------------------------------------------------------- requests
def requester(port, address=HANDLE, me="Plant.MES.Main"):
    """(connection, receiver, sender, reply address) attached the way the SDK's requester attaches them."""
    from proton.reactor import LinkOption
    from proton.utils import BlockingConnection

    reply_addr = f"{me}-{uuid.uuid4()}"

    class ReplyTarget(LinkOption):
        def apply(self, link):
            link.target.address = reply_addr

    conn = BlockingConnection(f"amqp://127.0.0.1:{port}", timeout=10, allowed_mechs="ANONYMOUS")
    rcv = conn.create_receiver(address, name="request-receiver", options=ReplyTarget(), credit=10)
    snd = conn.create_sender(address, name=reply_addr)
    return conn, rcv, snd, reply_addr


def request_message(name, body, reply_addr, *, target=HANDLE, me="Plant.MES.Main", raw=None):
    from proton import Message

    req = cfx.envelope_doc(name, body, source=me, target=target, when=datetime.now(timezone.utc),
                           request_id=f"REQUEST-{uuid.uuid4()}")
    return Message(body=raw if raw is not None else cfx.encode(req, compress=True), inferred=True,
                   id="command-request", reply_to=reply_addr, correlation_id=req["RequestID"],
                   content_encoding=None if raw is not None else "gzip", content_type=cfx.CONTENT_TYPE,
                   properties={"offset": 1})


def listening(port):
    from proton.utils import BlockingConnection

    try:
        BlockingConnection(f"amqp://127.0.0.1:{port}", timeout=2, allowed_mechs="ANONYMOUS").close()
        return True
    except Exception:  # noqa: BLE001
        return False


def test_requests_for_another_handle_are_refused_as_the_sdk_refuses_them(write_config, rabbit):
    """16.3: a link to another endpoint's address is refused (amqp:not-found, "No processor was found at …", as
    the SDK's AMQP host answers), and a request on our link whose Target is another handle is rejected; today
    both were answered as if they were ours."""
    from proton.utils import LinkDetached, SendException

    from tests.conftest import free_port

    port = free_port()
    cfg = endpoint_config(write_config, rabbit, port)
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: listening(port), 20)
        with pytest.raises(LinkDetached) as refused:
            requester(port, address="Other.Vendor.SN9")
        assert "amqp:not-found" in str(refused.value) and "No processor was found at Other.Vendor.SN9" in \
            str(refused.value)
        conn, rcv, snd, reply_addr = requester(port)
        with pytest.raises(SendException):  # rejected
            snd.send(request_message("CFX.AreYouThereRequest", {"CFXHandle": "Other.Vendor.SN9"}, reply_addr,
                                     target="Other.Vendor.SN9"))
        snd.send(request_message("CFX.AreYouThereRequest", {"CFXHandle": HANDLE}, reply_addr,
                                 target=HANDLE.lower()))  # handles match without regard to case, as the SDK's
        reply = rcv.receive(timeout=10)
        rcv.accept()
        assert envelope_of(reply).source == HANDLE  # the only answer: the one for us
        conn.close()
    finally:
        stop_agent(agent)


def agent_fds(agent) -> int:
    return len(os.listdir(f"/proc/{agent.pid}/fd"))


def test_the_request_listener_bounds_and_times_out_its_connections(write_config, rabbit):
    """23.2: 300 idle connections neither take the agent's file descriptors (more than listen_max_connections are
    closed at once, the others after listen_idle_timeout) nor keep a requester out for long."""
    from tests.conftest import free_port

    port = free_port()
    cfg = write_config(f"""
[sinks.cfx]
url = "{rabbit.url}"
address = "/exchange/cfx"
handle = "{HANDLE}"
listen = "127.0.0.1:{port}"
listen_max_connections = 4
listen_idle_timeout = "2s"
""")
    agent = start_agent(cfg)
    socks = []
    try:
        assert wait_for(lambda: listening(port), 20)
        time.sleep(0.5)
        before = agent_fds(agent)
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port))
            s.settimeout(0.05)
            socks.append(s)
        time.sleep(1.0)
        assert agent_fds(agent) < before + 20, f"{before} -> {agent_fds(agent)} open files"

        def closed(s):
            try:
                return s.recv(65536) == b"" or closed(s)
            except socket.timeout:
                return False
            except OSError:
                return True

        assert wait_for(lambda: all(closed(s) for s in socks), 10), sum(not closed(s) for s in socks)
        conn, rcv, snd, reply_addr = requester(port)  # answered again
        snd.send(request_message("CFX.AreYouThereRequest", {"CFXHandle": HANDLE}, reply_addr))
        assert envelope_of(rcv.receive(timeout=10)).message_name == "CFX.AreYouThereResponse"
        conn.close()
    finally:
        for s in socks:
            s.close()
        err = stop_agent(agent)
    assert "Traceback" not in err


def test_a_dead_amqp_thread_reaches_the_thread_death_hook(monkeypatch):
    """23.2: a proton container that dies (an exception of proton's own, such as an accept that failed for want
    of file descriptors) ends its thread through ``threading.excepthook``, which the runtime turns into a stop
    with exit 70 (``Agent._thread_died``); today the container thread logged one line and ended quietly, and CFX
    stopped while the agent ran on. A container that ends without being asked to is a death too."""
    import threading

    from agent.connections.amqp import ContainerDied, ContainerThread

    died = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append((args.thread.name, args.exc_type)))

    class Broken:  # an exception escaping the container, as proton's own do
        def on_reactor_init(self, event):
            raise OSError(24, "Too many open files")

    t = ContainerThread(Broken(), "Acme.Broken.1", "sink-cfx")
    t.start()
    assert wait_for(lambda: died, 10) and died == [("sink-cfx", OSError)]

    class Quiet:  # returns from run() although nobody stopped it
        def on_reactor_init(self, event):
            event.container.stop()

    t = ContainerThread(Quiet(), "Acme.Quiet.1", "source-cfx:cfx")
    t.start()
    assert wait_for(lambda: len(died) == 2, 10) and died[1] == ("source-cfx:cfx", ContainerDied)


def listening_socket(agent, port) -> bool:
    """Is the agent listening on ``port`` (without connecting: the accept would kill it here)?"""
    inodes = set()
    for fd in os.listdir(f"/proc/{agent.pid}/fd"):
        try:
            inodes.add(os.readlink(f"/proc/{agent.pid}/fd/{fd}"))
        except FileNotFoundError:
            pass  # closed between the listing and the read: the agent runs on while we look
    for line in open("/proc/net/tcp").readlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[3] == "0A" and f"socket:[{f[9]}]" in inodes:
            return True
    return False


def test_the_runtime_stops_with_exit_70_when_the_cfx_thread_dies(write_config, rabbit, tmp_path):
    """23.2 with the agent as a process: its CFX container killed from inside (a sitecustomize makes proton's
    accept fail as it does without file descriptors) stops the agent with exit 70."""
    import subprocess

    from tests.conftest import ROOT, cli_cmd, free_port

    port = free_port()
    cfg = endpoint_config(write_config, rabbit, port)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import proton._io as io\n"
        "def accept(s):\n"
        "    raise OSError(24, 'Too many open files')\n"
        "io.IO.accept = staticmethod(accept)\n")
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    agent = subprocess.Popen(cli_cmd("run", "-c", str(cfg)), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert wait_for(lambda: listening_socket(agent, port), 20)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            pass
        assert wait_for(lambda: agent.poll() is not None, 20), "the agent runs on without its AMQP thread"
        _, err = agent.communicate(timeout=10)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 70, err[-2000:]
    assert "thread sink-cfx died" in err


# ---------------------------------------------------------------------------------------------------- bombs
def vm_hwm_mb(agent) -> float:
    for line in open(f"/proc/{agent.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_size_and_decompression_bombs_are_settled_dead_letters(write_config, rabbit):
    """23.3: a gzip body that inflates to 200 MB and a 60 MB message are dead letters, settled once (not
    redelivered), without the agent's memory following them; the message behind them is journaled. Today the
    bomb was inflated whole (and a larger one killed the agent before it settled, in a redelivery loop)."""
    address = queue_address()
    cfg = agent_config(write_config, rabbit, address, 'max_message_bytes = "256KB"\nmax_inflated_bytes = "4MB"')
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: source_status(cfg).get("online"), 20)
        time.sleep(1.0)
        base = vm_hwm_mb(agent)
        conn, snd = sender(rabbit, "/amq/queue/" + address.rsplit("/", 1)[1])
        bomb = fresh("fct-units-tested")
        bomb["MessageBody"]["TestedUnits"][0]["Tests"][0]["Comments"] = "A" * 200_000_000
        packed = gzip.compress(cfx.encode(bomb), 9)
        assert len(packed) < 256 * 1024  # under max_message_bytes: only its inflated size is wrong
        send(snd, None, raw=packed, encoding="gzip", subject="Acme.Bomb.CFX.Production.TestAndInspection.UnitsTested")
        send(snd, None, raw=b"[" + b" " * 60_000_000 + b"]", subject="Acme.Huge.CFX.Heartbeat")
        send(snd, fresh("station-state-changed"))
        conn.close()
        assert wait_for(lambda: len(events(cfg, "asset.state_changed")) == 1, 30), source_status(cfg)
        time.sleep(3.0)  # a redelivery would show as more received
        st = source_status(cfg)
        grew = vm_hwm_mb(agent) - base
    finally:
        err = stop_agent(agent)
    dls = agent_process.dead_letters(cfg)
    assert len(dls) == 2, [d["reason"] for d in dls]
    assert "inflates to more than 4000000 bytes" in dls[0]["reason"]
    assert "larger than max_message_bytes" in dls[1]["reason"]
    assert st["received"] == 3 and st["bad"] == 2
    assert grew < 40, f"peak memory grew by {grew:.0f} MB"
    assert "Traceback" not in err


def test_oversize_and_bomb_requests_are_refused_without_buffering(write_config, rabbit):
    """23.3, the request listener: a 50 MB request is refused while it arrives (today it was buffered whole),
    and the listener still answers."""
    from proton.utils import SendException

    from tests.conftest import free_port

    port = free_port()
    cfg = endpoint_config(write_config, rabbit, port)
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: listening(port), 20)
        time.sleep(0.5)
        base = vm_hwm_mb(agent)
        conn, rcv, snd, reply_addr = requester(port)
        with pytest.raises(SendException):
            snd.send(request_message("CFX.AreYouThereRequest", {}, reply_addr, raw=b"{" + b" " * 50_000_000 + b"}"),
                     timeout=60)
        grew = vm_hwm_mb(agent) - base
        snd.send(request_message("CFX.AreYouThereRequest", {"CFXHandle": HANDLE}, reply_addr))
        assert envelope_of(rcv.receive(timeout=10)).message_name == "CFX.AreYouThereResponse"
        conn.close()
    finally:
        err = stop_agent(agent)
    assert grew < 30, f"peak memory grew by {grew:.0f} MB"
    assert "Traceback" not in err


def nested(depth: int) -> bytes:
    env = cfx.envelope_doc("CFX.Production.WorkStarted", {"PrimaryIdentifier": "X"}, source="Acme.Deep.1",
                           when=datetime.now(timezone.utc))
    doc = cfx.encode(env)
    return doc.replace(b'"X"', b"[" * depth + b"]" * depth, 1)


def test_json_nested_too_deep_is_a_decode_error(write_config, rabbit):
    """23.11 (CFX): deeply nested JSON is bad input like any other: a dead letter saying so at the source, a
    rejected request at the listener, no traceback (today: "internal error: RecursionError" with a traceback, and
    a request never settled)."""
    from proton.utils import SendException

    from tests.conftest import free_port

    port = free_port()
    address = queue_address()
    cfg = write_config(f"""
[sources.cfx]
url = "{rabbit.url}"
address = "{address}"
reconnect_min = "0.2s"
reconnect_max = "1s"
[sinks.cfx]
url = "{rabbit.url}"
address = "/exchange/cfx"
handle = "{HANDLE}"
listen = "127.0.0.1:{port}"
""")
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: source_status(cfg).get("online"), 20)
        conn, snd = sender(rabbit, "/amq/queue/" + address.rsplit("/", 1)[1])
        send(snd, None, raw=nested(60_000), subject="Acme.Deep.CFX.Production.WorkStarted")
        send(snd, None, raw=nested(2_000), subject="Acme.Deep.CFX.Production.WorkStarted")
        conn.close()
        assert wait_for(lambda: source_status(cfg).get("bad", 0) == 2, 20), source_status(cfg)
        assert wait_for(lambda: listening(port), 20)
        rconn, rcv, rsnd, reply_addr = requester(port)
        with pytest.raises(SendException):
            rsnd.send(request_message("CFX.AreYouThereRequest", {}, reply_addr, raw=nested(60_000)))
        rconn.close()
    finally:
        err = stop_agent(agent)
    dls = agent_process.dead_letters(cfg)
    assert [("nested too deep" in d["reason"]) for d in dls] == [True, True], [d["reason"] for d in dls]
    assert "Traceback" not in err and "RecursionError" not in err


def test_tls_with_a_virtual_host_verifies_the_brokers_host(write_config, rabbit):
    """23.8: with virtual_host, TLS checks the URL's host (the name in the broker's certificate), not
    "vhost:NAME" (today: verification failed, so config/example.toml's amqps with a vhost never connected)."""
    address = queue_address()
    cfg = write_config(f"""
[sources.cfx]
url = "{rabbit.tls_url}"
ca_file = "{rabbit.certs['ca.crt']}"
virtual_host = "cfx-site"
address = "{address}"
reconnect_min = "0.2s"
reconnect_max = "1s"
""")
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: source_status(cfg).get("online"), 20), source_status(cfg)
    finally:
        stop_agent(agent)
