"""Serial sources against real pseudo-terminals: the simulator on one end, the agent process on the other."""

import json
import os
import signal
import subprocess
import time

import pytest

from agent import simulator
from tests.conftest import ROOT, cli_cmd, run_cli, wait_for


def serial_config(write_config, tmp_path, driver="jsonl", extra=""):
    link = tmp_path / "data" / f"{driver}.tty"
    link.parent.mkdir(exist_ok=True)
    text = f"""
[[sources.serial]]
name = "{driver}"
port = "{link}"
driver = "{driver}"
asset_id = "FX-1"
reconnect_min = "0.1s"
reconnect_max = "0.5s"
{extra}
"""
    return write_config(text), link


def events(cfg, **kw):
    args = ["events", "-c", str(cfg), "--json", "--limit", "100000"]
    if "type" in kw:
        args += ["--type", kw["type"]]
    return json.loads(run_cli(*args, check=True).stdout)


def start_agent(cfg):
    return subprocess.Popen(cli_cmd("run", "-c", str(cfg)), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)



def controller_seqs(cfg, session):
    out = []
    for e in events(cfg):
        cd = e["payload"].get("custom_data") or {}
        if cd.get("serial_session") == session:
            out.append(cd["serial_seq"])
    return out


def test_jsonl_exactly_once_through_garbage_dropped_acks_and_unplugs(write_config, tmp_path):
    cfg, link = serial_config(write_config, tmp_path)
    pty, ctl, thread = simulator.start("jsonl", link=link, seed=3, interval=0.02, count=150, garbage_rate=0.1,
                                       mangle_rate=0.05, drop_ack_rate=0.1, resend_after=0.3,
                                       disconnect_every=1.0, disconnect_for=0.3)
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: ctl.all_acked, 40), f"acked {ctl.acked} of {ctl.seq}"
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=15)
        pty.close()
    assert pty.disconnects >= 2
    seqs = controller_seqs(cfg, ctl.session)
    assert sorted(seqs) == list(range(1, 151)), "every message exactly once"
    assert seqs == sorted(seqs), "and in order"
    states = [e["payload"] for e in events(cfg, type="asset.state_changed")]
    lost = [s for s in states if s["new_state"] == "offline" and "port lost" in (s.get("reason") or "")]
    assert len(lost) >= 2  # the unplugs were seen and reported
    hello = [s for s in states if s.get("reason") == "controller started"]
    assert hello and hello[0]["custom_data"]["model"] == "FX-SIM"
    dlq = json.loads(run_cli("dlq", "list", "-c", str(cfg), "--json", check=True).stdout)
    assert dlq and all(d["origin"].startswith("serial:jsonl") and d["subscriber"] is None for d in dlq)
    counters = [e["payload"] for e in events(cfg, type="asset.counters")]
    totals = [c["total_count"] for c in counters]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    status = json.loads(run_cli("status", "-c", str(cfg), "--json", check=True).stdout)
    assert status["sources"]["serial:jsonl"]["identity"]["model"] == "FX-SIM"


def test_jsonl_resend_until_acked_across_agent_kill9(write_config, tmp_path):
    cfg, link = serial_config(write_config, tmp_path)
    pty, ctl, thread = simulator.start("jsonl", link=link, seed=4, interval=0.01, count=400, resend_after=0.3)
    kills = 0
    try:
        for _ in range(6):
            agent = start_agent(cfg)
            time.sleep(0.4 + 0.1 * kills)
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait()
            kills += 1
        assert not ctl.all_acked, "the kills should land before the controller is done"
        agent = start_agent(cfg)
        assert wait_for(lambda: ctl.all_acked, 40), f"acked {ctl.acked} of {ctl.seq}"
        agent.send_signal(signal.SIGTERM)
        agent.wait(15)
    finally:
        pty.close()
    seqs = controller_seqs(cfg, ctl.session)
    assert sorted(seqs) == list(range(1, 401)), f"{len(seqs)} events, {len(set(seqs))} distinct"


def test_oversized_and_non_utf8_lines_are_kept_and_do_not_block(write_config, tmp_path):
    cfg, link = serial_config(write_config, tmp_path, extra="max_line_bytes = 256")
    pty = simulator.PtyFixture(link=link)
    agent = start_agent(cfg)
    try:
        time.sleep(1.0)
        pty.write(b"x" * 5000 + b"\n")
        pty.write(b"\xff\xfe\xfd\n")
        good = {"type": "counters", "seq": 1, "session": "s1", "running_count": 1, "total_count": 7}
        deadline = time.monotonic() + 10
        acked = []
        while time.monotonic() < deadline and not acked:
            pty.write(json.dumps(good).encode() + b"\n")
            acked = [l for l in pty.read_lines(0.3) if b'"ack":1' in l]
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(15)
        pty.close()
    assert acked
    dlq = json.loads(run_cli("dlq", "list", "-c", str(cfg), "--json", "--body", check=True).stdout)
    reasons = [d["reason"] for d in dlq]
    assert any("longer than 256 bytes" in r for r in reasons) and any("not UTF-8" in r for r in reasons)
    assert [e["payload"]["total_count"] for e in events(cfg, type="asset.counters")] == [7]


SCPI_EXTRA = """
poll_interval = "0.2s"
[[sources.serial.queries]]
name = "VCC"
command = "MEAS:VOLT:DC?"
unit = "V"
low = 3.2
high = 3.4
[[sources.serial.queries]]
name = "I_IDLE"
command = "MEAS:CURR?"
unit = "A"
high = 0.001
"""


@pytest.mark.parametrize("tst_code,expected", [(0, "pass"), (3, "fail")])
def test_scpi_identity_selftest_poll_and_error_queue(write_config, tmp_path, tst_code, expected):
    cfg, link = serial_config(write_config, tmp_path, "scpi", SCPI_EXTRA)
    pty, inst, thread = simulator.start("scpi", link=link, seed=5, tst_code=tst_code, error_rate=0.2)
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: len(events(cfg, type="test.result")) >= 4, 20)
        assert wait_for(lambda: events(cfg, type="asset.fault"), 10)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(15)
        pty.close()
    results = events(cfg, type="test.result")
    selftest = results[0]
    assert selftest["payload"]["custom_data"]["test_type"] == "selftest"
    assert selftest["payload"]["result"] == expected
    assert selftest["metadata"]["custom"]["device"]["model"] == "SCPI-SIM"  # identity in metadata
    poll = results[1]["payload"]
    vcc, idle = (s["measurements"][0] for s in poll["steps"])
    assert vcc["status"] == "pass" and vcc["comp_op"] == "GELE" and 3.2 <= vcc["value"] <= 3.4
    assert idle["status"] == "fail" and idle["comp_op"] == "LE"  # 28 mA against a 1 mA limit: the agent judges
    assert poll["result"] == "fail"
    faults = [e["payload"] for e in events(cfg, type="asset.fault")]
    assert {f["fault_code"] for f in faults} <= {"-222", "-113"} and faults[0]["fault_message"]
    status = json.loads(run_cli("status", "-c", str(cfg), "--json", check=True).stdout)
    assert status["sources"]["serial:scpi"]["identity"]["manufacturer"] == "FixtureSim"


def test_scpi_garbage_answers_are_bad_input_not_a_crash(write_config, tmp_path):
    cfg, link = serial_config(write_config, tmp_path, "scpi", SCPI_EXTRA)
    pty, inst, thread = simulator.start("scpi", link=link, seed=6, garbage_rate=0.3, error_rate=0.0)
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: len(events(cfg, type="test.result")) >= 6, 25)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=15)
        pty.close()
    assert agent.returncode == 0
    dlq = json.loads(run_cli("dlq", "list", "-c", str(cfg), "--json", check=True).stdout)
    assert dlq, "garbage answers are kept"
    assert all(d["origin"].startswith("serial:scpi") for d in dlq)
