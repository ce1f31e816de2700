"""Judging measurements and reading result words: shared by every source that reports test results.

The agent computes pass/fail from the value and the limits itself (the WATS server does not check limits, and a
device's own verdict can be wrong). Result words arrive in many spellings (``"pass"``, ``"Passed"``, ``"P"``,
``"OK"``); they are read here, once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec

from ..events.payloads import SubUnit, TestMeasurement, TestResult, TestResultEvent, TestStep

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
           high: float | None = None, nominal: float | None = None, comp_op: str | None = None,
           expected: bool | str | None = None, reported: TestResult | None = None) -> TestMeasurement:
    """A measurement whose status the agent computed with the one table of operators (``events/limits.py``):
    numeric against its limits under ``comp_op`` (from the limits when not given), boolean against ``expected``
    (``true`` by default), text against ``expected``; a missing value where there are limits is an error (no
    answer, overload). Where nothing decides it (``LOG``, ``EQT``) the source's ``reported`` word stands, pass by
    default. Raises ``ValueError`` (a ``LimitError``) naming an operator that does not fit the limits."""
    m = TestMeasurement(name=name, value=value, unit=unit, low_limit=low, high_limit=high, nominal=nominal,
                        comp_op=comp_op, expected=expected, status=reported or TestResult.PASS)
    if reported is None and m.comp_op == "EQT":
        m.status = TestResult.ERROR  # within a threshold WSJF does not carry: only the source could say
    m.status = m.verdict()
    return m


def overall(statuses: list[TestResult], reported: TestResult | None = None) -> TestResult:
    """The worst of the step statuses; a device saying "pass" over a failed step is overruled."""
    for worst in (TestResult.ERROR, TestResult.ABORTED, TestResult.FAIL):
        if worst in statuses:
            return worst
    if reported is not None and reported is not TestResult.PASS:
        return reported
    return TestResult.PASS


#: the longest test a device may report (30 days): anything more is a wrong field, not a test
MAX_DURATION_MS = 30 * 86400 * 1000.0


class ReportedStep(msgspec.Struct):
    """A step as devices report it (the serial protocol's ``selftest`` steps, the MQTT seed's ``steps``). A step
    with no value and no limits is a pass/fail step carried by its status word ("Relay K1": pass)."""

    name: str
    status: str | None = None
    result: str | None = None  # the same word under the name devices often use for it
    value: float | bool | str | None = None
    unit: str = ""
    low: float | None = None
    high: float | None = None
    comp_op: str | None = None
    expected: bool | str | None = None


class ReportedSubUnit(msgspec.Struct):
    part_number: str
    serial_number: str
    revision: str | None = None
    part_type: str | None = None


def reported_test(*, unit_id: str, reported: object, steps: list[ReportedStep], when: datetime,
                  duration_ms: float | None = None, fixture_id: str | None = None, test_type: str = "selftest",
                  part_number: str | None = None, revision: str | None = None, operator_id: str | None = None,
                  sub_units: list[ReportedSubUnit] | None = None,
                  custom: dict[str, Any] | None = None) -> TestResultEvent:
    """A device's test report as a ``TestResultEvent``: each step judged by the agent (a step's own status word
    counts only where there is nothing to judge), the overall result the worst of steps and the device's word.
    Raises ValueError naming a result word it cannot read or an operator that does not fit its limits."""
    out = []
    for s in steps:
        word = s.status if s.status is not None else s.result
        said = read_result(word) if word is not None else None
        if s.value is None and s.low is None and s.high is None and s.expected is None:
            if said is None:
                raise ValueError(f"step {s.name!r}: no value and no status (nothing says whether it passed)")
            out.append(TestStep(name=s.name, status=said, step_type=test_type))  # a pass/fail step
            continue
        try:
            m = judged(s.name, s.value, s.unit, s.low, s.high, comp_op=s.comp_op, expected=s.expected,
                       reported=said)
        except ValueError as e:
            raise ValueError(f"step {s.name!r}: {e}") from None
        out.append(TestStep(name=s.name, status=m.status, measurements=[m], step_type=test_type))
    if duration_ms is not None and not 0 <= duration_ms <= MAX_DURATION_MS:  # NaN fails this too
        raise ValueError(f"duration_ms {duration_ms!r} is not a duration (0 to {MAX_DURATION_MS:.0f} ms)")
    start = when - timedelta(milliseconds=duration_ms) if duration_ms else when
    subs = [SubUnit(part_number=u.part_number, serial_number=u.serial_number, revision=u.revision,
                    part_type=u.part_type) for u in (sub_units or [])]
    return TestResultEvent(unit_id=unit_id, result=overall([s.status for s in out], read_result(reported)),
                           start_time=start, end_time=when, fixture_id=fixture_id, part_number=part_number,
                           revision=revision, operator_id=operator_id, steps=out, sub_units=subs,
                           custom_data={**(custom or {}), "test_type": test_type})
