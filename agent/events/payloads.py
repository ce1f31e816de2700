"""The seed's typed domain payloads, as msgspec Structs.

Field names and enum values are the pyWATS seed's (``TestResultEvent.unit_id``, ``result`` in
``pass|fail|error|skipped|aborted``, ``steps[].measurements[].low_limit`` …) because adapters, firmware and users
already write them. Unknown fields are refused rather than dropped: a typo such as ``unit_idd`` is a validation
error naming the field, not a silently lost serial number. Site-specific extras belong in ``custom_data``.

Timestamps are timezone-aware; a payload decoded from JSON gets them back as UTC datetimes.
"""

from __future__ import annotations

import enum
import math
from datetime import datetime
from typing import Any, Literal

import msgspec

from . import limits


class TestResult(str, enum.Enum):
    __test__ = False  # not a pytest class

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"
    ABORTED = "aborted"


class SeverityLevel(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class AssetState(str, enum.Enum):
    ONLINE = "online"
    OFFLINE = "offline"
    IDLE = "idle"
    BUSY = "busy"
    ERROR = "error"
    MAINTENANCE = "maintenance"


class _Payload(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready builtins (datetimes as RFC 3339 strings), the form stored in ``Event.payload``."""
        return msgspec.to_builtins(self)


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds() * 1000.0


class TestMeasurement(_Payload):
    """One measured value. ``comp_op`` uses WATS' operators (``GELE``, ``GE``, ``LT``, ``EQ``, ``LOG`` …, see
    ``agent/events/limits.py``); left out, it follows from the limits given (both: ``GELE``, one: ``GE``/``LE``,
    none: ``LOG``), so ``{"value": 3.5, "low_limit": 3.2, "high_limit": 3.4}`` is judged as a range.

    ``expected`` is the value a boolean or text measurement must have (a relay that must read open:
    ``expected = false``; a firmware string: ``expected = "1.4.2"``). A reading that is not a finite number is kept
    as its text (``"NaN"``, ``"Infinity"``, ``"-Infinity"``), because JSON has no other way to carry it and a
    ``null`` would read as "no reading"."""

    __test__ = False

    name: str
    status: TestResult  # required: a verdict is never implied (omit_defaults would hide a default "pass")
    value: float | bool | str | None = None
    unit: str = ""
    low_limit: float | None = None
    high_limit: float | None = None
    nominal: float | None = None
    comp_op: str | None = None
    expected: bool | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.value, float) and not math.isfinite(self.value):
            self.value = limits.non_finite_text(self.value)
        if self.comp_op:
            self.comp_op = self.comp_op.strip().upper()
        elif isinstance(self.expected, str):
            self.comp_op = "CASESENSIT"  # a text with an expected value: equal to it
        else:
            self.comp_op = limits.default_op(self.low_limit, self.high_limit)

    @property
    def kind(self) -> Literal["numeric", "boolean", "string"]:
        """What sort of test this is: decided by the value, the expected value and the operator, so a numeric
        reading that is not finite (``"NaN"``) is still numeric and a text compared ``IGNORECASE`` is text."""
        if isinstance(self.value, bool) or isinstance(self.expected, bool):
            return "boolean"
        if isinstance(self.expected, str) or self.comp_op in ("CASESENSIT", "IGNORECASE"):
            return "string"
        if isinstance(self.value, str) and self.value not in limits.NON_FINITE:
            return "string"
        return "numeric"

    def verdict(self) -> TestResult:
        """The status this measurement must carry: judged from value, limits and operator wherever they decide
        it, otherwise (``LOG``, ``EQT``, no reading, an error the source reported) the status it was given.
        Raises ``limits.LimitError`` when the operator and the limits do not fit together."""
        if self.status in (TestResult.ERROR, TestResult.SKIPPED, TestResult.ABORTED):
            return self.status
        kind = self.kind
        if self.value is None and self.expected is not None:
            return TestResult.ERROR  # an expected value and no reading: nothing was checked
        if kind == "boolean":
            value = self.value
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
                value = bool(value)  # devices often send 0/1 for a flag
            if not isinstance(value, bool):
                if value is None:
                    return self.status
                raise limits.LimitError(f"boolean measurement: value {value!r} is not true or false")
            if self.comp_op not in ("LOG", "EQ", "NE", "CASESENSIT"):
                raise limits.LimitError(f"a boolean compares equal (EQ) or different (NE), not {self.comp_op}")
            ok: bool | None = limits.boolean_passes(value, self.expected if isinstance(self.expected, bool)
                                                    else None)
            if self.comp_op == "NE":
                ok = not ok
        elif kind == "string":
            if self.value is None:
                return self.status
            ok = limits.string_passes(self.comp_op, _text_of(self.value),
                                      self.expected if isinstance(self.expected, str) else None)
        else:
            number = limits.as_number(self.value)
            if number is None:  # no reading: judged where there are limits (an instrument that did not answer)
                limits.limits_of(self.comp_op, self.low_limit, self.high_limit)  # still a valid operator
                return self.status if self.comp_op in limits.UNJUDGED_NUMERIC else TestResult.ERROR
            ok = limits.numeric_passes(self.comp_op, number, self.low_limit, self.high_limit)
        if ok is None:
            return self.status
        return TestResult.PASS if ok else TestResult.FAIL

    def is_within_limits(self) -> bool:
        """Whether the value satisfies its limits under its operator (the seed's method); unjudged: its status."""
        return self.verdict() is TestResult.PASS


def _text_of(value: object) -> str:
    """A value compared as text: a whole number as it is written (5, not 5.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


class TestStep(_Payload):
    __test__ = False

    name: str
    status: TestResult
    start_time: datetime | None = None
    end_time: datetime | None = None
    measurements: list[TestMeasurement] = []
    message: str | None = None
    step_type: str = "generic"

    @property
    def duration_ms(self) -> float | None:
        return _ms(self.start_time, self.end_time)


class SubUnit(_Payload):
    """A serialized part built into the unit (a PCBA in a box, a display): WSJF's ``subUnits``."""

    part_number: str
    serial_number: str
    revision: str | None = None
    part_type: str | None = None  # WATS' category (≤ 50 characters); a reference designator does
    position: int | None = None


class TestResultEvent(_Payload):
    __test__ = False

    unit_id: str
    result: TestResult
    start_time: datetime
    part_number: str | None = None
    revision: str | None = None
    station_id: str | None = None
    operator_id: str | None = None
    end_time: datetime | None = None
    steps: list[TestStep] = []
    test_socket: str | None = None
    batch_sn: str | None = None
    fixture_id: str | None = None
    sub_units: list[SubUnit] = []
    custom_data: dict[str, Any] = {}

    @property
    def duration_ms(self) -> float | None:
        return _ms(self.start_time, self.end_time)

    @property
    def measurement_count(self) -> int:
        return sum(len(s.measurements) for s in self.steps)

    @property
    def passed(self) -> bool:
        return self.result is TestResult.PASS


class InspectionResultEvent(_Payload):
    unit_id: str
    result: TestResult
    start_time: datetime
    inspection_type: str = "visual"
    part_number: str | None = None
    revision: str | None = None
    station_id: str | None = None
    end_time: datetime | None = None
    defects: list[dict[str, Any]] = []
    images: list[str] = []
    custom_data: dict[str, Any] = {}


class AssetFaultEvent(_Payload):
    asset_id: str
    fault_code: str
    fault_message: str
    timestamp: datetime
    severity: SeverityLevel = SeverityLevel.ERROR
    cleared: bool = False
    cleared_time: datetime | None = None
    custom_data: dict[str, Any] = {}


class AssetStateChangedEvent(_Payload):
    asset_id: str
    new_state: AssetState
    timestamp: datetime
    previous_state: AssetState | None = None
    reason: str | None = None
    custom_data: dict[str, Any] = {}


class MaintenanceEvent(_Payload):
    asset_id: str
    maintenance_type: str
    description: str
    timestamp: datetime
    performed_by: str | None = None
    duration_minutes: float | None = None
    parts_replaced: list[str] = []
    custom_data: dict[str, Any] = {}


class InstalledComponent(_Payload):
    reference_designator: str
    part_number: str | None = None
    serial_number: str | None = None
    lot_number: str | None = None
    installed_time: datetime | None = None


class MaterialInstalledEvent(_Payload):
    unit_id: str
    timestamp: datetime
    components: list[InstalledComponent] = []
    station_id: str | None = None
    custom_data: dict[str, Any] = {}

    @property
    def component_count(self) -> int:
        return len(self.components)


class WorkStartedEvent(_Payload):
    unit_id: str
    station_id: str
    timestamp: datetime
    work_order_id: str | None = None
    operator_id: str | None = None
    lane: int | None = None
    custom_data: dict[str, Any] = {}


class WorkCompletedEvent(_Payload):
    """``result`` is the CFX WorkResult: a failed *test* still completes its work (pass/fail is in test.result)."""

    unit_id: str
    station_id: str
    end_time: datetime
    result: Literal["completed", "failed", "aborted", "skipped"] = "completed"
    work_order_id: str | None = None
    operator_id: str | None = None
    start_time: datetime | None = None
    custom_data: dict[str, Any] = {}

    @property
    def duration_ms(self) -> float | None:
        return _ms(self.start_time, self.end_time)


class UnitDisqualifiedEvent(_Payload):
    unit_id: str
    reason: str
    timestamp: datetime
    station_id: str | None = None
    disqualification_type: str = "scrapped"
    custom_data: dict[str, Any] = {}


class WorkOrderEvent(_Payload):
    work_order_id: str
    action: Literal["created", "updated"]
    timestamp: datetime
    part_number: str | None = None
    quantity: int | None = None
    status: str | None = None
    custom_data: dict[str, Any] = {}


class AssetCountersEvent(_Payload):
    """Absolute counters: a resend or a replay sets the same value, so it can never double-count."""

    asset_id: str
    running_count: int
    total_count: int
    timestamp: datetime
    custom_data: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.running_count < 0 or self.total_count < 0:
            raise ValueError("counters must be >= 0")
        if self.running_count > self.total_count:
            raise ValueError("running_count must not exceed total_count")


class AssetTelemetryEvent(_Payload):
    """Periodic readings (temperature, humidity, vibration …); the journal may evict these when it is full."""

    asset_id: str
    timestamp: datetime
    readings: dict[str, float] = {}
    units: dict[str, str] = {}
    custom_data: dict[str, Any] = {}


class SoftwareItem(_Payload):
    name: str
    version: str
    hash: str | None = None


class DeviceSoftwareEvent(_Payload):
    device_id: str
    timestamp: datetime
    software: list[SoftwareItem] = []
    config_version: str | None = None
    custom_data: dict[str, Any] = {}
