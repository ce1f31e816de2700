"""CFX ingest against a real RabbitMQ 3.10 with its AMQP 1.0 plugin, started by the tests; the agent as a process."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import time
import uuid
from datetime import datetime, timezone

import pytest

from agent.protocols import cfx
from agent.protocols.cfx_samples import SAMPLES
from tests.conftest import ROOT, cli_cmd, run_cli, wait_for
from tests.rabbitmq import RabbitMQ
from tests.wats_standin import WatsStandIn


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory):
    r = RabbitMQ(tmp_path_factory.mktemp("rabbitmq")).start()
    yield r
    r.stop()


def sender(rabbit, address):
    from proton.utils import BlockingConnection

    conn = BlockingConnection(rabbit.url, allowed_mechs="ANONYMOUS", timeout=20)
    return conn, conn.create_sender(address)


def send(snd, doc, *, compress=False, subject=None, raw: bytes | None = None, encoding="auto"):
    """As the SDK sends: one Data section, durable, message-id = UniqueID, cfx-* properties."""
    from proton import Message

    if raw is None:
        props = cfx.amqp_properties(doc if isinstance(doc, dict) else doc[0], compressed=compress)
        body = cfx.encode(doc, compress=compress)
    else:
        props, body = {"id": str(uuid.uuid4()), "subject": subject or "x", "content_type": cfx.CONTENT_TYPE,
                       "content_encoding": None, "properties": {}}, raw
    enc = props["content_encoding"] if encoding == "auto" else encoding
    msg = Message(body=body, inferred=True, durable=True, id=props["id"], subject=subject or props["subject"],
                  content_type=props["content_type"], content_encoding=enc, properties=props["properties"])
    snd.send(msg, timeout=20)


def agent_config(write_config, rabbit, address, extra=""):
    return write_config(f"""
[sources.cfx]
url = "{rabbit.url}"
address = "{address}"
reconnect_min = "0.2s"
reconnect_max = "1s"
{extra}
""")


def start_agent(cfg):
    return subprocess.Popen(cli_cmd("run", "-c", str(cfg)), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def stop_agent(agent):
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    return err


def events(cfg, type=None):
    args = ["events", "-c", str(cfg), "--json", "--limit", "1000000"] + (["--type", type] if type else [])
    return json.loads(run_cli(*args, check=True).stdout)


def source_status(cfg) -> dict:
    proc = run_cli("status", "-c", str(cfg), "--json")
    if proc.returncode != 0:
        return {}
    return json.loads(proc.stdout).get("sources", {}).get("cfx:cfx", {})


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
