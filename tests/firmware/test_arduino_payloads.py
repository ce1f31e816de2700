"""The ESP32 Arduino example's portable payload code, compiled with the host C++ compiler, produces what the agent's
MQTT ingest accepts: its topics route to the right adapters and its payloads become the expected events."""

import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
import pytest

from agent.config import parse_config
from agent.events import EventBus
from agent.sources.mqtt import MqttSource
from tests.conftest import ROOT

EXAMPLE = ROOT / "firmware_examples" / "esp32_arduino"


LIB = EXAMPLE / "lib" / "fixture_payloads"


def compile_driver(out_dir, driver: str, source: str):
    """A host driver compiled with the library source it exercises, warnings as errors."""
    cxx = shutil.which("g++") or shutil.which("c++")
    assert cxx, "a host C++ compiler is needed (apt-get install g++)"
    exe = out_dir / driver
    proc = subprocess.run([cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{LIB}", "-o", str(exe),
                           str(EXAMPLE / "test_host" / f"{driver}.cpp"), str(LIB / source)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    exe = compile_driver(tmp_path_factory.mktemp("fw"), "payload_driver", "fixture_payloads.cpp")
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return [line.split("\t", 1) for line in out.splitlines()]


def test_payloads_are_valid_json_and_overflows_are_refused(lines):
    for topic, payload in lines:
        if topic == "overflow":
            assert payload == "-1"  # a buffer too small or an id with '/': nothing half-written is published
        else:
            assert topic != "error", payload
            json.loads(payload)


def test_the_agent_reads_what_the_firmware_writes(lines, journal):
    src = MqttSource(parse_config('[agent]\nstation = "s"\n[sources.mqtt]\n').sources.mqtt, "s")
    src.set_event_bus(EventBus(journal))
    events = {}
    for topic, payload in lines:
        if topic == "overflow":
            continue
        msg = mqtt.MQTTMessage(mid=1, topic=topic.encode())
        msg.payload = payload.encode()
        events[topic] = src.adapt(msg, datetime.now(timezone.utc))
    (counters,) = events["assets/ESP-7/counters"]
    assert counters.event_type == "asset.counters" and counters.payload["asset_id"] == "ESP-7"
    assert (counters.payload["running_count"], counters.payload["total_count"]) == (12, 3400)
    (status,) = events["assets/ESP-7/status"]
    assert status.payload["new_state"] == "online"
    (env,) = events["assets/ESP-7/environment"]
    assert env.payload["readings"] == {"temperature": 24.5, "humidity": 41.0}
    assert env.payload["units"] == {"temperature": "C", "humidity": "%"}
    (selftest,) = events["devices/ESP-7/selftest"]
    p = selftest.payload
    assert selftest.event_type == "test.result" and p["custom_data"]["test_type"] == "selftest"
    vcc, idle, crc = p["steps"]
    assert vcc["status"] == "pass" and vcc["measurements"][0]["low_limit"] == 3.2
    assert idle["status"] == "fail"  # 28 mA over a 1 mA limit: the agent judges, whatever the firmware said
    assert crc["status"] == "pass"
    assert p["result"] == "fail"


@pytest.fixture(scope="module")
def outbox_driver(tmp_path_factory):
    exe = compile_driver(tmp_path_factory.mktemp("fw"), "outbox_driver", "fixture_outbox.cpp")

    def run(*commands: str) -> list[str]:
        """One boot of the firmware's outbox: the commands, then the process ends (as at a power cut)."""
        out = subprocess.run([str(exe)], input="\n".join(commands) + "\n", check=True, capture_output=True,
                             text=True).stdout
        return out.splitlines()

    return run


def test_outbox_keeps_order_drops_the_oldest_when_full_and_survives_a_torn_write(outbox_driver, tmp_path):
    d = tmp_path / "flash"
    d.mkdir()
    msgs = [f'{{"running_count": {i}, "total_count": {i}}}' for i in range(8)]
    out = outbox_driver(f"open {d} 5", *(f"append assets/ESP-7/counters {m}" for m in msgs), "count", "peek", "pop")
    assert out[:9] == ["0"] * 9 and out[9] == "5 3"  # 8 kept into a bound of 5: the 3 oldest dropped, counted
    assert out[10] == f"assets/ESP-7/counters\t{msgs[3]}" and out[11] == "0"
    with open(d / "outbox.txt", "a") as f:
        f.write('assets/ESP-7/counters\t{"running_co')  # power cut in the middle of an append
    out = outbox_driver(f"open {d} 5", "count", *["peek", "pop"] * 4, "peek", "count")
    assert out[1] == "4 0"  # the torn line is dropped at boot, the unsent ones are still there
    assert out[2:10:2] == [f"assets/ESP-7/counters\t{m}" for m in msgs[4:8]]  # in order
    assert out[10:] == ["0", "0 0"] and not (d / "outbox.txt").exists()
    out = outbox_driver(f"open {d} 5", "append " + "t" * 300 + " " + "x" * 1000, "count")
    assert out[1:] == ["-1", "0 0"]  # a message longer than a line is refused, not kept half


def test_the_arduino_and_micropython_outboxes_share_one_format(outbox_driver, tmp_path, monkeypatch):
    """A device moved from one firmware to the other keeps what it had not sent."""
    d = tmp_path / "flash"
    d.mkdir()
    outbox_driver(f"open {d} 10", 'append devices/ESP-7/selftest {"result": "P"}',
                  'append assets/ESP-7/counters {"running_count": 1, "total_count": 1}', "peek", "pop")
    monkeypatch.syspath_prepend(str(ROOT / "firmware_examples" / "esp32_micropython"))
    sys.modules.pop("outbox", None)
    from outbox import Outbox

    box = Outbox(str(d), 10)
    assert len(box) == 1 and box.peek() == ("assets/ESP-7/counters", '{"running_count": 1, "total_count": 1}')
