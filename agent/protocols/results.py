"""Judging measurements and reading result words: shared by every source that reports test results.

The agent computes pass/fail from the value and the limits itself (the WATS server does not check limits, and a
device's own verdict can be wrong). Result words arrive in many spellings (``"pass"``, ``"Passed"``, ``"P"``,
``"OK"``); they are read here, once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec

from ..events.payloads import TestMeasurement, TestResult, TestResultEvent, TestStep, within_limits

_RESULT_WORDS = {
    "pass": TestResult.PASS, "passed": TestResult.PASS, "p": TestResult.PASS, "ok": TestResult.PASS,
    "fail": TestResult.FAIL, "failed": TestResult.FAIL, "f": TestResult.FAIL, "nok": TestResult.FAIL,
    "error": TestResult.ERROR, "e": TestResult.ERROR, "err": TestResult.ERROR,
    "skipped": TestResult.SKIPPED, "skip": TestResult.SKIPPED, "s": TestResult.SKIPPED,
    "aborted": TestResult.ABORTED, "abort": TestResult.ABORTED, "terminated": TestResult.ABORTED,
}


def read_result(word: object) -> TestResult:
    """``"Passed"``/``"P"``/``"pass"``/``True`` → ``TestResult.PASS`` …; raises ValueError naming the word."""
    if isinstance(word, bool):
        return TestResult.PASS if word else TestResult.FAIL
    if isinstance(word, str):
        r = _RESULT_WORDS.get(word.strip().lower())
        if r is not None:
            return r
    raise ValueError(f"{word!r} is not a result (pass, fail, error, skipped, aborted, or Passed/P/Failed/F)")


def judged(name: str, value: float | bool | str | None, unit: str = "", low: float | None = None,
           high: float | None = None, nominal: float | None = None) -> TestMeasurement:
    """A measurement whose status the agent computed: numeric against limits, boolean as pass/fail, a missing
    value (no answer, overload) as an error."""
    if isinstance(value, bool):
        return TestMeasurement(name=name, value=value, unit=unit, comp_op="LOG",
                               status=TestResult.PASS if value else TestResult.FAIL)
    if value is None:
        status = TestResult.ERROR
    elif isinstance(value, (int, float)):
        status = TestResult.PASS if within_limits(value, low, high) else TestResult.FAIL
    else:
        status = TestResult.PASS  # a string value is recorded, not judged
    return TestMeasurement(name=name, value=value, unit=unit, low_limit=low, high_limit=high, nominal=nominal,
                           status=status, comp_op=_comp_op(low, high))


def _comp_op(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return "GELE"
    if low is not None:
        return "GE"
    if high is not None:
        return "LE"
    return "LOG"


def overall(statuses: list[TestResult], reported: TestResult | None = None) -> TestResult:
    """The worst of the step statuses; a device saying "pass" over a failed step is overruled."""
    for worst in (TestResult.ERROR, TestResult.ABORTED, TestResult.FAIL):
        if worst in statuses:
            return worst
    if reported is not None and reported is not TestResult.PASS:
        return reported
    return TestResult.PASS


class ReportedStep(msgspec.Struct):
    """A step as devices report it (the serial protocol's ``selftest`` steps, the MQTT seed's ``steps``)."""

    name: str
    status: str | None = None
    result: str | None = None  # the same word under the name devices often use for it
    value: float | bool | str | None = None
    unit: str = ""
    low: float | None = None
    high: float | None = None


def reported_test(*, unit_id: str, reported: object, steps: list[ReportedStep], when: datetime,
                  duration_ms: float | None = None, fixture_id: str | None = None, test_type: str = "selftest",
                  part_number: str | None = None, custom: dict[str, Any] | None = None) -> TestResultEvent:
    """A device's test report as a ``TestResultEvent``: each step judged by the agent (a step's own status word
    counts only where there is nothing to judge), the overall result the worst of steps and the device's word.
    Raises ValueError naming a result word it cannot read."""
    out = []
    for s in steps:
        m = judged(s.name, s.value, s.unit, s.low, s.high)
        word = s.status if s.status is not None else s.result
        if word is not None and s.low is None and s.high is None and not isinstance(s.value, (int, float)):
            m.status = read_result(word)
        out.append(TestStep(name=s.name, status=m.status, measurements=[m], step_type=test_type))
    start = when - timedelta(milliseconds=duration_ms) if duration_ms else when
    return TestResultEvent(unit_id=unit_id, result=overall([s.status for s in out], read_result(reported)),
                           start_time=start, end_time=when, fixture_id=fixture_id, part_number=part_number,
                           steps=out, custom_data={**(custom or {}), "test_type": test_type})
