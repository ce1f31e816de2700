"""The stand-in itself enforces what it should (so tests built on it mean something).

Every body here is written by hand from ``reference/wats-api.md`` §2, never produced by the agent's code (except
``test_accepts_what_the_mapping_builds``, which is a check of the agent against the stand-in)."""

import copy
import json
import math
import urllib.request
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.wats_contract import (NUMERIC_ORACLE, RANGE_OPS, SINGLE_LIMIT_OPS, STRING_ORACLE, audit_report,
                                 check_report, judge_numeric, judge_string)
from tests.wats_standin import WatsStandIn

EXAMPLE = json.loads((Path(__file__).resolve().parents[1] / "data" / "wsjf_example.json").read_text())
OTHER_ID = "0b8f3a52-6c1d-4e2f-8a7b-9c0d1e2f3a4b"


@pytest.fixture
def wats():
    s = WatsStandIn()
    yield s
    s.close()


def post(wats, report, token=None, path="/api/Report/WSJF", raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(report).encode()
    req = urllib.request.Request(wats.url + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Basic {token or wats.token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


def example_with(*steps: dict, result: str = "P", **top) -> dict:
    """The §2.5 example with its root's steps replaced, the result (and the root's status, the same) and other
    top-level keys set."""
    r = copy.deepcopy(EXAMPLE)
    r["root"]["steps"] = list(steps)
    r["result"] = r["root"]["status"] = result
    r.update(top)
    return r


def nlt(op: str, value, low=None, high=None, status="P", step_status=None, **extra) -> dict:
    m = {"status": status, "value": value, "unit": "V", "compOp": op, **extra}
    if low is not None:
        m["lowLimit"] = low
    if high is not None:
        m["highLimit"] = high
    return {"stepType": "ET_NLT", "name": f"{op} test", "group": "M", "status": step_status or status,
            "numericMeas": [m]}


def step(step_type: str, **payload) -> dict:
    return {"stepType": step_type, "name": f"a {step_type}", "group": "M", "status": "P", **payload}


def seq(*steps: dict, status="P", name="Sub") -> dict:
    return {"stepType": "SequenceCall", "name": name, "group": "M", "status": status,
            "seqCall": {"path": "edge/sub.seq", "name": name, "version": "1.0.0"}, "steps": list(steps)}


# ------------------------------------------------------------------------------------------------ what passes
def test_accepts_the_reference_example_and_counts_resends(wats):
    assert post(wats, EXAMPLE)[0] == 200
    assert post(wats, EXAMPLE)[0] == 200
    assert wats.unique_reports == 1 and wats.duplicates() == {EXAMPLE["id"]: 2}
    assert wats.audit == [] and wats.refusals() == []


ACCEPTED = {
    "aliases and nesting": example_with(
        {**seq(step("NumericLimitTest", numericMeas=[{"status": "P", "value": 1, "compOp": "LOG"}]),
               step("Action"), step("Label"), step("Statement"), step("ET_A"), step("NI_Wait"),
               name="Inner"), "stepType": "WATS_SeqCall"},
        step("PassFailTest", booleanMeas=[{"status": "P", "name": None, "value": True}])),
    "multi steps with names": example_with(
        step("ET_MNLT", numericMeas=[{"name": "a", "status": "P", "value": 1.0, "compOp": "GE", "lowLimit": 0},
                                     {"name": "b", "status": "P", "value": -1, "compOp": "LE", "lowLimit": 0,
                                      "highLimit": None}]),
        step("ET_MPFT", booleanMeas=[{"name": "x", "status": "P"}, {"name": "y", "status": "P"}]),
        step("ET_MSVT", stringMeas=[{"name": "fw", "status": "P", "value": "1.2", "compOp": "CASESENSIT",
                                     "limit": "1.2"}, {"name": "free", "status": "P", "value": "t", "compOp": "LOG"}]),
        step("ET_SVT", stringMeas=[{"status": "P", "value": "ABC", "compOp": "IGNORECASE", "limit": "abc"}])),
    "non-finite values as pydantic writes them": example_with(
        nlt("LOG", "NaN"), nlt("GE", "Infinity", low=0, status="F"), nlt("LE", "-Infinity", low=0, status="F"),
        result="F"),
    "every optional field": {
        **example_with(step("MessagePopup", messagePopup={"response": "ok", "button": 1}),
                       step("CallExecutable", callExe={"exitCode": 0}),
                       {**nlt("GELE", 5, 4, 6, valueFormat="%.2f", lowLimitFormat="%.1f", highLimitFormat="%.1f"),
                        "id": 2, "errorCode": 0, "errorCodeFormat": "%d", "errorMessage": "", "reportText": "r" * 5000,
                        "start": "2026-03-01T09:15:01+01:00", "totTime": 0.5, "tsGuid": "g",
                        "causedSeqFailure": False, "causedUUTFailure": False,
                        "loop": {"idx": 0, "num": 1, "endingIndex": 0, "passed": 1, "failed": 0},
                        "additionalResults": [], "chart": {"chartType": "Line"}, "attachment": {"name": "a"}}),
        "processName": "SW Debug", "processCodeFormat": "{0}",
        "uut": {"user": "u" * 100, "comment": "c" * 5000, "execTime": 1, "fixtureId": "f" * 100,
                "testSocketIndex": 0, "errorCode": 0, "errorMessage": "", "batchSN": "b" * 100,
                "batchFailCount": 0, "batchLoopIndex": 0, "stepIdCausedUUTFailure": 2},
        "miscInfos": [{"description": "d" * 100, "text": "t" * 100}, {"description": "n", "numeric": 3.5,
                                                                      "numericFormat": "%f", "typedef": "x"}],
        "subUnits": [{"partType": "p" * 50, "pn": "MOD-A", "sn": "M1", "rev": "B", "idx": 1, "parentIdx": 0,
                      "position": 2}],
        "assets": [{"sn": "FX-1", "assetType": "Fixture", "partNumber": "FX", "usageCount": 1}],
        "pn": "P" * 100, "sn": "A-Za-z0-9-_.", "rev": "Ω",
    },
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepts_what_the_contract_allows(wats, name):
    status, body, _ = post(wats, ACCEPTED[name])
    assert status == 200, body
    assert wats.audit == []


def test_accepts_what_the_mapping_builds(wats):
    """The agent's own mapping of a simple result: a check of the agent, not of the stand-in."""
    from datetime import datetime

    from agent.events import Event, TestMeasurement, TestResult, TestResultEvent, TestStep
    from agent.protocols.wsjf import Station, to_wsjf

    start = datetime.now(timezone.utc) - timedelta(seconds=5)
    payload = TestResultEvent(unit_id="U1", part_number="PN", result=TestResult.PASS, start_time=start, steps=[
        TestStep(name="I", status=TestResult.PASS, measurements=[
            TestMeasurement(name="I", status=TestResult.PASS, value=0.2, high_limit=1.0, comp_op="LE")])])
    report = to_wsjf(Event.create("test.result", payload),
                     Station("st", "loc", "purpose", process_codes={"test": 50}, agent_version="x"))
    status, body, _ = post(wats, report)
    assert status == 200, body
    assert wats.audit == [], wats.audit_text()


# ------------------------------------------------------------------------------------------------ what is refused
def _set(path: str, value):
    """A mutation that sets (or, for value ..., deletes) the key at a dotted path of the example."""
    def mutate(r):
        *parents, last = path.split(".")
        node = r
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is ...:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return mutate


NLT0 = "root.steps.0.numericMeas.0"
PFT1 = "root.steps.1.booleanMeas.0"
FORBIDDEN = "*%?[]^!/\\"


def _rename(old, new):
    return lambda r: r.__setitem__(new, r.pop(old))


def _steps(*steps):
    return lambda r: r["root"].__setitem__("steps", list(steps))


REFUSED = [
    # top level (§2.3)
    (_set("processCode", ...), "processCode: missing required field 'processCode'"),
    (_rename("processCode", "ProcessCode"), "keys are case-sensitive"),
    (_rename("machineName", "MachineName"), "MachineName: unknown key (keys are case-sensitive: 'machineName')"),
    (_set("comment", "x"), "comment: unknown key"),
    (_set("assetStats", {}), "assetStats: unknown key"),
    (_set("processCode", 77), "processCode 77 is not a test operation"),
    (_set("processCode", 500), "processCode 500 is not a test operation"),
    (_set("processCode", "10"), "processCode: must be an integer"),
    (_set("processCode", True), "processCode: must be an integer"),
    (_set("processName", "sw debug"), "processName: 'sw debug' does not match 'SW Debug'"),
    (_set("result", "Passed"), "result: 'Passed' is not one of P, F, E, T"),
    (_set("result", "D"), "result: 'D' is not one of P, F, E, T"),
    (_set("type", "R"), "type: 'R'"),
    (_set("uur", {"user": "x"}), "uur: only a UUR report"),
    (_set("id", "not-a-guid"), "id: 'not-a-guid' is not a GUID"),
    (_set("id", 12), "id: 12 is not a GUID"),
    (_set("pn", "P" * 101), "pn: 101 characters, must be 1..100"),
    (_set("sn", ""), "sn: 0 characters, must be 1..100"),
    (_set("rev", None), "rev: missing required field"),
    (_set("machineName", "m" * 101), "machineName: 101 characters"),
    (_set("location", ""), "location: 0 characters"),
    (_set("purpose", "p" * 101), "purpose: 101 characters"),
    (_set("location", 2), "location: must be a string"),
    *[(_set(key, f"A{c}B"), f"{key}: contains {c!r}") for key in ("pn", "sn", "rev") for c in FORBIDDEN],
    (_set("start", "2026-03-01T09:15:00"), "start: '2026-03-01T09:15:00' must carry a UTC offset"),
    (_set("start", "yesterday"), "start: 'yesterday' is not an ISO-8601 time"),
    (_set("startUTC", "2026-03-01T08:15:00+00:00"), "startUTC: '2026-03-01T08:15:00+00:00' must be an ISO-8601 time in Z"),
    (_set("startUTC", "2026-03-01T09:15:00Z"), "startUTC: startUTC must be the same instant as start"),
    (lambda r: r.update(start="2099-01-01T00:00:00+00:00", startUTC="2099-01-01T00:00:00Z"), "future"),
    # uut
    (_set("uut", ...), "uut: missing required field 'uut'"),
    (_set("uut", []), "uut: must be an object"),
    (_set("uut.partNumber", "x"), "uut.partNumber: unknown key"),
    (_set("uut.User", "x"), "uut.User: unknown key (keys are case-sensitive: 'user')"),
    (_set("uut.user", "u" * 101), "uut.user: 101 characters, at most 100 allowed"),
    (_set("uut.comment", "c" * 5001), "uut.comment: 5001 characters, at most 5000 allowed"),
    (_set("uut.execTime", "12.5"), "uut.execTime: must be a finite number"),
    (_set("uut.fixtureId", "f" * 101), "uut.fixtureId: 101 characters"),
    (_set("uut.testSocketIndex", 1.5), "uut.testSocketIndex: must be an integer"),
    (_set("uut.batchSN", "b" * 101), "uut.batchSN: 101 characters"),
    (_set("uut.batchFailCount", "0"), "uut.batchFailCount: must be an integer"),
    (_set("uut.batchLoopIndex", 0.5), "uut.batchLoopIndex: must be an integer"),
    (_set("uut.stepIdCausedUUTFailure", "3"), "uut.stepIdCausedUUTFailure: must be an integer"),
    (_set("uut.errorCode", 1.5), "uut.errorCode: must be an integer or a string"),
    (_set("uut.errorMessage", 5), "uut.errorMessage: must be a string"),
    # miscInfos
    (_set("miscInfos", {}), "miscInfos: must be an array"),
    (_set("miscInfos.0", "AgentVersion"), "miscInfos[0]: must be an object"),
    (_set("miscInfos.0.text", "t" * 101), "miscInfos[0].text: 101 characters, at most 100 allowed"),
    (_set("miscInfos.0.description", ...), "miscInfos[0].description: required string missing"),
    (_set("miscInfos.0.description", "d" * 101), "miscInfos[0].description: 101 characters"),
    (_set("miscInfos.0.description", ""), "miscInfos[0].description: 0 characters"),
    (_set("miscInfos.0.text", ...), "miscInfos[0]: needs one of text or numeric"),
    (_set("miscInfos.0.numeric", 1), "miscInfos[0]: carries both text and numeric"),
    (_set("miscInfos.0.value", "x"), "miscInfos[0].value: unknown key"),
    (_set("miscInfos.0.text", 5), "miscInfos[0].text: must be a string"),
    (lambda r: r["miscInfos"].append({"description": "n", "numeric": "5"}), "miscInfos[1].numeric: must be a finite"),
    # subUnits
    (_set("subUnits", [{"partType": "p" * 51, "pn": "A", "sn": "B", "rev": "C"}]), "subUnits[0].partType: 51 characters"),
    (_set("subUnits", [{"partType": "PCBA", "sn": "B", "rev": "C"}]), "subUnits[0].pn: required string missing"),
    (_set("subUnits", [{"partType": "PCBA", "pn": "A", "sn": "B/1", "rev": "C"}]), "subUnits[0].sn: contains '/'"),
    (_set("subUnits", [{"partType": "PCBA", "pn": "A", "sn": "B", "rev": "C" * 101}]), "subUnits[0].rev: 101 characters"),
    (_set("subUnits", [{"partType": "PCBA", "pn": "A", "sn": "B", "rev": "C", "partNumber": "A"}]),
     "subUnits[0].partNumber: unknown key"),
    (_set("subUnits", [{"partType": "PCBA", "pn": "A", "sn": "B", "rev": "C", "idx": "1"}]),
     "subUnits[0].idx: must be an integer"),
    (_set("subUnits", [{"pn": "A", "sn": "B", "rev": "C"}]), "subUnits[0].partType: required string missing"),
    (_set("assets", [{"serialNumber": "FX"}]), "assets[0].serialNumber: unknown key"),
    # steps: common keys (§2.4)
    (_set("root.stepType", "ET_NLT"), "root.stepType: the root is a SequenceCall"),
    (_set("root.seqCall", ...), "root.seqCall: required object missing"),
    (_set("root.seqCall.version", ...), "root.seqCall.version: required string missing"),
    (_set("root.seqCall.file", "x"), "root.seqCall.file: unknown key"),
    (_set("root.steps", ...), "root.steps: required array missing"),
    (_set("root.steps.0.value", 5), "root.steps[0].value: unknown key"),
    (_set("root.steps.0.Status", "P"), "root.steps[0].Status: unknown key (keys are case-sensitive: 'status')"),
    (_set("root.steps.0.name", "n" * 101), "root.steps[0].name: 101 characters, must be 1..100"),
    (_set("root.steps.0.name", ...), "root.steps[0].name: required string missing"),
    (_set("root.steps.0.name", ""), "root.steps[0].name: 0 characters"),
    (_set("root.steps.0.group", "X"), "root.steps[0].group: 'X' is not one of S, M, C"),
    (_set("root.steps.0.status", "Passed"), "root.steps[0].status: 'Passed' is not one of P, F, S, D, E, T"),
    (_set("root.steps.0.status", ...), "root.steps[0].status: required field missing"),
    (_set("root.steps.0.id", "1"), "root.steps[0].id: must be an integer"),
    (_set("root.steps.0.reportText", "r" * 5001), "root.steps[0].reportText: 5001 characters, at most 5000"),
    (_set("root.steps.0.causedUUTFailure", "yes"), "root.steps[0].causedUUTFailure: must be true or false"),
    (_set("root.steps.0.causedSeqFailure", 1), "root.steps[0].causedSeqFailure: must be true or false"),
    (_set("root.steps.0.totTime", "1"), "root.steps[0].totTime: must be a finite number"),
    (_set("root.steps.0.start", "then"), "root.steps[0].start: 'then' is not an ISO-8601 time"),
    (_set("root.steps.0.loop", {"idx": 0, "count": 1}), "root.steps[0].loop.count: unknown key"),
    (_set("root.steps.0.stepType", "NumericStep"), "root.steps[0].stepType: 'NumericStep' is not a step type"),
    (_set("root.steps.0.stepType", ...), "root.steps[0].stepType: required string missing"),
    # steps: the payload of each stepType
    (_steps(step("ET_NLT")), "root.steps[0].numericMeas: required array missing for a ET_NLT step"),
    (_steps(step("ET_NLT", numericMeas=[])), "root.steps[0].numericMeas: a ET_NLT step takes exactly 1 measurement, got 0"),
    (_steps(step("NumericLimitTest", numericMeas=[{"status": "P", "value": 1, "compOp": "LOG"}] * 2)),
     "root.steps[0].numericMeas: a NumericLimitTest step takes exactly 1 measurement, got 2"),
    (_steps(step("ET_NLT", numericMeas=[{"status": "P", "value": 1, "compOp": "LOG"}], booleanMeas=[{"status": "P"}])),
     "root.steps[0].booleanMeas: a ET_NLT step does not take booleanMeas"),
    (_steps(step("ET_MNLT", numericMeas=[])), "root.steps[0].numericMeas: a ET_MNLT step needs at least one"),
    (_steps(step("ET_MNLT", numericMeas=[{"status": "P", "value": 1, "compOp": "LOG"}])),
     "root.steps[0].numericMeas[0].name: required (a non-empty string) in a ET_MNLT step"),
    (_steps(step("MultiNumericLimitTest", numericMeas=[{"name": "", "status": "P", "value": 1, "compOp": "LOG"}])),
     "root.steps[0].numericMeas[0].name: required"),
    (_steps(step("ET_MNLT", numericMeas=[{"name": "a", "status": "P", "value": 1, "compOp": "LOG"}] * 2)),
     "root.steps[0].numericMeas[1].name: 'a' is not unique"),
    (_steps(step("ET_PFT", booleanMeas=[{"status": "P"}, {"status": "P"}])),
     "root.steps[0].booleanMeas: a ET_PFT step takes exactly 1 measurement, got 2"),
    (_steps(step("PassFailTest")), "root.steps[0].booleanMeas: required array missing"),
    (_steps(step("ET_PFT", booleanMeas=[{"status": "P"}], numericMeas=[])),
     "root.steps[0].numericMeas: a ET_PFT step does not take numericMeas"),
    (_steps(step("ET_MPFT", booleanMeas=[{"status": "P"}])), "root.steps[0].booleanMeas[0].name: required"),
    (_steps(step("ET_MPFT", booleanMeas=[])), "root.steps[0].booleanMeas: a ET_MPFT step needs at least one"),
    (_steps(step("ET_SVT", stringMeas=[])), "root.steps[0].stringMeas: a ET_SVT step takes exactly 1"),
    (_steps(step("StringValueTest")), "root.steps[0].stringMeas: required array missing"),
    (_steps(step("ET_MSVT", stringMeas=[{"name": "a", "status": "P", "value": "x", "compOp": "LOG"}] * 2)),
     "root.steps[0].stringMeas[1].name: 'a' is not unique"),
    (_steps(step("MultiStringTest", stringMeas=[{"status": "P", "value": "x", "compOp": "LOG"}])),
     "root.steps[0].stringMeas[0].name: required"),
    (_steps(step("Action", numericMeas=[{"status": "P", "value": 1, "compOp": "LOG"}])),
     "root.steps[0].numericMeas: a Action step does not take numericMeas"),
    (_steps(step("ET_A", booleanMeas=[{"status": "P"}])), "root.steps[0].booleanMeas: a ET_A step does not take"),
    (_steps(step("Label", stringMeas=[])), "root.steps[0].stringMeas: a Label step does not take stringMeas"),
    (_steps(step("Statement", numericMeas=[])), "root.steps[0].numericMeas: a Statement step does not take"),
    (_steps(step("Action", steps=[])), "root.steps[0].steps: a Action step does not take steps"),
    (_steps(step("ET_NLT", numericMeas=[{"status": "P", "value": 1, "compOp": "LOG"}], seqCall={})),
     "root.steps[0].seqCall: a ET_NLT step does not take seqCall"),
    (_steps(step("SequenceCall", steps=[])), "root.steps[0].seqCall: required object missing"),
    (_steps(seq(seq(step("ET_NLT", numericMeas=[{"status": "P", "compOp": "LOG"}])))),
     "root.steps[0].steps[0].steps[0].numericMeas[0].value: required number missing"),
    # numericMeas
    (_set(f"{NLT0}.value", ...), "root.steps[0].numericMeas[0].value: required number missing"),
    (_set(f"{NLT0}.value", None), "root.steps[0].numericMeas[0].value: required number missing"),
    (_set(f"{NLT0}.value", "5.01"), "root.steps[0].numericMeas[0].value: must be a number"),
    (_set(f"{NLT0}.value", "nan"), "root.steps[0].numericMeas[0].value: must be a number"),
    (_set(f"{NLT0}.value", True), "root.steps[0].numericMeas[0].value: must be a number"),
    (_set(f"{NLT0}.status", ...), "root.steps[0].numericMeas[0].status: required field missing"),
    (_set(f"{NLT0}.status", "Pass"), "root.steps[0].numericMeas[0].status: 'Pass' is not one of"),
    (_set(f"{NLT0}.compOp", ...), "root.steps[0].numericMeas[0].compOp: required field missing"),
    (_set(f"{NLT0}.compOp", "BETWEEN"), "root.steps[0].numericMeas[0].compOp: 'BETWEEN' is not a numeric compOp"),
    (_set(f"{NLT0}.compOp", "CASESENSIT"), "root.steps[0].numericMeas[0].compOp: 'CASESENSIT' is not a numeric"),
    (_set(f"{NLT0}.compop", "GELE"), "root.steps[0].numericMeas[0].compop: unknown key (keys are case-sensitive"),
    (_set(f"{NLT0}.lowLimitInclusive", True), "root.steps[0].numericMeas[0].lowLimitInclusive: unknown key"),
    (_set(f"{NLT0}.unit", 5), "root.steps[0].numericMeas[0].unit: must be a string"),
    (_set(f"{NLT0}.compOp", "LOG"), "root.steps[0].numericMeas[0]: compOp LOG takes no limits"),
    (lambda r: r["root"]["steps"][0]["numericMeas"][0].update(compOp="LE", highLimit=5.25),
     "root.steps[0].numericMeas[0].highLimit: single-limit compOp LE takes lowLimit only"),
    (lambda r: r["root"]["steps"][0]["numericMeas"][0].update(compOp="LT", lowLimit=None),
     "root.steps[0].numericMeas[0].lowLimit: single-limit compOp LT takes lowLimit only, and lowLimit is missing"),
    (lambda r: r["root"]["steps"][0]["numericMeas"][0].update(compOp="EQT", highLimit=5.25),
     "root.steps[0].numericMeas[0].highLimit: single-limit compOp EQT"),
    (_set(f"{NLT0}.highLimit", ...), "root.steps[0].numericMeas[0].highLimit: range compOp GELE needs both limits"),
    (lambda r: r["root"]["steps"][0]["numericMeas"][0].update(compOp="LTGT", lowLimit=None),
     "root.steps[0].numericMeas[0].lowLimit: range compOp LTGT needs both limits"),
    (_set(f"{NLT0}.lowLimit", "4.75"), "root.steps[0].numericMeas[0].lowLimit: must be a finite number"),
    (_set(f"{NLT0}.highLimit", "Infinity"), "root.steps[0].numericMeas[0].highLimit: must be a finite number"),
    # booleanMeas
    (_set(f"{PFT1}.value", "true"), "root.steps[1].booleanMeas[0].value: must be true or false"),
    (_set(f"{PFT1}.status", ...), "root.steps[1].booleanMeas[0].status: required field missing"),
    (_set(f"{PFT1}.expected", False), "root.steps[1].booleanMeas[0].expected: unknown key"),
    (_set(f"{PFT1}.name", 3), "root.steps[1].booleanMeas[0].name: must be a string or null"),
    # stringMeas
    (_steps(step("ET_SVT", stringMeas=[{"status": "P", "compOp": "LOG"}])),
     "root.steps[0].stringMeas[0].value: required string missing"),
    (_steps(step("ET_SVT", stringMeas=[{"status": "P", "value": 5, "compOp": "LOG"}])),
     "root.steps[0].stringMeas[0].value: must be a string"),
    (_steps(step("ET_SVT", stringMeas=[{"status": "P", "value": "a", "compOp": "GELE", "limit": "a"}])),
     "root.steps[0].stringMeas[0].compOp: 'GELE' is not a string compOp"),
    (_steps(step("ET_SVT", stringMeas=[{"status": "P", "value": "a", "limit": "a"}])),
     "root.steps[0].stringMeas[0].compOp: required field missing"),
    (_steps(step("ET_SVT", stringMeas=[{"status": "P", "value": "a", "compOp": "CASESENSIT"}])),
     "root.steps[0].stringMeas[0].limit: required string missing for compOp CASESENSIT"),
    (_steps(step("ET_SVT", stringMeas=[{"status": "P", "value": "a", "compOp": "NE", "limit": 1}])),
     "root.steps[0].stringMeas[0].limit: must be a string"),
    (_steps(step("ET_SVT", stringMeas=[{"status": "P", "value": "a", "compOp": "LOG", "unit": "x"}])),
     "root.steps[0].stringMeas[0].unit: unknown key"),
]


@pytest.mark.parametrize("mutate,reason", REFUSED, ids=[r for _, r in REFUSED])
def test_refuses_what_the_contract_forbids(wats, mutate, reason):
    r = copy.deepcopy(EXAMPLE)
    mutate(r)
    status, body, _ = post(wats, r)
    assert status == 400 and reason in body["message"], body
    assert wats.unique_reports == 0
    assert any(reason in p for p in wats.refusals())


@pytest.mark.parametrize("raw,reason", [
    (json.dumps(EXAMPLE).replace("5.01", "NaN"), "NaN is not JSON"),
    (json.dumps(EXAMPLE).replace("5.01", "-Infinity"), "-Infinity is not JSON"),
    (json.dumps(EXAMPLE).replace("5.01", "1e400"), "root.steps[0].numericMeas[0].value: must be a number"),
    (json.dumps(EXAMPLE).replace('"rev": "A"', '"rev": "A", "rev": "B"'), "duplicate key 'rev'"),
    ("{", "(body): invalid JSON"),
    ("[]", "(body): a report must be one JSON object"),
])
def test_refuses_what_is_not_strict_json(wats, raw, reason):
    status, body, _ = post(wats, None, raw=raw.encode())
    assert status == 400 and reason in body["message"], body


def test_lists_every_problem_of_a_report(wats):
    r = copy.deepcopy(EXAMPLE)
    r["sn"] = "a/b"
    r["miscInfos"][0]["text"] = "x" * 101
    del r["root"]["steps"][0]["numericMeas"][0]["value"]
    status, body, _ = post(wats, r)
    assert status == 400
    assert body["message"].split("; ") == [
        "sn: contains '/', which the WATS client refuses (* % ? [ ] ^ ! / \\)",
        "miscInfos[0].text: 101 characters, at most 100 allowed",
        "root.steps[0].numericMeas[0].value: required number missing"]


def test_auth_and_injected_faults(wats):
    assert post(wats, EXAMPLE, token="wrong")[0] == 401
    wats.faults.rate_limit_next = 1
    status, _, headers = post(wats, EXAMPLE)
    assert status == 429 and headers["Retry-After"] == "1"
    wats.faults.rate_limit_next, wats.faults.retry_after = 1, "date"
    assert post(wats, EXAMPLE)[2]["Retry-After"].endswith("GMT")
    wats.faults.unavailable_next = 2
    assert [post(wats, EXAMPLE)[0] for _ in range(3)] == [503, 503, 200]
    wats.faults.reset_after_read_next = 1
    with pytest.raises((ConnectionError, urllib.error.URLError, OSError)):
        post(wats, EXAMPLE)
    assert wats.receive_count[EXAMPLE["id"]] == 2  # the reset one was stored: an ambiguous failure


def test_content_type_and_poison(wats):
    req = urllib.request.Request(wats.url + "/api/Report/WSJF", data=json.dumps(EXAMPLE).encode(), method="POST",
                                 headers={"Content-Type": "text/plain", "Authorization": f"Basic {wats.token}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 415
    wats.faults.poison_serials = {EXAMPLE["sn"]}
    status, body, _ = post(wats, EXAMPLE)
    assert status == 400 and "poison" in body["message"]


# ------------------------------------------------------------------------------------------------ the audit
def audited(r: dict) -> list[tuple[str, str, str]]:
    return [(f.path, f.expected.split(" ")[0], f.sent) for f in audit_report(r)]


M0 = "root.steps[0].numericMeas[0].status"
S0 = "root.steps[0].status"


@pytest.mark.parametrize("meas,wrong", [
    # LOG: logged, never judged (a value that is not finite passes too)
    (nlt("LOG", 1e9, status="F"), True), (nlt("LOG", 1e9), False), (nlt("LOG", "NaN"), False),
    # single limit: always against lowLimit
    (nlt("EQ", 6, low=5), True), (nlt("EQ", 5, low=5), False), (nlt("EQ", 5, low=5, status="F"), True),
    (nlt("NE", 5, low=5), True), (nlt("NE", 6, low=5), False), (nlt("NE", "NaN", low=5), True),
    (nlt("LT", 5, low=5), True), (nlt("LT", 4.999, low=5), False),
    (nlt("LE", 5, low=5), False), (nlt("LE", 5.001, low=5), True),
    (nlt("GT", 5, low=5), True), (nlt("GT", 5.001, low=5), False),
    (nlt("GE", "NaN", low=100), True), (nlt("GE", "Infinity", low=100), True), (nlt("GE", 100, low=100), False),
    (nlt("LE", "Infinity", low=10, status="F"), False), (nlt("LE", "-Infinity", low=10), True),
    # range, inside
    (nlt("GTLT", 4, 4, 6), True), (nlt("GTLT", 5, 4, 6), False), (nlt("GTLE", 6, 4, 6), False),
    (nlt("GELT", 6, 4, 6), True), (nlt("GELE", 4, 4, 6), False), (nlt("GELE", 6.5, 4, 6), True),
    (nlt("GELE", "NaN", 4, 6), True), (nlt("GELE", 7, 4, 6, status="F"), False),
    # range, outside
    (nlt("LTGT", 3, 4, 6, status="F"), True), (nlt("LTGT", 5, 4, 6), True), (nlt("LTGT", 3, 4, 6), False),
    (nlt("LTGT", 4, 4, 6), True), (nlt("LEGE", 4, 4, 6), False), (nlt("LEGE", 6, 4, 6), False),
    (nlt("LEGT", 6, 4, 6), True), (nlt("LTGE", 4, 4, 6), True), (nlt("LTGE", 6, 4, 6), False),
    (nlt("LTGT", "-Infinity", 4, 6), True),
    # EQT is not judged by the client library: never a finding
    (nlt("EQT", 5.2, low=5), False), (nlt("EQT", 5, low=5, status="F"), False),
])
def test_audit_finds_a_numeric_status_that_disagrees_with_the_operator(meas, wrong):
    r = example_with(meas, result=meas["status"])
    assert check_report(r, {10: "SW Debug"}) == []
    assert audited(r) == ([(M0, "F" if meas["status"] == "P" else "P", meas["status"])] if wrong else [])


@pytest.mark.parametrize("meas,wrong", [
    ({"status": "P", "value": False}, True), ({"status": "F", "value": True}, True),
    ({"status": "P", "value": True}, False), ({"status": "F", "value": False}, False),
    ({"status": "F"}, False), ({"status": "P"}, False),  # no value: the status is the verdict
])
def test_audit_of_booleans(meas, wrong):
    r = example_with(step("ET_PFT", booleanMeas=[meas], status=meas["status"]),
                     result=meas["status"])
    assert audited(r) == ([("root.steps[0].booleanMeas[0].status", "F" if meas["status"] == "P" else "P",
                            meas["status"])] if wrong else [])


@pytest.mark.parametrize("op,value,limit,status,wrong", [
    ("CASESENSIT", "abc", "ABC", "P", True), ("CASESENSIT", "abc", "abc", "P", False),
    ("EQ", "abc", "abc", "F", True), ("EQ", "abc", "abd", "F", False),
    ("IGNORECASE", "abc", "ABC", "P", False), ("IGNORECASE", "abc", "ABC", "F", True),
    ("IGNORECASE", "abc", "abd", "P", True),
    ("NE", "abc", "abc", "P", True), ("NE", "abc", "ABC", "P", False),
    ("LOG", "anything", None, "F", False), ("LOG", "anything", None, "P", False),
])
def test_audit_of_strings(op, value, limit, status, wrong):
    m = {"status": status, "value": value, "compOp": op, **({"limit": limit} if limit is not None else {})}
    r = example_with(step("ET_SVT", stringMeas=[m], status=status), result=status)
    assert check_report(r, {10: "SW Debug"}) == []
    path = "root.steps[0].stringMeas[0].status"
    assert audited(r) == ([(path, "F" if status == "P" else "P", status)] if wrong else [])


def test_audit_of_how_statuses_roll_up():
    # a failed measurement under a step that passed, in a sequence and a report that passed
    bad = example_with(nlt("GELE", 7, 4, 6, status="F", step_status="P"))
    assert audited(bad) == [(S0, "F", "P")]
    # the step failed; its sequence and the report say P
    r = example_with(seq(nlt("GELE", 7, 4, 6, status="F")))
    assert audited(r) == [("root.steps[0].status", "not", "P"), ("result", "not", "P")]
    r["root"]["steps"][0]["status"] = "F"
    assert audited(r) == [("root.status", "not", "P"), ("result", "not", "P")]
    # all consistent
    r = example_with(seq(nlt("GELE", 7, 4, 6, status="F"), status="F"), result="F")
    assert audited(r) == []
    # an error beside a failure: the step may be E
    r = example_with(step("ET_MNLT", status="E", numericMeas=[
        {"name": "a", "status": "F", "value": 7, "compOp": "LE", "lowLimit": 6},
        {"name": "b", "status": "E", "value": 1, "compOp": "LOG"}]), result="E")
    assert audited(r) == []
    # a multi step that passed although one of its measurements failed
    r = example_with(step("ET_MPFT", booleanMeas=[{"name": "a", "status": "P"}, {"name": "b", "status": "F"}]))
    assert audited(r) == [(S0, "F", "P")]
    # the report failed although nothing did: not a finding (a report may fail for a reason of its own)
    assert audited(example_with(nlt("GELE", 5, 4, 6), result="F")) == []


def test_audit_is_recorded_not_refused_and_a_resend_replaces_it(wats):
    r = example_with(nlt("EQ", 6, low=5))
    assert post(wats, r)[0] == 200  # WATS accepts it: it does not re-judge
    assert [(f.report_id, f.path, f.sent) for f in wats.audit] == [(r["id"], M0, "P")]
    assert "expected F (EQ 5 value 6)" in wats.audit_text()
    fixed = example_with(nlt("EQ", 6, low=5, status="F"), result="F")
    assert post(wats, fixed)[0] == 200
    assert wats.audit == []


def test_audit_rejects_when_asked():
    s = WatsStandIn(audit_rejects=True)
    try:
        status, body, _ = post(s, example_with(nlt("LT", 5, low=5), id=OTHER_ID))
        assert status == 400 and f"audit: {M0}: expected F (LT 5 value 5), sent P" in body["message"]
        assert s.unique_reports == 0
        assert post(s, EXAMPLE)[0] == 200
    finally:
        s.close()


# ------------------------------------------------------------------------------------------------ the oracle itself
def _intervals(op: str, lo: float, hi: float) -> list[tuple[float, bool, float, bool]]:
    """Where each compOp passes, as (from, closed?, to, closed?) pieces of the real line: a second formulation of
    §2.4's table, written as sets instead of comparisons. The ends at ±inf are open, so a value that is not finite
    falls in none of them."""
    inf = math.inf
    return {
        "EQ": [(lo, True, lo, True)],
        "NE": [(-inf, False, lo, False), (lo, False, inf, False)],
        "GT": [(lo, False, inf, False)], "GE": [(lo, True, inf, False)],
        "LT": [(-inf, False, lo, False)], "LE": [(-inf, False, lo, True)],
        "GTLT": [(lo, False, hi, False)], "GELE": [(lo, True, hi, True)],
        "GELT": [(lo, True, hi, False)], "GTLE": [(lo, False, hi, True)],
        "LTGT": [(-inf, False, lo, False), (hi, False, inf, False)],
        "LEGE": [(-inf, False, lo, True), (hi, True, inf, False)],
        "LEGT": [(-inf, False, lo, True), (hi, False, inf, False)],
        "LTGE": [(-inf, False, lo, False), (hi, True, inf, False)],
    }[op]


def _in(v: float, piece: tuple[float, bool, float, bool]) -> bool:
    a, a_closed, b, b_closed = piece
    return (a < v or (a_closed and a == v)) and (v < b or (b_closed and v == b))


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
JUDGED = sorted((SINGLE_LIMIT_OPS | RANGE_OPS) - {"EQT"})


@given(op=st.sampled_from(JUDGED), lo=finite, hi=finite, data=st.data())
def test_the_numeric_table_agrees_with_intervals(op, lo, hi, data):
    values = [lo, hi, math.nan, math.inf, -math.inf, math.nextafter(lo, math.inf), math.nextafter(hi, -math.inf)]
    values.append(data.draw(finite, label="value"))
    for v in values:
        expected = any(_in(v, piece) for piece in _intervals(op, lo, hi))
        assert judge_numeric(op, v, lo, None if op in SINGLE_LIMIT_OPS else hi) is expected, (op, v, lo, hi)


@given(v=st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf])), lo=finite, hi=finite)
def test_log_always_passes_and_eqt_is_not_judged(v, lo, hi):
    assert judge_numeric("LOG", v, None, None) is True
    assert judge_numeric("EQT", v, lo, None) is None


def test_the_table_has_every_operator_of_the_contract():
    assert set(NUMERIC_ORACLE) | {"EQT"} == {"LOG", "EQ", "EQT", "NE", "LT", "LE", "GT", "GE", "GTLT", "GTLE",
                                            "GELT", "GELE", "LTGT", "LTGE", "LEGT", "LEGE"}
    assert set(STRING_ORACLE) | {"LOG"} == {"CASESENSIT", "IGNORECASE", "EQ", "NE", "LOG"}


text = st.text(alphabet="aAbBzZ09 -", max_size=4)


@given(value=text, limit=text)
def test_the_string_table_agrees_with_a_character_by_character_comparison(value, limit):
    same = len(value) == len(limit) and all(a == b for a, b in zip(value, limit))
    folded = len(value) == len(limit) and all(
        a == b or (a.isalpha() and b.isalpha() and ord(a) ^ ord(b) == 0x20) for a, b in zip(value, limit))
    assert judge_string("CASESENSIT", value, limit) is same and judge_string("EQ", value, limit) is same
    assert judge_string("NE", value, limit) is (not same)
    assert judge_string("IGNORECASE", value, limit) is folded
    assert judge_string("LOG", value, limit) is None


@given(op=st.sampled_from(sorted(NUMERIC_ORACLE | {"EQT": None})), lo=finite, width=st.floats(0, 100),
       value=st.one_of(finite, st.sampled_from(["NaN", "Infinity", "-Infinity"])), flip=st.booleans())
def test_a_report_built_from_the_table_is_accepted_and_a_flipped_status_is_found(op, lo, width, value, flip):
    """Validator and audit agree with the oracle: limits placed per operator family are accepted, the oracle's
    status gives no finding, the other one gives exactly one (EQT: never)."""
    hi = lo + width
    low, high = (None, None) if op == "LOG" else (lo, hi if op in RANGE_OPS else None)
    v = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value, value)
    verdict = judge_numeric(op, v, low, high)
    status = "P" if verdict in (True, None) else "F"
    if flip:
        status = "F" if status == "P" else "P"
    r = example_with(nlt(op, value, low, high, status=status), result=status)
    assert check_report(r, {10: "SW Debug"}) == []
    assert len(audit_report(r)) == (1 if flip and verdict is not None else 0)
