"""What fuzzing CFX ingest found (tests/fuzz/test_fuzz_cfx.py): each message below raised something other than
``CfxError`` out of ``decode``/``to_events``, which the source's receiver turns into an "internal error" dead letter
with a traceback in the log. Each is now either events or a ``CfxError`` naming the field."""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone

import pytest

from agent.events.model import validate_payload
from agent.protocols import cfx
from agent.protocols.cfx_mapping import to_events
from agent.protocols.cfx_samples import SAMPLES

WHEN = datetime(2026, 11, 23, 8, 31, 7, tzinfo=timezone.utc)


def _events(doc):
    return [e for env in cfx.decode(cfx.encode(doc)) for e in to_events(env, "cfx:cfx")]


def _maintenance(**task):
    return cfx.envelope_doc("CFX.ResourcePerformance.MaintenancePerformed", {
        "MaintenanceType": "Preventive", "MaintenanceJobCode": "PINS-REPLACE", "ConsumedMaterials": [],
        "Tasks": [{"Task": "Replaced 12 pogo pins", "TaskId": "T1", "Operator": None, **task}]},
        source="Acme.Line4.SN77", when=WHEN)


@pytest.mark.parametrize("where, value", [
    ("TimeStamp", "0001-01-01T00:00:00+14:00"),  # before 0001-01-01 in UTC: OverflowError
    ("TimeStamp", "9999-12-31T23:59:59-14:00"),  # after 9999-12-31 in UTC
    ("TestStartTime", "9999-12-31T23:59:59-14:00"),
])
def test_a_time_past_either_end_of_the_calendar_in_utc_is_named(where, value):
    doc = copy.deepcopy(SAMPLES["ict-units-tested"][1])
    if where == "TimeStamp":
        doc["TimeStamp"] = value
    else:
        doc["MessageBody"]["TestedUnits"][0]["Tests"][0][where] = value
    with pytest.raises(cfx.CfxError, match=re.escape(f"{where}: '{value}' is out of range")):
        _events(doc)


def test_man_hours_that_are_not_a_number_are_named():
    with pytest.raises(cfx.CfxError, match=r"MessageBody.Tasks\[0\].ManHoursConsumed: 'half an hour' is not a "
                                           "number"):  # was ValueError from float()
        _events(_maintenance(ManHoursConsumed="half an hour"))
    with pytest.raises(cfx.CfxError, match="ManHoursConsumed adds up to inf hours"):
        doc = _maintenance(ManHoursConsumed=1e308)
        doc["MessageBody"]["Tasks"].append(dict(doc["MessageBody"]["Tasks"][0]))
        _events(doc)


def test_consumed_materials_of_another_shape_are_left_out_not_a_crash():
    doc = _maintenance(ManHoursConsumed=0.5)
    doc["MessageBody"]["ConsumedMaterials"] = [{"MaterialLocation": "bench 4"}, {"MaterialLocation": {
        "MaterialPackage": "PKG-1"}}, "POGO-100", {"MaterialLocation": {"MaterialPackage": {
            "InternalPartNumber": "POGO-100"}}}]  # the first two were AttributeError: 'str' object has no 'get'
    (event,) = _events(doc)
    validate_payload(event)
    assert event.payload["parts_replaced"] == ["POGO-100"] and event.payload["duration_minutes"] == 30


def test_a_symptom_or_defect_described_by_a_number_is_text_in_the_step_message():
    doc = copy.deepcopy(SAMPLES["ict-units-tested"][1])
    test = doc["MessageBody"]["TestedUnits"][0]["Tests"][0]
    test["SymptomsFound"] = [{"SymptomCode": 4711, "Description": None}]  # was TypeError in "; ".join
    test["DefectsFound"] = [{"DefectCode": "D1", "Description": {"en": "short"}}]
    (event,) = _events(doc)
    assert "4711" in event.payload["steps"][0]["message"]


def test_a_reason_is_one_line_whatever_the_sender_put_in_a_type():
    doc = copy.deepcopy(SAMPLES["work-started"][1])
    doc["MessageBody"]["$type"] = "0\n0"  # the reason quoted it raw: two lines in the log and the dead letter
    with pytest.raises(cfx.CfxError) as err:
        _events(doc)
    assert str(err.value) == "envelope: MessageName CFX.Production.WorkStarted but MessageBody.$type 0\\x0a0"


def test_an_unknown_content_encoding_is_quoted_as_the_sender_wrote_it():
    from proton import symbol  # proton reads the property as a symbol: its repr was "symbol('br')"

    with pytest.raises(cfx.CfxError, match=r"^body: content-encoding 'br' is not gzip$"):
        cfx.unpack(b"{}", symbol("br"))
