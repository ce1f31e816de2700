"""The ESP32 MicroPython example, run under CPython with stand-ins for ``machine`` and ``network`` only and the real
``umqtt.simple``, against a real mosquitto and a running agent: what it publishes becomes the expected events, and
what it made while the broker was down arrives afterwards, in order, even across a power cut of the board."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.agent_process import events, source_status, start_agent, stop_agent
from tests.conftest import ROOT, wait_for
from tests.firmware.board import Board
from tests.mosquitto import Mosquitto, mosquitto_passwd

FIRMWARE = ROOT / "firmware_examples" / "esp32_micropython"
COUNTER, SUPPLY, NTC = 4, 34, 35
GOOD_SUPPLY_UV = 1_650_000  # 3.30 V behind the 1:2 divider
NTC_25C_UV = 1_650_000  # 10k NTC at 25 °C against a 10k series resistor: half of 3.3 V


@pytest.fixture
def broker(tmp_path):
    passwd = tmp_path / "passwd"
    for user in ("ESP-12", "fixture-agent"):
        mosquitto_passwd(passwd, user, f"{user}-secret")
    b = Mosquitto(tmp_path / "broker", anonymous=False, extra=f"password_file {passwd}").start()
    yield b
    b.stop()


@pytest.fixture
def agent(broker, write_config, tmp_path):
    pw = tmp_path / "agent.password"
    pw.write_text("fixture-agent-secret")
    pw.chmod(0o600)
    cfg = write_config(f"""
[sources.mqtt]
port = {broker.port}
username = "fixture-agent"
password_file = "{pw}"
reconnect_min = "0.2s"
reconnect_max = "1s"
""")
    proc = start_agent(cfg)
    assert wait_for(lambda: source_status(cfg, "mqtt:mqtt").get("online"), 20)
    yield cfg
    stop_agent(proc)


def board(tmp_path, broker, **over) -> Board:
    config = {"device_id": "ESP-12", "wifi_ssid": "fixture-lan", "wifi_password": "x",
              "broker_host": "127.0.0.1", "broker_port": broker.port,
              "mqtt_user": "ESP-12", "mqtt_password": "ESP-12-secret",
              "counter_pin": COUNTER, "debounce_ms": 30, "supply_adc_pin": SUPPLY, "ntc_adc_pin": NTC,
              "selftest_every_s": 3600, "environment_every_s": 3600, "counters_every_s": 0.1,
              "reconnect_min_s": 0.2, "reconnect_max_s": 1, "buffer_messages": 200, **over}
    return Board(FIRMWARE, tmp_path / "flash", config, world=[f"uv {SUPPLY} {GOOD_SUPPLY_UV}", f"uv {NTC} {NTC_25C_UV}"])


def device_events(cfg, etype, key="asset_id"):
    return [e for e in events(cfg, etype) if e["payload"].get(key, "ESP-12") == "ESP-12"
            and (etype != "test.result" or e["payload"]["fixture_id"] == "ESP-12")]


def oldest_first(evs):
    return sorted(evs, key=lambda e: e["seq"])


def test_counters_selftest_environment_and_status_become_events(tmp_path, broker, agent):
    b = board(tmp_path, broker, selftest_every_s=1.5, environment_every_s=1)
    try:
        b.boot()
        assert wait_for(lambda: any(e["payload"]["new_state"] == "online"
                                    for e in device_events(agent, "asset.state_changed")), 20), b.log()
        b.press(COUNTER, 7)
        assert wait_for(lambda: any(e["payload"]["total_count"] == 7
                                    for e in device_events(agent, "asset.counters")), 20), b.log()
        counters = [e["payload"] for e in oldest_first(device_events(agent, "asset.counters"))]
        assert counters[0]["total_count"] == 0  # published once at boot, then on change
        assert all(c["running_count"] == c["total_count"] for c in counters)
        assert [c["total_count"] for c in counters] == sorted(c["total_count"] for c in counters)

        assert wait_for(lambda: any(e["payload"]["readings"].get("temperature") is not None
                                    for e in device_events(agent, "asset.telemetry")), 20), b.log()
        env = [e["payload"] for e in device_events(agent, "asset.telemetry")
               if "temperature" in e["payload"]["readings"]][-1]
        assert env["readings"]["temperature"] == pytest.approx(25.0, abs=0.1)
        assert env["readings"]["supply_voltage"] == pytest.approx(3.3)
        assert env["units"] == {"supply_voltage": "V", "temperature": "C"}

        def selftests():
            return [e["payload"] for e in oldest_first(device_events(agent, "test.result"))]

        assert wait_for(lambda: any(t["result"] == "pass" for t in selftests()), 20), b.log()
        passed = next(t for t in selftests() if t["result"] == "pass")
        assert passed["custom_data"]["test_type"] == "selftest"
        assert [s["name"] for s in passed["steps"]] == ["vcc", "ntc_temperature", "counter_input_idle",
                                                        "flash_free_kb"]
        n = len(selftests())
        b.set_uv(SUPPLY, 1_500_000)  # the rail sags to 3.0 V: the next self-test fails on its vcc step
        assert wait_for(lambda: len(selftests()) > n and selftests()[-1]["result"] == "fail", 20), b.log()
        vcc = selftests()[-1]["steps"][0]
        assert vcc["status"] == "fail" and vcc["measurements"][0]["value"] == pytest.approx(3.0)
    finally:
        b.power_cut()
    # no goodbye from a board that lost power: the broker's last will says it is offline
    assert wait_for(lambda: any(e["payload"]["new_state"] == "offline"
                                for e in device_events(agent, "asset.state_changed")), 30)


def test_what_is_made_while_the_broker_is_down_arrives_in_order_across_a_power_cut(tmp_path, broker, agent):
    b = board(tmp_path, broker)
    try:
        b.boot()
        b.press(COUNTER, 3)
        assert wait_for(lambda: any(e["payload"]["total_count"] == 3
                                    for e in device_events(agent, "asset.counters")), 20), b.log()
        broker.stop()
        outage = time.time()
        outbox = tmp_path / "flash" / "state" / "outbox.txt"
        for i in range(12):  # one counters message per press: each is its own absolute value to deliver
            b.press(COUNTER, 1)
            assert wait_for(lambda: outbox.exists() and len(outbox.read_text().splitlines()) > i, 10), b.log()
        b.power_cut()  # the board loses power with its outbox on flash ...
        b.boot()  # ... and at boot makes a counters message of its own (15, unchanged) behind the others
        assert wait_for(lambda: len(outbox.read_text().splitlines()) >= 15, 10), b.log()  # + counters, test, env
        for i in range(3):
            b.press(COUNTER, 1)
            assert wait_for(lambda: len(outbox.read_text().splitlines()) >= 16 + i, 10), b.log()
        assert not [e for e in device_events(agent, "asset.counters") if e["payload"]["total_count"] > 3]
        broker.start()
        back = time.time()
        assert wait_for(lambda: any(e["payload"]["total_count"] == 18
                                    for e in device_events(agent, "asset.counters")), 40), b.log()
        assert wait_for(lambda: not outbox.exists(), 10), b.log()  # sent and acknowledged, so forgotten
    finally:
        b.power_cut()
    totals = [e["payload"]["total_count"] for e in oldest_first(device_events(agent, "asset.counters"))]
    after = totals[totals.index(3) + 1:]
    assert after == list(range(4, 16)) + [15, 16, 17, 18], totals  # in order, none lost, none twice
    # each buffered message keeps the time it was made, not the time it arrived
    for e in device_events(agent, "asset.counters"):
        if 4 <= e["payload"]["total_count"] <= 14:
            made = datetime.fromisoformat(e["payload"]["timestamp"]).timestamp()
            arrived = datetime.fromisoformat(e["metadata"]["timestamp"]).timestamp()
            assert outage - 1 <= made < back <= arrived + 1, e


def test_outbox_is_bounded_survives_a_torn_write_and_reports_what_it_dropped(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(FIRMWARE))
    sys.modules.pop("outbox", None)
    from outbox import Outbox  # the firmware's own module: plain Python, nothing board-specific

    box = Outbox(str(tmp_path), limit=5)
    for i in range(8):
        box.append("assets/X/counters", f'{{"total_count": {i}}}')
    assert len(box) == 5 and box.dropped == 3
    assert box.peek() == ("assets/X/counters", '{"total_count": 3}')  # the oldest ones went
    box.pop()
    with open(box.path, "a") as f:
        f.write('assets/X/counters\t{"total_co')  # a power cut in the middle of an append
    again = Outbox(str(tmp_path), limit=5)
    assert len(again) == 4 and again.peek() == ("assets/X/counters", '{"total_count": 4}')
    again.append("assets/X/counters", '{"total_count": 8}')
    got = []
    while (m := again.peek()) is not None:
        got.append(m[1])
        again.pop()
    assert got == [f'{{"total_count": {i}}}' for i in (4, 5, 6, 7, 8)]
    assert not Path(again.path).exists() and not Path(again.pos_path).exists()


def test_an_offset_left_behind_by_a_power_cut_is_not_applied_to_a_new_outbox(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(FIRMWARE))
    sys.modules.pop("outbox", None)
    from outbox import Outbox

    (tmp_path / "outbox.pos").write_text("500")  # the old outbox's offset; its file is gone
    (tmp_path / "outbox.txt").write_text("a/b\t{\"n\": 1}\na/b\t{\"n\": 2}\n")  # a new one, written since
    box = Outbox(str(tmp_path), limit=5)
    assert len(box) == 2 and box.peek() == ("a/b", '{"n": 1}')
