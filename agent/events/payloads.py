"""The seed's typed domain payloads, as msgspec Structs.

Field names and enum values are the pyWATS seed's (``TestResultEvent.unit_id``, ``result`` in
``pass|fail|error|skipped|aborted``, ``steps[].measurements[].low_limit`` …) because adapters, firmware and users
already write them. Unknown fields are refused rather than dropped: a typo such as ``unit_idd`` is a validation
error naming the field, not a silently lost serial number. Site-specific extras belong in ``custom_data``.

Timestamps are timezone-aware; a payload decoded from JSON gets them back as UTC datetimes.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

import msgspec


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
    """One measured value. ``comp_op`` uses WATS' operators (``GELE``, ``GE``, ``LT``, ``EQ``, ``LOG`` …)."""

    __test__ = False

    name: str
    status: TestResult  # required: a verdict is never implied (omit_defaults would hide a default "pass")
    value: float | bool | str | None = None
    unit: str = ""
    low_limit: float | None = None
    high_limit: float | None = None
    nominal: float | None = None
    comp_op: str = "LOG"

    def is_within_limits(self) -> bool:
        """Whether a numeric value satisfies its limits; a measurement with no limits is within them."""
        return within_limits(self.value, self.low_limit, self.high_limit, self.status)


def within_limits(value: object, low: float | None, high: float | None,
                  status: TestResult = TestResult.PASS) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return status is TestResult.PASS
    v = value
    if low is not None and v < low:
        return False
    if high is not None and v > high:
        return False
    return True


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
