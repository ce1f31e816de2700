"""``test.result`` / ``inspection.result`` → a WATS WSJF UUT report (``POST /api/Report/WSJF``).

Pure mapping, no I/O: the WATS uplink (a sink) sends what this builds. Rules from ``reference/wats-api.md`` §2:

* The report ``id`` is the event id: a resend overwrites the same report instead of duplicating it.
* ``start`` carries the local offset (the server treats it as authoritative) and ``startUTC`` is sent too.
* The server does not check limits, so the agent decides every status: a numeric measurement outside its
  limits fails its step, a failed step fails its parents and the report (``result``), and the first failing step
  is marked ``causedUUTFailure``.
* Single-limit comparisons (``LT``, ``LE``, ``GT``, ``GE``, ``EQ``, ``NE``) carry their limit in ``lowLimit``
  only, whichever side the source called it.
* A report that cannot be built (no part number and no default, an unknown test type's process code) raises
  ``MappingError``: permanent, so the uplink dead-letters it instead of retrying for ever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any

from ..events.model import Event, EventType
from ..events.payloads import TestMeasurement, TestResult, TestStep, within_limits

RESULT_CODE = {TestResult.PASS: "P", TestResult.FAIL: "F", TestResult.ERROR: "E", TestResult.ABORTED: "T",
               TestResult.SKIPPED: "S"}
#: A report's result is one of P, F, E, T; a test that was skipped as a whole was not completed.
REPORT_RESULT = {**RESULT_CODE, TestResult.SKIPPED: "T"}
SINGLE_LIMIT_OPS = {"EQ", "NE", "LT", "LE", "GT", "GE", "EQT"}
RANGE_OPS = {"GTLT", "GTLE", "GELT", "GELE", "LTGT", "LTGE", "LEGT", "LEGE"}
_MAX = 100


class MappingError(ValueError):
    """The event cannot become a valid WSJF report; the message names the field."""


@dataclass(frozen=True)
class Station:
    """Who is reporting: WSJF's machineName, location, purpose, and how test types map to process codes."""

    machine_name: str
    location: str
    purpose: str
    process_codes: dict[str, int] = field(default_factory=dict)  # test type ("test", "selftest" …) → code
    default_process_code: int | None = None
    default_part_number: str | None = None
    default_revision: str = "1"
    operator: str = "fixture-agent"
    agent_version: str = ""
    timezone: tzinfo | None = None  # for ``start``; the Pi's local zone when None

    def process_code(self, test_type: str) -> int:
        code = self.process_codes.get(test_type, self.default_process_code)
        if code is None:
            raise MappingError(f"no process code for test type {test_type!r} (set sinks.wats.process_codes)")
        return code


def test_type_of(event: Event) -> str:
    custom = event.payload.get("custom_data") or {}
    if isinstance(custom.get("test_type"), str):
        return custom["test_type"]
    return "inspection" if event.event_type == EventType.INSPECTION_RESULT.value else "test"


def _text(value: str | None, what: str) -> str:
    if not value:
        raise MappingError(f"{what} is required")
    if len(value) > _MAX:
        raise MappingError(f"{what} is longer than {_MAX} characters")
    return value


def _iso_local(when: datetime, tz: tzinfo | None) -> str:
    local = when.astimezone(tz) if tz is not None else when.astimezone()
    return local.isoformat(timespec="milliseconds" if local.microsecond else "seconds")


def _iso_utc(when: datetime) -> str:
    u = when.astimezone(timezone.utc)
    return u.isoformat(timespec="milliseconds" if u.microsecond else "seconds").replace("+00:00", "Z")


def _judge(m: TestMeasurement) -> TestResult:
    """The measurement's status as the agent sees it: numeric values are re-judged against their limits."""
    if m.status in (TestResult.ERROR, TestResult.SKIPPED, TestResult.ABORTED):
        return m.status
    if isinstance(m.value, (int, float)) and not isinstance(m.value, bool):
        return TestResult.PASS if within_limits(m.value, m.low_limit, m.high_limit) else TestResult.FAIL
    if isinstance(m.value, bool):
        return TestResult.PASS if m.value else TestResult.FAIL
    return m.status


def _worst(statuses: list[TestResult]) -> TestResult:
    for s in (TestResult.ERROR, TestResult.ABORTED, TestResult.FAIL):
        if s in statuses:
            return s
    if statuses and all(s is TestResult.SKIPPED for s in statuses):
        return TestResult.SKIPPED
    return TestResult.PASS


def _numeric(m: TestMeasurement, status: TestResult, named: bool) -> dict[str, Any]:
    op = m.comp_op.upper() if m.comp_op else "LOG"
    d: dict[str, Any] = {"status": RESULT_CODE[status], "value": m.value, "unit": m.unit or "", "compOp": op}
    if op in SINGLE_LIMIT_OPS:
        limit = m.low_limit if m.low_limit is not None else m.high_limit
        if limit is None:
            raise MappingError(f"measurement {m.name!r}: compOp {op} needs a limit")
        d["lowLimit"] = limit
    elif op in RANGE_OPS:
        if m.low_limit is None or m.high_limit is None:
            raise MappingError(f"measurement {m.name!r}: compOp {op} needs low_limit and high_limit")
        d["lowLimit"], d["highLimit"] = m.low_limit, m.high_limit
    elif op != "LOG":
        raise MappingError(f"measurement {m.name!r}: unknown compOp {op!r}")
    if named:
        d["name"] = _text(m.name, "measurement name")
    return d


class _Builder:
    def __init__(self) -> None:
        self.next_id = 2  # the root is 1
        self.first_failure: int | None = None

    def step(self, s: TestStep) -> tuple[dict[str, Any], TestResult]:
        sid = self.next_id
        self.next_id += 1
        judged = [(m, _judge(m)) for m in s.measurements]
        statuses = [st for _, st in judged]
        status = _worst([s.status, *statuses]) if judged else s.status
        base: dict[str, Any] = {"id": sid, "name": _text(s.name, "step name"), "group": "M",
                                "status": RESULT_CODE[status]}
        if s.message:
            base["reportText"] = s.message[:5000]
        if s.start_time is not None:
            base["start"] = _iso_utc(s.start_time)
            if s.end_time is not None:
                base["totTime"] = round((s.end_time - s.start_time).total_seconds(), 6)
        kinds = {("bool" if isinstance(m.value, bool) else "num" if isinstance(m.value, (int, float))
                  else "str" if isinstance(m.value, str) else "none") for m, _ in judged}
        named = len(judged) > 1
        if not judged:
            base["stepType"] = "Action"
        elif kinds <= {"num", "none"}:
            base["stepType"] = "ET_MNLT" if named else "ET_NLT"
            base["numericMeas"] = [_numeric(m, st, named) for m, st in judged]
        elif kinds == {"bool"}:
            base["stepType"] = "ET_MPFT" if named else "ET_PFT"
            base["booleanMeas"] = [{"status": RESULT_CODE[st], **({"name": m.name} if named else {})}
                                   for m, st in judged]
        elif kinds == {"str"}:
            base["stepType"] = "ET_MSVT" if named else "ET_SVT"
            base["stringMeas"] = [{"status": RESULT_CODE[st], "value": m.value, "compOp": "LOG",
                                   **({"name": m.name} if named else {})} for m, st in judged]
        else:  # mixed kinds: one child step per measurement under a sequence
            base["stepType"] = "SequenceCall"
            base["seqCall"] = {"path": "fixture-agent", "name": s.name, "version": "1.0.0"}
            children = []
            for m, st in judged:
                child, _ = self.step(TestStep(name=m.name, status=st, measurements=[m]))
                children.append(child)
            base["steps"] = children
        if status in (TestResult.FAIL, TestResult.ERROR) and self.first_failure is None:
            self.first_failure = sid
            base["causedUUTFailure"] = True
        return base, status


def to_wsjf(event: Event, station: Station) -> dict[str, Any]:
    """The WSJF UUT report for a ``test.result`` or ``inspection.result`` event."""
    if event.event_type not in (EventType.TEST_RESULT.value, EventType.INSPECTION_RESULT.value):
        raise MappingError(f"{event.event_type} is not a test or inspection result")
    try:
        r = event.typed_payload()
    except ValueError as e:
        raise MappingError(str(e)) from None
    steps_in: list[TestStep] = list(getattr(r, "steps", []))
    builder = _Builder()
    steps, statuses = [], []
    for s in steps_in:
        d, st = builder.step(s)
        steps.append(d)
        statuses.append(st)
    # the steps decide; the device's own verdict can make the result worse, never hide a failed step
    result = _worst([*statuses, r.result]) if statuses else r.result
    test_type = test_type_of(event)
    uut: dict[str, Any] = {"user": _text(getattr(r, "operator_id", None) or station.operator, "operator")}
    if r.end_time is not None:
        uut["execTime"] = round((r.end_time - r.start_time).total_seconds(), 6)
    fixture = getattr(r, "fixture_id", None)
    if fixture:
        uut["fixtureId"] = _text(fixture, "fixture_id")
    if getattr(r, "test_socket", None) is not None:
        try:
            uut["testSocketIndex"] = int(r.test_socket)
        except ValueError:
            raise MappingError(f"test_socket {r.test_socket!r} is not an integer") from None
    if getattr(r, "batch_sn", None):
        uut["batchSN"] = _text(r.batch_sn, "batch_sn")
    if builder.first_failure is not None:
        uut["stepIdCausedUUTFailure"] = builder.first_failure
    report = {
        "type": "T",
        "id": event.id,
        "pn": _text(r.part_number or station.default_part_number, "part_number"),
        "sn": _text(r.unit_id, "unit_id"),
        "rev": _text(getattr(r, "revision", None) or station.default_revision, "revision"),
        "processCode": station.process_code(test_type),
        "result": REPORT_RESULT[result],
        "machineName": _text(station.machine_name, "machineName (agent.station)"),
        "location": _text(station.location, "location (agent.location)"),
        "purpose": _text(station.purpose, "purpose (agent.purpose)"),
        "start": _iso_local(r.start_time, station.timezone),
        "startUTC": _iso_utc(r.start_time),
        "uut": uut,
        "miscInfos": [{"description": "AgentVersion", "text": station.agent_version or "unknown"}],
        "subUnits": [],
        "root": {
            "id": 1,
            "stepType": "SequenceCall",
            "name": "MainSequence Callback",
            "group": "M",
            "status": RESULT_CODE[result],
            "seqCall": {"path": f"fixture-agent/{test_type}.seq", "name": "MainSequence Callback",
                        "version": "1.0.0"},
            "steps": steps,
        },
    }
    return report
