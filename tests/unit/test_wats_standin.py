"""The stand-in itself enforces what it should (so tests built on it mean something)."""

import copy
import json
import urllib.request
from datetime import timedelta, timezone
from pathlib import Path

import pytest

from agent.events import Event, TestMeasurement, TestResult, TestResultEvent, TestStep
from agent.protocols.wsjf import Station, to_wsjf
from tests.wats_standin import WatsStandIn

EXAMPLE = json.loads((Path(__file__).resolve().parents[1] / "data" / "wsjf_example.json").read_text())


@pytest.fixture
def wats():
    s = WatsStandIn()
    yield s
    s.close()


def post(wats, report, token=None, path="/api/Report/WSJF"):
    req = urllib.request.Request(wats.url + path, data=json.dumps(report).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Basic {token or wats.token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


def test_accepts_the_reference_example_and_counts_resends(wats):
    assert post(wats, EXAMPLE)[0] == 200
    assert post(wats, EXAMPLE)[0] == 200
    assert wats.unique_reports == 1 and wats.duplicates() == {EXAMPLE["id"]: 2}


def test_accepts_what_the_mapping_builds(wats):
    from datetime import datetime

    start = datetime.now(timezone.utc) - timedelta(seconds=5)
    payload = TestResultEvent(unit_id="U1", part_number="PN", result=TestResult.PASS, start_time=start, steps=[
        TestStep(name="I", status=TestResult.PASS, measurements=[
            TestMeasurement(name="I", status=TestResult.PASS, value=0.2, high_limit=1.0, comp_op="LE")])])
    report = to_wsjf(Event.create("test.result", payload),
                     Station("st", "loc", "purpose", process_codes={"test": 50}, agent_version="x"))
    status, body, _ = post(wats, report)
    assert status == 200, body


@pytest.mark.parametrize("mutate,reason", [
    (lambda r: r.pop("processCode"), "missing required field 'processCode'"),
    (lambda r: r.__setitem__("ProcessCode", r.pop("processCode")), "keys are case-sensitive"),
    (lambda r: r.__setitem__("processCode", 77), "processCode 77 is not a test operation"),
    (lambda r: r.__setitem__("result", "Passed"), "is not one of P, F, E, T"),
    (lambda r: r.__setitem__("start", "2026-03-01T09:15:00"), "offset"),
    (lambda r: (r.__setitem__("start", "2099-01-01T00:00:00+00:00"), r.__setitem__("startUTC", "2099-01-01T00:00:00Z")),
     "future"),
    (lambda r: r["root"]["steps"][0]["numericMeas"][0].update(compOp="LE", highLimit=5.25), "lowLimit only"),
])
def test_rejects_what_the_contract_forbids(wats, mutate, reason):
    r = copy.deepcopy(EXAMPLE)
    mutate(r)
    status, body, _ = post(wats, r)
    assert status == 400 and reason in body["message"]
    assert wats.unique_reports == 0


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
