"""CFX ingest against a real RabbitMQ 3.10 with its AMQP 1.0 plugin, started by the tests; the agent as a process."""

from __future__ import annotations

import gzip
import json
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
default_part_number = "PCB4711"
require_clock_sync = false
retry_max = "1s"
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
