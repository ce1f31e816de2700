"""The ESP32 Arduino example's portable payload code, compiled with the host C++ compiler, produces what the agent's
MQTT ingest accepts: its topics route to the right adapters and its payloads become the expected events."""

import json
import shutil
import subprocess
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
import pytest

from agent.config import parse_config
from agent.events import EventBus
from agent.sources.mqtt import MqttSource
from tests.conftest import ROOT

EXAMPLE = ROOT / "firmware_examples" / "esp32_arduino"


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    assert cxx, "a host C++ compiler is needed (apt-get install g++)"
    exe = tmp_path_factory.mktemp("fw") / "payload_driver"
    subprocess.run([cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{EXAMPLE / 'lib' / 'fixture_payloads'}",
                    "-o", str(exe), str(EXAMPLE / "test_host" / "payload_driver.cpp"),
                    str(EXAMPLE / "lib" / "fixture_payloads" / "fixture_payloads.cpp")], check=True,
                   capture_output=True)
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
