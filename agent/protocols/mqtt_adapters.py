"""MQTT messages → normalized events: one adapter per topic family, pure functions (no broker, no journal).

The default topic plan is the MQTT seed's (``assets/{id}/status`` …); the device id comes from the topic (the level
matched by the subscription's ``+``), falling back to the payload's own id field. Payloads are the seed's
examples and their variants (``"Passed"``/``"P"``, absolute counters, a combined asset heartbeat). Unknown extra
keys are ignored (firmware grows fields); a missing or mistyped required one raises ``AdapterError`` naming it.

A site maps its own topics without code with a ``mapping`` subscription: the event type, and for each payload field
of that type the dotted path it is read from in the message (see ``docs/mqtt.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec

from ..events.model import Event, EventType, EventValidationError
from ..events.payloads import (
    AssetCountersEvent, AssetFaultEvent, AssetState, AssetStateChangedEvent, AssetTelemetryEvent,
    DeviceSoftwareEvent, SeverityLevel,
)
from .results import ReportedStep, ReportedSubUnit, reported_test


class AdapterError(ValueError):
    """The message does not fit its topic's schema; the text names the field."""


@dataclass(frozen=True)
class Message:
    topic: str
    device: str | None  # from the topic's wildcard level, when the subscription has one
    doc: dict[str, Any]
    received: datetime
    source: str


#: status words devices use → our AssetState
STATUS_WORDS = {
    "running": AssetState.BUSY, "busy": AssetState.BUSY, "testing": AssetState.BUSY,
    "idle": AssetState.IDLE, "ready": AssetState.IDLE, "online": AssetState.ONLINE, "up": AssetState.ONLINE,
    "offline": AssetState.OFFLINE, "down": AssetState.OFFLINE, "stopped": AssetState.OFFLINE,
    "error": AssetState.ERROR, "fault": AssetState.ERROR, "alarm": AssetState.ERROR,
    "maintenance": AssetState.MAINTENANCE, "service": AssetState.MAINTENANCE,
}


# ------------------------------------------------------------------------------------------------ payload schemas
class _Lenient(msgspec.Struct, kw_only=True):
    """Unknown keys are ignored: devices add fields; what we need must be there and be the right type."""

    timestamp: datetime | None = None


class _Counters(msgspec.Struct):
    running_count: int
    total_count: int


class AssetDoc(_Lenient, kw_only=True):
    asset_id: str | None = None
    status: str | None = None
    state: str | None = None
    counters: _Counters | None = None
    running_count: int | None = None
    total_count: int | None = None
    environment: dict[str, float] | None = None
    readings: dict[str, float] | None = None
    units: dict[str, str] = {}


class AlertDoc(_Lenient, kw_only=True):
    asset_id: str | None = None
    code: str | None = None
    alert: str | None = None
    message: str = ""
    severity: str = "warning"
    cleared: bool = False


class TestDoc(_Lenient, kw_only=True):
    __test__ = False

    device_id: str | None = None
    serial_number: str | None = None
    part_number: str | None = None
    test_type: str | None = None
    result: str | bool
    duration_ms: float | None = None
    steps: list[ReportedStep] = []
    revision: str | None = None
    operator: str | None = None
    recipe: str | None = None  # the test program: a [[sinks.wats.products]] rule maps it to a part number
    recipe_revision: str | None = None
    sub_units: list[ReportedSubUnit] = []


class _MeasurementIn(msgspec.Struct):
    path: str
    value: float
    unit: str = ""


class MeasurementsDoc(_Lenient, kw_only=True):
    device_id: str | None = None
    serial_number: str | None = None
    measurements: list[_MeasurementIn]


class _SoftwareIn(msgspec.Struct):
    name: str
    version: str
    hash: str | None = None


class SoftwareDoc(_Lenient, kw_only=True):
    device_id: str | None = None
    software: list[_SoftwareIn] = []
    config_version: str | None = None


class UnitDoc(_Lenient, kw_only=True):
    station_id: str | None = None
    line_id: str | None = None
    event: str = "unit_entered"
    serial_number: str
    part_number: str | None = None
    operator: str | None = None


def _read(doc: dict[str, Any], schema: type, topic: str):
    """Strict: a number that arrives as a string (``"running_count": "1523"``) is bad input, not coerced. A
    firmware that sends strings has a bug worth seeing in the dead letters, and a string that happens to parse
    today ("11") would be sent to WATS while the next ("11 pcs") is refused, so the rule is the type, not luck."""
    try:
        return msgspec.convert(doc, schema, strict=True)
    except msgspec.ValidationError as e:
        raise AdapterError(f"{topic}: {e}") from None


def _who(m: Message, own: str | None, what: str) -> str:
    who = m.device or own
    if not who:
        raise AdapterError(f"{m.topic}: no {what} (neither in the topic nor in the payload)")
    return who


def _iso(when: datetime) -> str:
    return msgspec.json.encode(when).decode().strip('"')  # the form every stored timestamp has (…Z)


def _when(m: Message, ts: datetime | None) -> datetime:
    if ts is None:
        return m.received
    if ts.tzinfo is None:
        raise AdapterError(f"{m.topic}: timestamp {ts.isoformat()} has no UTC offset")
    try:
        return ts.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past the last representable UTC instant (found by fuzzing)
        raise AdapterError(f"{m.topic}: timestamp {ts.isoformat()} is out of range") from None


# ------------------------------------------------------------------------------------------------ adapters
def asset(m: Message) -> list[Event]:
    """A heartbeat (``status``), counters, environment readings, or all three in one message (the seed's example)."""
    d: AssetDoc = _read(m.doc, AssetDoc, m.topic)
    who, when = _who(m, d.asset_id, "asset id"), _when(m, d.timestamp)
    out: list[Event] = []
    word = d.status or d.state
    if word is not None:
        state = STATUS_WORDS.get(word.strip().lower())
        if state is None:
            raise AdapterError(f"{m.topic}: status {word!r} is not one of {sorted(STATUS_WORDS)}")
        out.append(_event(EventType.ASSET_STATE_CHANGED, AssetStateChangedEvent,
                          dict(asset_id=who, new_state=state, timestamp=when, reason=f"device reported {word!r}"), m))
    counts = d.counters or (_Counters(d.running_count, d.total_count)
                            if d.running_count is not None and d.total_count is not None else None)
    if counts is not None:
        out.append(_event(EventType.ASSET_COUNTERS, AssetCountersEvent,
                          dict(asset_id=who, running_count=counts.running_count, total_count=counts.total_count,
                               timestamp=when), m))
    readings = d.environment if d.environment is not None else d.readings
    if readings:
        out.append(_event(EventType.ASSET_TELEMETRY, AssetTelemetryEvent,
                          dict(asset_id=who, timestamp=when, readings=readings, units=d.units), m))
    if not out:
        raise AdapterError(f"{m.topic}: nothing to record (expected status, counters or environment)")
    return out


def asset_alert(m: Message) -> list[Event]:
    d: AlertDoc = _read(m.doc, AlertDoc, m.topic)
    code = d.code or d.alert
    if not code:
        raise AdapterError(f"{m.topic}: an alert needs 'code' (or 'alert')")
    try:
        severity = SeverityLevel(d.severity.lower())
    except ValueError:
        raise AdapterError(f"{m.topic}: severity {d.severity!r} is not one of info, warning, error, critical") from None
    when = _when(m, d.timestamp)
    return [_event(EventType.ASSET_FAULT, AssetFaultEvent,
                   dict(asset_id=_who(m, d.asset_id, "asset id"), fault_code=code, fault_message=d.message,
                        timestamp=when, severity=severity, cleared=d.cleared, cleared_time=when if d.cleared else None), m)]


def test_result(m: Message) -> list[Event]:
    """``testers/{id}/results``: a product's test. The unit is the payload's ``serial_number``: without one there
    is no report to make (filing it under the tester's own id would be a false unit in WATS)."""
    d: TestDoc = _read(m.doc, TestDoc, m.topic)
    who = _who(m, d.device_id, "device id")
    if not d.serial_number or not d.serial_number.strip():
        raise AdapterError(f"{m.topic}: no serial_number (a test result names the unit it tested)")
    return [_test_event(m, d, unit=d.serial_number, who=who, test_type=_test_type(d.test_type or "test"),
                        custom={})]


def selftest(m: Message) -> list[Event]:
    """``devices/{id}/selftest``: the device testing itself. The unit is the device and the type ``selftest``,
    whatever the payload claims: a device's credentials are not a licence to file a product's test. Its
    ``part_number`` counts when it speaks of itself (no ``serial_number``, or its own id); a product's serial, part
    number, a ``recipe`` or ``sub_units`` are kept as ``reported_*`` misc infos, never filed under. A device that tests products publishes to a ``testers/+/results`` topic the broker's ACL lets
    it use."""
    d: TestDoc = _read(m.doc, TestDoc, m.topic)
    who = _who(m, d.device_id, "device id")
    # what it says of a product is kept to read (misc infos), never what the report is filed under; its own part
    # number counts when it speaks of itself (no serial, or its own: the seed's example)
    about_itself = d.serial_number in (None, who)
    claims = {"reported_serial": None if about_itself else d.serial_number,
              "reported_part_number": None if about_itself else d.part_number, "reported_recipe": d.recipe,
              "reported_sub_units": len(d.sub_units) or None}
    if not about_itself:
        d.part_number = d.revision = None
    d.recipe = d.recipe_revision = None
    d.sub_units = []
    return [_test_event(m, d, unit=who, who=who, test_type="selftest",
                        custom={k: v for k, v in claims.items() if v})]


def _test_event(m: Message, d: TestDoc, *, unit: str, who: str, test_type: str,
                custom: dict[str, Any]) -> Event:
    extra = {k: v for k, v in (("recipe", d.recipe), ("recipe_revision", d.recipe_revision)) if v}
    try:
        payload = reported_test(unit_id=unit, reported=d.result, steps=d.steps, when=_when(m, d.timestamp),
                                duration_ms=d.duration_ms, fixture_id=who, test_type=test_type,
                                part_number=d.part_number, revision=d.revision, operator_id=d.operator,
                                sub_units=d.sub_units, custom={"mqtt_topic": m.topic, **extra, **custom})
    except AdapterError:
        raise
    except ValueError as e:
        raise AdapterError(f"{m.topic}: {e}") from None
    return Event.create(EventType.TEST_RESULT, payload, source=m.source)


def _test_type(word: str) -> str:
    w = word.strip().lower().replace("-", "_")
    return "selftest" if w in ("self_test", "selftest") else w


def measurements(m: Message) -> list[Event]:
    """A measurement stream is not a finished test: kept as telemetry readings keyed by path."""
    d: MeasurementsDoc = _read(m.doc, MeasurementsDoc, m.topic)
    readings = {x.path: x.value for x in d.measurements}
    units = {x.path: x.unit for x in d.measurements if x.unit}
    custom = {"serial_number": d.serial_number} if d.serial_number else {}
    return [_event(EventType.ASSET_TELEMETRY, AssetTelemetryEvent,
                   dict(asset_id=_who(m, d.device_id, "device id"), timestamp=_when(m, d.timestamp),
                        readings=readings, units=units, custom_data=custom), m)]


def software(m: Message) -> list[Event]:
    d: SoftwareDoc = _read(m.doc, SoftwareDoc, m.topic)
    return [_event(EventType.DEVICE_SOFTWARE, DeviceSoftwareEvent,
                   dict(device_id=_who(m, d.device_id, "device id"), timestamp=_when(m, d.timestamp),
                        software=[msgspec.to_builtins(s) for s in d.software], config_version=d.config_version), m)]


UNIT_EVENTS = {"unit_entered": EventType.UNIT_ARRIVED, "entered": EventType.UNIT_ARRIVED,
               "arrived": EventType.UNIT_ARRIVED, "scanned": EventType.UNIT_ARRIVED,
               "unit_exited": EventType.UNIT_DEPARTED, "exited": EventType.UNIT_DEPARTED,
               "unit_left": EventType.UNIT_DEPARTED, "departed": EventType.UNIT_DEPARTED}


def unit(m: Message) -> list[Event]:
    """``stations/{id}/unit`` (entered/exited) and ``lines/{id}/scan`` (a scan is an arrival at that line)."""
    d: UnitDoc = _read(m.doc, UnitDoc, m.topic)
    kind = "scanned" if m.topic.endswith("/scan") and d.event == "unit_entered" else d.event
    etype = UNIT_EVENTS.get(kind.strip().lower())
    if etype is None:
        raise AdapterError(f"{m.topic}: event {d.event!r} is not one of {sorted(UNIT_EVENTS)}")
    where = "line_id" if m.topic.startswith("lines/") else "station_id"
    payload = {"unit_id": d.serial_number, where: _who(m, d.station_id or d.line_id, where),
               "timestamp": _iso(_when(m, d.timestamp)), "event": d.event}
    if d.part_number:
        payload["part_number"] = d.part_number
    if d.operator:
        payload["operator_id"] = d.operator
    return [Event.create(etype, payload, source=m.source)]


def _event(etype: EventType, cls: type, fields: dict[str, Any], m: Message) -> Event:
    try:
        payload = cls(**fields)
    except (TypeError, ValueError) as e:
        raise AdapterError(f"{m.topic}: {e}") from None
    return Event.create(etype, payload, source=m.source)


ADAPTERS: dict[str, Callable[[Message], list[Event]]] = {
    "asset": asset, "asset_alert": asset_alert, "test_result": test_result, "selftest": selftest,
    "measurements": measurements, "software": software, "unit": unit,
}

#: The seed's topic plan: subscription → adapter.
DEFAULT_SUBSCRIPTIONS: list[tuple[str, str]] = [
    ("assets/+/status", "asset"), ("assets/+/counters", "asset"), ("assets/+/environment", "asset"),
    ("assets/+/alerts", "asset_alert"), ("devices/+/selftest", "selftest"), ("testers/+/results", "test_result"),
    ("testers/+/measurements", "measurements"), ("devices/+/software", "software"), ("stations/+/unit", "unit"),
    ("lines/+/scan", "unit"),
]


# ------------------------------------------------------------------------------------------------ site mappings
def _dig(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


_MISSING = object()


def mapping(event_type: str, fields: dict[str, str], device_field: str | None) -> Callable[[Message], list[Event]]:
    """An adapter from config: ``fields`` maps each payload field of ``event_type`` to a dotted path in the
    message (``"$topic_id"`` is the topic's device id, ``"$received"`` the receive time); ``device_field`` gets
    the device id from the topic. The payload is then validated like any published event."""

    def adapt(m: Message) -> list[Event]:
        payload: dict[str, Any] = {}
        for target, path in fields.items():
            if path == "$topic_id":
                value: Any = m.device
            elif path == "$received":
                value = _iso(m.received)
            else:
                value = _dig(m.doc, path)
            if value is _MISSING:
                raise AdapterError(f"{m.topic}: no {path!r} in the message (for {event_type}.{target})")
            payload[target] = value
        if device_field and device_field not in payload and m.device:
            payload[device_field] = m.device
        try:
            return [Event.create(event_type, payload, source=m.source)]
        except EventValidationError as e:
            raise AdapterError(f"{m.topic}: {e}") from None

    return adapt
