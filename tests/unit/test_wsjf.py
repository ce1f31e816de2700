"""The WSJF mapping, against the example in reference/wats-api.md §2.5 (copied to tests/data)."""

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.events import Event, TestMeasurement, TestResult, TestResultEvent, TestStep
from agent.protocols.wsjf import MappingError, Station, to_wsjf

EXAMPLE = json.loads((Path(__file__).resolve().parents[1] / "data" / "wsjf_example.json").read_text())
CET = timezone(timedelta(hours=1))
START = datetime(2026, 3, 1, 8, 15, tzinfo=timezone.utc)
P, F = TestResult.PASS, TestResult.FAIL

STATION = Station(machine_name="rpi-fixture-07", location="Line 2", purpose="Production",
                  process_codes={"test": 10}, agent_version="0.1.0", timezone=CET)


def example_event(volts=5.01, led=True, reported=P):
    payload = TestResultEvent(
        unit_id="SN000123", part_number="FIX-PCBA-01", revision="A", result=reported, start_time=START,
        end_time=START + timedelta(seconds=12.5), operator_id="edge-agent", fixture_id="FX-07",
        steps=[
            TestStep(name="Supply voltage", status=P, measurements=[
                TestMeasurement(name="Supply voltage", status=P, value=volts, unit="V", low_limit=4.75,
                                high_limit=5.25, comp_op="GELE")]),
            TestStep(name="LED check", status=P, measurements=[
                TestMeasurement(name="LED check", status=P, value=led, comp_op="LOG")]),
        ])
    return Event.create("test.result", payload, source="test")


def strip_ours(report):
    """What the example leaves to the builder: the id (ours is the event id), step ids, the sequence path."""
    r = copy.deepcopy(report)
    r.pop("id")

    def walk(step):
        step.pop("id", None)
        if "seqCall" in step:
            step["seqCall"].pop("path")
        for s in step.get("steps", []):
            walk(s)

    walk(r["root"])
    return r


def test_maps_the_reference_example_exactly():
    ev = example_event()
    report = to_wsjf(ev, STATION)
    assert report["id"] == ev.id  # a resend overwrites the same report
    assert strip_ours(report) == strip_ours(EXAMPLE)
    assert report["root"]["id"] == 1 and [s["id"] for s in report["root"]["steps"]] == [2, 3]


def test_the_agent_judges_limits_and_propagates_failure():
    report = to_wsjf(example_event(volts=5.4, reported=P), STATION)  # the device said pass
    volt = report["root"]["steps"][0]
    assert volt["status"] == "F" and volt["numericMeas"][0]["status"] == "F"
    assert volt["causedUUTFailure"] is True and report["uut"]["stepIdCausedUUTFailure"] == 2
    assert report["root"]["status"] == "F" and report["result"] == "F"
    led = to_wsjf(example_event(led=False), STATION)
    assert led["root"]["steps"][1]["booleanMeas"] == [{"status": "F"}] and led["result"] == "F"


def test_single_limit_ops_use_low_limit_only():
    payload = TestResultEvent(unit_id="U1", part_number="PN", result=P, start_time=START, steps=[
        TestStep(name="Leakage", status=P, measurements=[
            TestMeasurement(name="Leakage", status=P, value=0.2, unit="uA", high_limit=1.0, comp_op="LE")])])
    [step] = to_wsjf(Event.create("test.result", payload), STATION)["root"]["steps"]
    assert step["stepType"] == "ET_NLT"
    assert step["numericMeas"] == [{"status": "P", "value": 0.2, "unit": "uA", "compOp": "LE", "lowLimit": 1.0}]


def test_multi_and_mixed_measurements():
    payload = TestResultEvent(unit_id="U1", part_number="PN", result=P, start_time=START, steps=[
        TestStep(name="Rails", status=P, measurements=[
            TestMeasurement(name="3V3", status=P, value=3.3, low_limit=3.2, high_limit=3.4, comp_op="GELE"),
            TestMeasurement(name="5V0", status=P, value=5.0, low_limit=4.9, high_limit=5.1, comp_op="GELE")]),
        TestStep(name="Mixed", status=P, measurements=[
            TestMeasurement(name="FW", status=P, value="1.2.3"),
            TestMeasurement(name="Beep", status=P, value=True)]),
        TestStep(name="Setup", status=P)])
    rails, mixed, setup = to_wsjf(Event.create("test.result", payload), STATION)["root"]["steps"]
    assert rails["stepType"] == "ET_MNLT" and [m["name"] for m in rails["numericMeas"]] == ["3V3", "5V0"]
    assert mixed["stepType"] == "SequenceCall" and [s["stepType"] for s in mixed["steps"]] == ["ET_SVT", "ET_PFT"]
    # a step that carries only its verdict is a pass/fail test (a strict server refuses ET_NLT without a value)
    assert setup["stepType"] == "ET_PFT" and setup["booleanMeas"] == [{"status": "P"}]
    assert [s["id"] for s in mixed["steps"]] == [4, 5] and setup["id"] == 6  # depth-first


@pytest.mark.parametrize("change,field", [
    (dict(part_number=None), "part_number"),
    (dict(unit_id="x" * 101), "unit_id"),
])
def test_unmappable_reports_name_the_field(change, field):
    payload = TestResultEvent(unit_id="U1", part_number="PN", result=P, start_time=START)
    for k, v in change.items():
        setattr(payload, k, v)
    with pytest.raises(MappingError, match=field):
        to_wsjf(Event.create("test.result", payload), STATION)


def test_process_codes_per_test_type():
    payload = TestResultEvent(unit_id="U1", part_number="PN", result=P, start_time=START,
                              custom_data={"test_type": "selftest"})
    ev = Event.create("test.result", payload)
    with pytest.raises(MappingError, match="no process code for test type 'selftest'"):
        to_wsjf(ev, STATION)
    st = Station(**{**STATION.__dict__, "process_codes": {"test": 10, "selftest": 90}})
    assert to_wsjf(ev, st)["processCode"] == 90
    assert to_wsjf(ev, Station(**{**STATION.__dict__, "default_process_code": 50}))["processCode"] == 50
