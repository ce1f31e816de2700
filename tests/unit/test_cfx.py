"""CFX on the wire and the mapping to events, without a broker: what the SDK writes, and what equipment sends."""

import gzip
import json
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from agent.events.model import Event
from agent.protocols import cfx
from agent.protocols.cfx_mapping import to_cfx, to_events
from agent.protocols.cfx_samples import SAMPLES
from agent.protocols.wsjf import Station, to_wsjf


def env_of(name):
    return cfx.decode(cfx.encode(SAMPLES[name][1]))[0]


def test_envelope_is_written_as_the_sdk_writes_it():
    doc = cfx.envelope_doc("CFX.Heartbeat", {"CFXHandle": "A.B.C", "HeartbeatFrequency": "00:01:00"}, source="A.B.C",
                           when=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc))
    assert list(doc) == ["MessageName", "Version", "TimeStamp", "UniqueID", "Source", "Target", "RequestID",
                         "MessageBody"]
    assert list(doc["MessageBody"])[0] == "$type" and doc["MessageBody"]["$type"] == "CFX.Heartbeat, CFX"
    assert doc["Target"] is None and doc["RequestID"] is None and doc["Version"] == "2.1"
    ts = doc["TimeStamp"]
    assert ts[19:27] == ".1234560" and ts[-6] in "+-" and ts[-3] == ":"  # 7 digits, an offset
    assert datetime.fromisoformat(ts) == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    assert doc["UniqueID"] == doc["UniqueID"].lower()
    props = cfx.amqp_properties(doc, compressed=True)
    assert props["subject"] == "A.B.C.CFX.Heartbeat" and props["id"] == doc["UniqueID"]
    assert props["content_type"] == 'application/json; charset="utf-8"' and props["content_encoding"] == "gzip"
    assert props["properties"] == {"cfx-topic": "CFX", "cfx-message": "CFX.Heartbeat", "cfx-handle": "A.B.C",
                                   "cfx-target": None}


@pytest.mark.parametrize("value,expected", [("1100", 1100), (1100, 1100), ("22A0", 2201), ("22b0", 2202)])
def test_resource_state_in_every_form_the_field_uses(value, expected):
    assert cfx.parse_resource_state(value, "x") == expected


@pytest.mark.parametrize("value", ["idle", 99, True, "7000"])
def test_resource_state_nonsense_is_named(value):
    with pytest.raises(cfx.CfxError, match="x:"):
        cfx.parse_resource_state(value, "x")


def test_timespan_both_ways():
    assert cfx.format_timespan(timedelta(minutes=1)) == "00:01:00"
    assert cfx.format_timespan(timedelta(days=1, hours=2, microseconds=5)) == "1.02:00:00.0000050"
    assert cfx.parse_timespan("1.02:00:00.5", "x") == timedelta(days=1, hours=2, milliseconds=500)
    with pytest.raises(cfx.CfxError):
        cfx.parse_timespan("90 minutes", "x")


def test_gzip_raw_array_and_gzip_without_its_header():
    one = SAMPLES["temperature-fault"][1]
    raw = cfx.encode(one)
    assert cfx.decode(raw)[0].message_name == "CFX.ResourcePerformance.FaultOccurred"
    assert cfx.decode(gzip.compress(raw), "GZIP")[0].unique_id == one["UniqueID"]
    env = cfx.decode(gzip.compress(raw), None)[0]
    assert "gzip body without content-encoding" in env.notes
    batch = cfx.decode(cfx.encode([one, SAMPLES["fault-cleared"][1]]))
    assert [e.short_name for e in batch] == ["FaultOccurred", "FaultCleared"]
    with pytest.raises(cfx.CfxError, match="not gzip"):
        cfx.decode(raw, "gzip")


def test_keys_are_read_without_regard_to_case_and_both_transaction_spellings():
    doc = json.loads(cfx.encode(SAMPLES["work-started"][1]))
    doc["messagebody"] = doc.pop("MessageBody")
    doc["messagebody"]["TransactionId"] = doc["messagebody"].pop("TransactionID")
    doc["timestamp"] = doc.pop("TimeStamp")
    env = cfx.decode(json.dumps(doc).encode())[0]
    assert env.body["TransactionID"] == "0b7d9a4e-5c1f-4e8a-b2d3-9f6e1a2c3d4b"


def test_body_without_type_is_read_by_its_message_name():
    doc = json.loads(cfx.encode(SAMPLES["station-state-changed"][1]))
    del doc["MessageBody"]["$type"]
    env = cfx.decode(json.dumps(doc).encode())[0]
    assert env.message_name == "CFX.ResourcePerformance.StationStateChanged" and env.notes


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.pop("UniqueID"), "UniqueID"),
    (lambda d: d.pop("TimeStamp"), "TimeStamp"),
    (lambda d: d.update(MessageBody="x"), "MessageBody"),
    (lambda d: (d.pop("MessageName"), d["MessageBody"].pop("$type")), "neither MessageName nor"),
    (lambda d: d["MessageBody"].update({"$type": "CFX.Heartbeat, CFX"}), r"but MessageBody\.\$type"),
    (lambda d: d.update(TimeStamp="yesterday"), "TimeStamp"),
])
def test_broken_envelopes_are_named(mutate, needle):
    doc = json.loads(cfx.encode(SAMPLES["fault-cleared"][1]))
    mutate(doc)
    with pytest.raises(cfx.CfxError, match=needle):
        cfx.decode(json.dumps(doc).encode())


def test_not_json_is_named():
    with pytest.raises(cfx.CfxError, match="not JSON"):
        cfx.decode(b"\x00\x01garbage")


# ------------------------------------------------------------------------------------------------ mapping in
def test_every_sample_maps():
    for name, (_, doc) in SAMPLES.items():
        env = cfx.decode(cfx.encode(doc))[0]
        events = to_events(env, "cfx:test")
        assert events, name
        for e in events:
            assert e.payload["custom_data"]["cfx"]["unique_id"] == doc["UniqueID"], name


def test_ict_units_tested_is_judged_by_the_agent_and_becomes_a_valid_wsjf_report():
    (event,) = to_events(env_of("ict-units-tested"), "cfx:test")
    p = event.payload
    assert event.event_type == "test.result" and p["unit_id"] == "PNL000123" and p["result"] == "fail"
    r12, vcc, boot = p["steps"]
    m = r12["measurements"][0]
    assert (m["value"], m["low_limit"], m["high_limit"], m["nominal"], m["comp_op"], m["status"]) == \
        (10020.0, 9900.0, 10100.0, 10000.0, "GELE", "pass")
    assert vcc["status"] == "fail" and "3V3 rail below limit" in vcc["message"] and "U7 pin 3" in vcc["message"]
    assert boot["measurements"][0]["value"] is True and boot["status"] == "pass"
    assert p["operator_id"] == "BADGE1022" and p["fixture_id"] == "Acme.ICT3070.SN40117"
    assert p["custom_data"]["test_type"] == "ict" and p["custom_data"]["cfx"]["recipe"] == "PCB4711_ICT"
    report = to_wsjf(Event.create("test.result", p, source="x"),
                     Station(machine_name="m", location="l", purpose="p", process_codes={"ict": 30},
                             recipe_as_part_number=True))
    assert report["processCode"] == 30 and report["result"] == "F" and report["sn"] == "PNL000123"
    assert (report["pn"], report["rev"]) == ("PCB4711_ICT", "C")


def test_a_tester_saying_passed_over_a_value_out_of_limits_is_overruled():
    doc = json.loads(cfx.encode(SAMPLES["fct-units-tested"][1]))
    doc["MessageBody"]["TestedUnits"][0]["Tests"][0]["Measurements"][0]["MeasuredValue"]["Value"] = 0.4
    e = to_events(cfx.decode(json.dumps(doc).encode())[0], "x")[0]
    assert e.payload["result"] == "fail" and e.payload["steps"][0]["status"] == "fail"


def test_measurement_without_type_is_read_by_its_fields_and_noted():
    doc = json.loads(cfx.encode(SAMPLES["fct-units-tested"][1]))
    meas = doc["MessageBody"]["TestedUnits"][0]["Tests"][0]["Measurements"][0]
    del meas["$type"]
    e = to_events(cfx.decode(json.dumps(doc).encode())[0], "x")[0]
    assert e.payload["steps"][0]["measurements"][0]["value"] == 0.182
    assert any("no $type" in n for n in e.payload["custom_data"]["cfx"]["notes"])
    del meas["MeasuredValue"]
    with pytest.raises(cfx.CfxError, match=r"Measurements\[0\]: no \$type"):
        to_events(cfx.decode(json.dumps(doc).encode())[0], "x")


def test_fct_panel_gives_one_result_per_board():
    events = to_events(env_of("fct-units-tested"), "x")
    assert [e.payload["unit_id"] for e in events] == ["SN2611230001", "SN2611230002"]
    assert events[0].payload["steps"][1]["measurements"][0]["value"] == "1.4.2"


def test_state_fault_material_work_and_inspection_mappings():
    (state,) = to_events(env_of("station-state-changed"), "x")
    assert state.payload["new_state"] == "error" and state.payload["previous_state"] == "busy"
    assert state.payload["custom_data"]["e10_state"] == 5300 and state.payload["asset_id"] == "Acme.ICT3070.SN40117"
    (fault,) = to_events(env_of("temperature-fault"), "x")
    assert fault.payload["severity"] == "critical" and fault.payload["fault_code"] == "E-TEMP-03"
    (cleared,) = to_events(env_of("fault-cleared"), "x")
    assert cleared.payload["cleared"] and "BADGE1022" in cleared.payload["fault_message"]
    (smt,) = to_events(env_of("smt-materials-installed"), "x")
    assert [(c["reference_designator"], c["lot_number"]) for c in smt.payload["components"]] == \
        [("R1", "REEL-0042-7781"), ("R2", "REEL-0042-7781")]
    (th,) = to_events(env_of("th-materials-installed"), "x")
    assert th.payload["components"][0]["serial_number"] == "PSU-0091-5523"  # a child unit for WATS
    (started,) = to_events(env_of("work-started"), "x")
    assert started.payload["work_order_id"] == "WO-2026-1123" and started.payload["unit_id"] == "PNL000123"
    (failed,) = to_events(env_of("work-completed-fail"), "x")
    assert failed.payload["result"] == "failed" and failed.payload["unit_id"] == "0b7d9a4e-5c1f-4e8a-b2d3-9f6e1a2c3d4b"
    (aoi,) = to_events(env_of("aoi-units-inspected"), "x")
    assert aoi.event_type == "inspection.result" and aoi.payload["inspection_type"] == "aoi"
    assert aoi.payload["result"] == "fail" and aoi.payload["defects"][0]["code"] == "TOMBSTONE"


def test_root_messages_are_not_events():
    hb = cfx.decode(cfx.encode(cfx.envelope_doc("CFX.Heartbeat", {"CFXHandle": "a"}, source="a",
                                                 when=datetime.now(timezone.utc))))[0]
    assert to_events(hb, "x") == []


# ------------------------------------------------------------------------------------------------ mapping out
def test_own_test_result_as_units_tested_reads_back_the_same():
    original = to_events(env_of("ict-units-tested"), "x")[0]
    doc = to_cfx(original, "Fixture.Agent.PI7")
    assert doc["UniqueID"] == original.id and doc["Source"] == "Fixture.Agent.PI7"
    assert doc["MessageBody"]["$type"] == "CFX.Production.TestAndInspection.UnitsTested, CFX"
    assert "TransactionId" in doc["MessageBody"]  # UnitsTested's spelling
    back = to_events(cfx.decode(cfx.encode(doc, compress=True), "gzip")[0], "x")[0]
    assert back.payload["unit_id"] == original.payload["unit_id"] and back.payload["result"] == "fail"
    assert [s["status"] for s in back.payload["steps"]] == [s["status"] for s in original.payload["steps"]]
    m = back.payload["steps"][0]["measurements"][0]
    assert (m["low_limit"], m["high_limit"]) == (9900.0, 10100.0)


def test_own_state_and_faults_as_cfx():
    st = Event.create("asset.state_changed", {"asset_id": "FX-1", "new_state": "maintenance", "previous_state": "busy",
                                              "timestamp": datetime.now(timezone.utc)}, source="x")
    doc = to_cfx(st, "H")
    assert doc["MessageBody"]["NewState"] == "4300" and doc["MessageBody"]["OldState"] == "1100"
    f = Event.create("asset.fault", {"asset_id": "FX-1", "fault_code": "E1", "fault_message": "m",
                                     "timestamp": datetime.now(timezone.utc), "severity": "warning"}, source="x")
    c = Event.create("asset.fault", {"asset_id": "FX-1", "fault_code": "E1", "fault_message": "m",
                                     "timestamp": datetime.now(timezone.utc), "cleared": True}, source="x")
    occurred, cleared = to_cfx(f, "H"), to_cfx(c, "H")
    assert occurred["MessageName"].endswith("FaultOccurred") and occurred["MessageBody"]["Fault"]["Severity"] == "Warning"
    assert cleared["MessageName"].endswith("FaultCleared")
    assert cleared["MessageBody"]["FaultOccurrenceId"] == occurred["MessageBody"]["Fault"]["FaultOccurrenceId"]
    assert to_cfx(Event.create("custom", {"a": 1}, source="x"), "H") is None


def test_samples_are_sdk_shaped():
    for name, (_, doc) in SAMPLES.items():
        assert list(doc)[:4] == ["MessageName", "Version", "TimeStamp", "UniqueID"], name
        msgspec.json.decode(cfx.encode(doc))


def test_times_without_an_offset_are_taken_as_utc_on_the_way_out():
    e = Event.create("test.result", {"unit_id": "U", "result": "pass", "start_time": "2024-05-14T09:30:58Z",
                                     "steps": [{"name": "a", "status": "pass", "start_time": "2024-05-14T09:30:58",
                                                "end_time": "2024-05-14T09:30:59"}]}, source="x")
    doc = to_cfx(e, "H")
    start = doc["MessageBody"]["TestedUnits"][0]["Tests"][0]["TestStartTime"]
    assert datetime.fromisoformat(start) == datetime(2024, 5, 14, 9, 30, 58, tzinfo=timezone.utc)


# ------------------------------------------------------------------------------------------------ issue 16, 23
def test_gzip_is_inflated_only_up_to_the_bound():
    import gzip

    import pytest

    from agent.protocols import cfx

    bomb = gzip.compress(b"{" + b" " * 50_000_000 + b"}", 9)  # ~50 KB that would be 50 MB
    with pytest.raises(cfx.CfxError, match="inflates to more than 1000000 bytes"):
        cfx.unpack(bomb, "gzip", 1_000_000)
    assert cfx.unpack(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 4)[0] == b"abcd"  # members, at the bound
    with pytest.raises(cfx.CfxError, match="truncated"):
        cfx.unpack(gzip.compress(b"abc" * 100)[:-12], "gzip")


def test_json_nested_too_deep_is_a_cfx_error():
    import pytest

    from agent.protocols import cfx

    for depth in (900, 5000, 60000):  # past canonical()'s recursion, past msgspec's
        body = b'{"MessageName":"CFX.Heartbeat","UniqueID":"u","TimeStamp":"2024-01-01T00:00:00Z","MessageBody":{"a":' \
            + b"[" * depth + b"]" * depth + b"}}"
        with pytest.raises(cfx.CfxError, match="nested too deep"):
            cfx.decode(body)


def test_own_events_and_relays():
    from agent.events.model import Event
    from agent.protocols.cfx import read_envelope
    from agent.protocols.cfx_mapping import is_own, relay_cfx

    result = {"unit_id": "SN1", "result": "pass", "start_time": "2026-11-23T10:00:00Z"}
    for source in ("serial:fixture", "gpio", "simulated", "cli", "my-script"):
        assert is_own(Event.create("test.result", result, source=source))
    for source in ("cfx:cfx", "mqtt:mqtt"):
        assert not is_own(Event.create("test.result", result, source=source))
    foreign = Event.create("test.result", {**result, "custom_data": {"cfx": {"handle": "T.1"}}}, source="cli")
    assert not is_own(foreign) and relay_cfx(foreign) is None  # no original kept: nothing to relay
    body = {"TransactionID": "t", "RecipeName": "R", "TestedUnits": [{"UnitIdentifier": "SN1", "Tests": [
        {"TestName": "a", "SymptomsFound": [{"SymptomCode": "S"}], "Error": "e"}]}]}
    relayed = Event.create("test.result", {**result, "custom_data": {"cfx": {
        "handle": "T.1", "original": {"message": "CFX.Production.TestAndInspection.UnitsTested",
                                      "unique_id": "0a2b", "time_stamp": "2026-11-23T10:00:00+00:00",
                                      "body": body}}}}, source="cfx:cfx")
    env = read_envelope(relay_cfx(relayed))
    assert env.source == "T.1" and env.unique_id == "0a2b" and env.body == body
