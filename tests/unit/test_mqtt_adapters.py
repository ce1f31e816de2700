"""MQTT topic families → normalized events (pure adapters; the broker tests come with the MQTT source)."""

from datetime import datetime, timezone

import pytest

from agent.protocols.mqtt_adapters import ADAPTERS, DEFAULT_SUBSCRIPTIONS, AdapterError, Message, mapping

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def msg(topic, doc, device=None):
    return Message(topic=topic, device=device or topic.split("/")[1], doc=doc, received=NOW, source="mqtt")


def test_the_seeds_combined_asset_heartbeat_becomes_state_counters_and_telemetry():
    doc = {"asset_id": "FIXTURE-001", "timestamp": "2026-01-26T10:30:00Z",
           "counters": {"running_count": 1523, "total_count": 45000},
           "environment": {"temperature_c": 23.5, "humidity_pct": 45.2, "vibration_g": 0.02}, "status": "running"}
    events = ADAPTERS["asset"](msg("assets/FIXTURE-001/status", doc))
    assert [e.event_type for e in events] == ["asset.state_changed", "asset.counters", "asset.telemetry"]
    assert events[0].payload["new_state"] == "busy"
    assert events[1].payload == {"asset_id": "FIXTURE-001", "running_count": 1523, "total_count": 45000,
                                 "timestamp": "2026-01-26T10:30:00Z"}
    assert events[2].payload["readings"]["temperature_c"] == 23.5


def test_the_device_id_comes_from_the_topic():
    [e] = ADAPTERS["asset"](msg("assets/FX-9/counters", {"running_count": 1, "total_count": 2}))
    assert e.payload["asset_id"] == "FX-9" and e.payload["timestamp"] == "2026-11-23T10:00:00Z"


def test_the_seeds_selftest_with_passed_and_p_is_judged_by_the_agent():
    doc = {"device_id": "FIXTURE-001", "test_type": "self_test", "timestamp": "2026-01-26T06:00:00Z",
           "serial_number": "FIXTURE-001", "part_number": "TEST-FIXTURE-A", "result": "Passed", "duration_ms": 5230,
           "steps": [{"name": "Power Supply Check", "status": "P", "value": 5.02, "unit": "V", "low": 4.9, "high": 5.1},
                     {"name": "Communication Test", "status": "P", "value": 1, "unit": "bool"},
                     {"name": "Sensor Calibration", "status": "P", "value": 0.02, "unit": "offset"}]}
    [e] = ADAPTERS["selftest"](msg("devices/FIXTURE-001/selftest", doc))
    assert e.event_type == "test.result" and e.payload["result"] == "pass"
    assert e.payload["custom_data"]["test_type"] == "selftest" and e.payload["part_number"] == "TEST-FIXTURE-A"
    doc["steps"][0]["value"] = 5.5  # out of limits: the device's "P" is overruled
    [e] = ADAPTERS["selftest"](msg("devices/FIXTURE-001/selftest", doc))
    assert e.payload["result"] == "fail" and e.payload["steps"][0]["status"] == "fail"


def test_measurement_streams_software_and_units():
    [m] = ADAPTERS["measurements"](msg("testers/SENSOR-ARRAY-01/measurements", {
        "serial_number": "UNIT-12345", "measurements": [{"path": "Temperature/DUT", "value": 42.1, "unit": "°C"}]}))
    assert m.event_type == "asset.telemetry" and m.payload["readings"] == {"Temperature/DUT": 42.1}
    [s] = ADAPTERS["software"](msg("devices/TESTER-042/software", {
        "software": [{"name": "test_firmware", "version": "2.3.1", "hash": "abc123"}], "config_version": "prod-v5"}))
    assert s.event_type == "device.software" and s.payload["software"][0]["version"] == "2.3.1"
    [u] = ADAPTERS["unit"](msg("stations/LINE1-STATION3/unit", {"event": "unit_exited", "serial_number": "UNIT-1"}))
    assert u.event_type == "production.unit_departed" and u.payload["station_id"] == "LINE1-STATION3"
    [sc] = ADAPTERS["unit"](msg("lines/L1/scan", {"serial_number": "UNIT-2"}))
    assert sc.event_type == "production.unit_arrived" and sc.payload["line_id"] == "L1"


@pytest.mark.parametrize("adapter,topic,doc,names", [
    ("asset", "assets/A/status", {"status": "dancing"}, "dancing"),
    ("asset", "assets/A/counters", {"counters": {"running_count": "many", "total_count": 3}}, "running_count"),
    ("asset", "assets/A/counters", {"counters": {"running_count": 9, "total_count": 3}}, "running_count"),
    ("asset", "assets/A/status", {"hello": 1}, "nothing to record"),
    ("asset_alert", "assets/A/alerts", {"message": "x"}, "code"),
    ("selftest", "devices/D/selftest", {"steps": []}, "result"),
    ("selftest", "devices/D/selftest", {"result": "maybe"}, "maybe"),
    ("unit", "stations/S/unit", {"event": "unit_entered"}, "serial_number"),
    ("asset", "assets/A/status", {"status": "idle", "timestamp": "2026-01-26T10:30:00"}, "UTC offset"),
    ("asset", "assets/A/status", {"status": "idle", "timestamp": "9999-12-31T23:59:59-14:00"}, "out of range"),
])
def test_bad_payloads_raise_an_error_naming_the_field(adapter, topic, doc, names):
    with pytest.raises(AdapterError) as err:
        ADAPTERS[adapter](msg(topic, doc))
    assert names in str(err.value) and topic in str(err.value)


def test_every_default_subscription_has_an_adapter():
    assert {a for _, a in DEFAULT_SUBSCRIPTIONS} <= set(ADAPTERS)
    assert len(DEFAULT_SUBSCRIPTIONS) == 10


def test_a_site_maps_its_own_topic_without_code():
    adapt = mapping("asset.counters", {"running_count": "cycles.since_service", "total_count": "cycles.life",
                                       "timestamp": "$received"}, device_field="asset_id")
    [e] = adapt(msg("plant/press-7/cycles", {"cycles": {"since_service": 12, "life": 9000}}))
    assert e.payload == {"asset_id": "press-7", "running_count": 12, "total_count": 9000,
                         "timestamp": "2026-11-23T10:00:00Z"}
    with pytest.raises(AdapterError, match="cycles.life"):
        adapt(msg("plant/press-7/cycles", {"cycles": {"since_service": 12}}))
    with pytest.raises(AdapterError, match="total_count"):
        adapt(msg("plant/press-7/cycles", {"cycles": {"since_service": 12, "life": "lots"}}))


@pytest.mark.parametrize("adapter,topic,doc,where", [
    ("asset", "assets/A/counters", {"running_count": "1523", "total_count": 2000}, "$.running_count"),
    ("asset", "assets/A/counters", {"running_count": 11, "total_count": "102"}, "$.total_count"),
    ("asset", "assets/A/counters", {"counters": {"running_count": "11", "total_count": 102}}, "$.counters.running_count"),
    ("asset", "assets/A/environment", {"environment": {"temp": "21.5"}}, "$.environment"),
    ("asset_alert", "assets/A/alerts", {"code": "E1", "cleared": "true"}, "$.cleared"),
    ("measurements", "testers/T/measurements", {"measurements": [{"path": "v", "value": "3.3"}]},
     "$.measurements[0].value"),
])
def test_numbers_and_flags_that_arrive_as_strings_are_bad_input(adapter, topic, doc, where):
    """docs/mqtt.md promises ``Expected int, got str`` as a dead letter; msgspec's lax mode coerced "1523"."""
    with pytest.raises(AdapterError) as err:
        ADAPTERS[adapter](msg(topic, doc))
    text = str(err.value)
    assert "got `str`" in text and where in text and topic in text
