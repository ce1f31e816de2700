"""The one table of comparison operators (agent/events/limits.py) against a plain oracle written from
reference/wats-api.md §2.4, and every source's judging through it (issue 15 item 1, 2, 4)."""

import math
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import Event, TestMeasurement, TestResult, TestResultEvent, TestStep
from agent.events import limits
from agent.protocols.results import ReportedStep, judged, reported_test
from agent.protocols.wsjf import Station, to_wsjf

P, F, E = TestResult.PASS, TestResult.FAIL, TestResult.ERROR
STATION = Station("st", "loc", "purpose", default_process_code=10, default_part_number="PN")


def oracle(op: str, v: float, lo: float | None, hi: float | None) -> bool | None:
    """§2.4's table read literally: which side of which limit passes. Written without the agent's table."""
    if op in ("LOG", "EQT"):
        return None
    if not math.isfinite(v):
        return False
    single = {"EQ": v == lo, "NE": v != lo, "GT": v > lo, "LT": v < lo, "GE": v >= lo, "LE": v <= lo}
    if op in single:
        return single[op]
    above_low = {"G": v > lo, "GE": v >= lo}
    below_high = {"L": v < hi, "LE": v <= hi}
    inside = {"GTLT": above_low["G"] and below_high["L"], "GELE": above_low["GE"] and below_high["LE"],
              "GELT": above_low["GE"] and below_high["L"], "GTLE": above_low["G"] and below_high["LE"]}
    if op in inside:
        return inside[op]
    outside = {"LTGT": not above_low["GE"] or not below_high["LE"],  # v < lo or v > hi
               "LEGE": not above_low["G"] or not below_high["L"],  # v <= lo or v >= hi
               "LEGT": not above_low["G"] or not below_high["LE"],  # v <= lo or v > hi
               "LTGE": not above_low["GE"] or not below_high["L"]}  # v < lo or v >= hi
    return outside[op]


OPS = sorted(limits.NUMERIC_OPS)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: round(x, 2))
values = st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(-5, 5).map(float))


@settings(max_examples=3000, deadline=None)
@given(op=st.sampled_from(OPS), v=values, a=finite, b=finite)
def test_the_table_agrees_with_the_contract(op, v, a, b):
    lo, hi = min(a, b), max(a, b)
    uses = limits.NUMERIC[op][0] if op in limits.NUMERIC else limits.UNJUDGED_NUMERIC[op]
    low, high = (lo, hi) if len(uses) == 2 else ((lo, None) if uses else (None, None))
    assert limits.numeric_passes(op, v, low, high) == oracle(op, v, low, high)


@settings(max_examples=1500, deadline=None)
@given(op=st.sampled_from(OPS), v=values, a=finite, b=finite)
def test_a_measurement_and_its_report_agree_with_the_oracle(op, v, a, b):
    """The status the agent journals and the status WSJF carries beside the limits it sends, both against the
    oracle applied to exactly what was sent."""
    lo, hi = min(a, b), max(a, b)
    uses = limits.NUMERIC[op][0] if op in limits.NUMERIC else limits.UNJUDGED_NUMERIC[op]
    low, high = (lo, hi) if len(uses) == 2 else ((lo, None) if uses else (None, None))
    m = judged("m", v, "V", low, high, comp_op=op)
    expected = oracle(op, v, low, high)
    if op == "EQT":  # not judgeable from what WSJF carries, and the source said nothing: an error, not a pass
        assert m.status is E
        return
    assert m.status is (P if expected in (True, None) else F)
    ev = Event.create("test.result", TestResultEvent(unit_id="U1", result=P, start_time=datetime.now(timezone.utc),
                                                     steps=[TestStep(name="s", status=P, measurements=[m])]))
    meas = to_wsjf(ev, STATION)["root"]["steps"][0]["numericMeas"][0]
    assert meas["compOp"] == op
    sent_low, sent_high = meas.get("lowLimit"), meas.get("highLimit")
    value = limits.as_number(meas["value"])
    assert (value == v) or (math.isnan(v) and math.isnan(value))
    again = oracle(op, value, sent_low, sent_high)
    assert meas["status"] == ("P" if again in (True, None) else "F")


@pytest.mark.parametrize("op,v,lo,hi,status", [
    ("EQ", 6, 5, None, F), ("EQ", 5, 5, None, P), ("NE", 5, 5, None, F), ("LT", 5, 5, None, F),
    ("LT", 4.9, None, 5, P),  # a single limit named "high" by the source is still the one limit
    ("GTLT", 4, 4, 6, F), ("GTLT", 5, 4, 6, P), ("LTGT", 3, 4, 6, P), ("LTGT", 5, 4, 6, F), ("LEGE", 4, 4, 6, P),
    ("LTGE", 6, 4, 6, P), ("LEGT", 6, 4, 6, F), ("LOG", 99, None, None, P), ("GE", math.nan, 100, None, F),
    ("LE", math.inf, 10, None, F), ("GELE", -math.inf, 0, 1, F), ("LOG", math.nan, None, None, P),
])
def test_the_findings_of_issue_15_item_1(op, v, lo, hi, status):
    """Each of these was judged wrong before (low <= v <= high whatever the operator)."""
    assert judged("m", v, "", lo, hi, comp_op=op).status is status


@settings(max_examples=500, deadline=None)
@given(op=st.sampled_from(sorted(limits.NUMERIC)), v=finite, a=finite, b=finite)
def test_swapped_limits_are_refused_naming_them(op, v, a, b):
    """A range whose low limit is above its high one passes everything or nothing: refused, not judged."""
    if limits.NUMERIC[op][0] != ("low", "high") or a <= b:
        return
    with pytest.raises(ValueError, match=f"low limit {a} is above the high limit {b}"):
        judged("m", v, "V", a, b, comp_op=op)


@pytest.mark.parametrize("m,status", [
    (dict(value=None, expected="1.4.2"), E),  # an expected value and no reading: nothing was checked
    (dict(value=None, expected=False), E),
    (dict(value=1, expected=True), P), (dict(value=0, expected=True), F),  # devices send flags as 0/1
    (dict(value=False, expected=True, comp_op="NE"), P), (dict(value=True, expected=True, comp_op="NE"), F),
    (dict(value=5.0, expected="5"), P),  # a whole number compared as text is written as it is: 5, not 5.0
    (dict(value=1000.0, comp_op="EQT", low=5.0), E),  # EQT with no word from the source
    (dict(value=1000.0, comp_op="EQT", low=5.0, reported=F), F),
])
def test_edges_found_by_review(m, status):
    args = dict(m)
    name_args = {k: args.pop(k) for k in ("low",) if k in args}
    assert judged("m", args.pop("value"), "", name_args.get("low"), **args).status is status


def test_a_boolean_with_a_numeric_operator_is_refused():
    with pytest.raises(ValueError, match="a boolean compares equal"):
        judged("m", True, "", 1.0, 1.0, comp_op="GELE")
    with pytest.raises(ValueError, match="is not true or false"):
        judged("m", 5, expected=True)


def test_log_with_limits_is_logged_not_judged_and_the_limits_are_not_sent_as_judged():
    m = judged("m", 7.0, "V", 1.0, 2.0, comp_op="LOG")
    assert m.status is P
    ev = Event.create("test.result", TestResultEvent(unit_id="U1", result=P, start_time=datetime.now(timezone.utc),
                                                     steps=[TestStep(name="s", status=P, measurements=[m])]))
    meas = to_wsjf(ev, STATION)["root"]["steps"][0]["numericMeas"][0]
    assert meas == {"status": "P", "value": 7.0, "unit": "V", "compOp": "LOG"}


def test_non_finite_values_survive_the_journal():
    """NaN was written as null, and then judged as 'no value' after the journal (issue 15 item 4)."""
    m = judged("m", math.inf, "V", None, 10.0, comp_op="LE")
    ev = Event.create("test.result", TestResultEvent(unit_id="U1", result=P, start_time=datetime.now(timezone.utc),
                                                     steps=[TestStep(name="s", status=m.status, measurements=[m])]))
    from agent.events.model import decode, encode

    back = decode(encode(ev))
    stored = back.payload["steps"][0]["measurements"][0]
    assert stored["value"] == "Infinity" and stored["status"] == "fail"
    meas = to_wsjf(back, STATION)["root"]["steps"][0]["numericMeas"][0]
    assert meas["value"] == "Infinity" and meas["status"] == "F"


@pytest.mark.parametrize("value,expected,status", [
    (False, False, P), (True, False, F), (True, None, P), (False, None, F), (True, True, P)])
def test_booleans_pass_when_they_are_what_was_expected(value, expected, status):
    m = judged("relay open", value, expected=expected)
    assert m.status is status
    ev = Event.create("test.result", TestResultEvent(unit_id="U1", result=P, start_time=datetime.now(timezone.utc),
                                                     steps=[TestStep(name="s", status=P, measurements=[m])]))
    report = to_wsjf(ev, STATION)
    assert report["root"]["steps"][0]["booleanMeas"] == [{"status": status.value[0].upper()}]
    assert report["result"] == status.value[0].upper()


@pytest.mark.parametrize("op,value,limit,status", [
    ("CASESENSIT", "1.4.2", "1.4.2", P), ("CASESENSIT", "1.4.2", "1.4.3", F), ("EQ", "abc", "ABC", F),
    ("IGNORECASE", "abc", "ABC", P), ("NE", "abc", "abc", F), ("NE", "abc", "abd", P), ("LOG", "x", None, P),
])
def test_strings_under_their_operator(op, value, limit, status):
    m = judged("fw", value, comp_op=op, expected=limit)
    assert m.status is status
    ev = Event.create("test.result", TestResultEvent(unit_id="U1", result=P, start_time=datetime.now(timezone.utc),
                                                     steps=[TestStep(name="s", status=P, measurements=[m])]))
    meas = to_wsjf(ev, STATION)["root"]["steps"][0]["stringMeas"][0]
    assert meas["compOp"] == op and meas["status"] == status.value[0].upper()
    assert meas.get("limit") == limit


def test_an_operator_without_its_limit_is_refused_naming_it():
    with pytest.raises(ValueError, match="GELE needs a low and a high limit"):
        judged("m", 1.0, "", 0.0, None, comp_op="GELE")
    with pytest.raises(ValueError, match="unknown comparison operator 'BETWEEN'"):
        judged("m", 1.0, "", 0.0, 2.0, comp_op="between")


def test_a_status_word_step_is_a_pass_fail_step():
    """"Relay K1": pass became ET_NLT with value null, which a strict server refuses (issue 15 item 3)."""
    r = reported_test(unit_id="FX-1", reported="pass", when=datetime.now(timezone.utc),
                      steps=[ReportedStep(name="Relay K1", status="pass"), ReportedStep(name="Relay K2", result="F")])
    assert [s.measurements for s in r.steps] == [[], []] and r.result is F
    report = to_wsjf(Event.create("test.result", r), Station("st", "l", "p", default_process_code=10,
                                                              default_part_number="PN"))
    k1, k2 = report["root"]["steps"]
    assert k1["stepType"] == "ET_PFT" and k1["booleanMeas"] == [{"status": "P"}]
    assert k2["stepType"] == "ET_PFT" and k2["booleanMeas"] == [{"status": "F"}] and report["result"] == "F"


def test_a_measurement_seed_api_is_within_limits_under_its_operator():
    assert TestMeasurement(name="v", status=P, value=3.0, low_limit=4.0, high_limit=6.0,
                           comp_op="LTGT").is_within_limits()
    assert not TestMeasurement(name="v", status=P, value=5.0, low_limit=4.0, high_limit=6.0,
                               comp_op="LTGT").is_within_limits()
