"""The normalized event every source produces and every sink consumes.

An ``Event`` is a msgspec Struct so that encoding it for the journal and decoding it for a subscriber is a single
C call each way. The payload is always kept as JSON builtins (dicts, lists, strings, numbers): that is what goes on
disk, so ``decode(encode(event)) == event`` holds exactly. When the event type has a typed payload (the seed's
``TestResultEvent`` and friends) the payload is validated against it on ``create`` and on publish, and
``typed_payload()`` gives the Struct back.
"""

from __future__ import annotations

import enum
import time
from datetime import datetime, timezone
from typing import Any

import msgspec

from . import payloads as p
from .ids import BOOT_ID, clock_synchronized, uuid7


class EventType(str, enum.Enum):
    """The seed's event types plus the three the fixture agent adds (counters, telemetry, software)."""

    TEST_RESULT = "test.result"
    TEST_STARTED = "test.started"
    INSPECTION_RESULT = "inspection.result"
    INSPECTION_STARTED = "inspection.started"
    ASSET_FAULT = "asset.fault"
    ASSET_MAINTENANCE = "asset.maintenance"
    ASSET_STATE_CHANGED = "asset.state_changed"
    ASSET_CALIBRATION = "asset.calibration"
    ASSET_COUNTERS = "asset.counters"
    ASSET_TELEMETRY = "asset.telemetry"
    DEVICE_SOFTWARE = "device.software"
    MATERIAL_INSTALLED = "material.installed"
    MATERIAL_CONSUMED = "material.consumed"
    MATERIAL_REJECTED = "material.rejected"
    WORK_STARTED = "production.work_started"
    WORK_COMPLETED = "production.work_completed"
    UNIT_ARRIVED = "production.unit_arrived"
    UNIT_DEPARTED = "production.unit_departed"
    UNIT_DISQUALIFIED = "production.unit_disqualified"
    WORK_ORDER_CREATED = "production.work_order_created"
    WORK_ORDER_UPDATED = "production.work_order_updated"
    TRANSPORT_CONNECTED = "system.transport_connected"
    TRANSPORT_DISCONNECTED = "system.transport_disconnected"
    TRANSPORT_ERROR = "system.transport_error"
    HANDLER_ERROR = "system.handler_error"
    EVENT_DEAD_LETTER = "system.dead_letter"
    CUSTOM = "custom"

    @classmethod
    def from_string(cls, value: str) -> "EventType":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown event type {value!r}; known: {', '.join(m.value for m in cls)}") from None

    @classmethod
    def _prefixed(cls, *prefixes: str) -> list["EventType"]:
        return [m for m in cls if m.value.startswith(prefixes)]

    @classmethod
    def test_events(cls) -> list["EventType"]:
        return cls._prefixed("test.", "inspection.")

    @classmethod
    def asset_events(cls) -> list["EventType"]:
        return cls._prefixed("asset.", "device.")

    @classmethod
    def material_events(cls) -> list["EventType"]:
        return cls._prefixed("material.")

    @classmethod
    def production_events(cls) -> list["EventType"]:
        return cls._prefixed("production.")

    @classmethod
    def system_events(cls) -> list["EventType"]:
        return cls._prefixed("system.")


#: Event type → the Struct its payload must satisfy. Types not listed carry a free-form JSON object.
PAYLOAD_TYPES: dict[str, type[msgspec.Struct]] = {
    EventType.TEST_RESULT.value: p.TestResultEvent,
    EventType.INSPECTION_RESULT.value: p.InspectionResultEvent,
    EventType.ASSET_FAULT.value: p.AssetFaultEvent,
    EventType.ASSET_STATE_CHANGED.value: p.AssetStateChangedEvent,
    EventType.ASSET_MAINTENANCE.value: p.MaintenanceEvent,
    EventType.ASSET_CALIBRATION.value: p.MaintenanceEvent,  # the seed has no calibration payload: same shape
    EventType.ASSET_COUNTERS.value: p.AssetCountersEvent,
    EventType.ASSET_TELEMETRY.value: p.AssetTelemetryEvent,
    EventType.DEVICE_SOFTWARE.value: p.DeviceSoftwareEvent,
    EventType.MATERIAL_INSTALLED.value: p.MaterialInstalledEvent,
    EventType.WORK_STARTED.value: p.WorkStartedEvent,
    EventType.WORK_COMPLETED.value: p.WorkCompletedEvent,
    EventType.UNIT_DISQUALIFIED.value: p.UnitDisqualifiedEvent,
    EventType.WORK_ORDER_CREATED.value: p.WorkOrderEvent,
    EventType.WORK_ORDER_UPDATED.value: p.WorkOrderEvent,
}


class EventValidationError(ValueError):
    """A payload or event that does not fit its schema; the message names the field (``$.steps[0].status``)."""


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise EventValidationError(f"{what} must be timezone-aware (got a naive datetime)")
    return value.astimezone(timezone.utc)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class EventMetadata(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where an event came from and how it relates to others.

    ``timestamp`` is when it happened (UTC wall clock). ``boot_id`` and ``monotonic_ns`` order events of one boot
    even if the wall clock was wrong when they were stamped.
    """

    event_id: str = msgspec.field(default_factory=uuid7)
    timestamp: datetime = msgspec.field(default_factory=_utcnow)
    source: str = "unknown"
    correlation_id: str | None = None
    causation_id: str | None = None
    source_topic: str | None = None
    retry_count: int = 0
    trace_id: str | None = None
    span_id: str | None = None
    # A factory, not a constant default: omit_defaults would otherwise drop the current boot's id on encode and
    # a later boot would decode it as its own.
    boot_id: str = msgspec.field(default_factory=lambda: BOOT_ID)
    monotonic_ns: int = msgspec.field(default_factory=time.monotonic_ns)
    #: The wall clock was not NTP-synchronized when the agent stamped ``timestamp`` (a Pi without RTC after boot):
    #: sinks that need true times correct it from ``monotonic_ns`` (see ``protocols/clock.py``).
    clock_unsynced: bool = False
    custom: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is not timezone.utc:
            self.timestamp = _utc(self.timestamp, "metadata.timestamp")

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EventMetadata":
        return _convert(data, cls)

    def increment_retry(self) -> "EventMetadata":
        return msgspec.structs.replace(self, retry_count=self.retry_count + 1)

    def with_causation(self, causing_event: "Event") -> "EventMetadata":
        cm = causing_event.metadata
        return msgspec.structs.replace(
            self, causation_id=cm.event_id, correlation_id=cm.correlation_id or cm.event_id
        )


class Event(msgspec.Struct, kw_only=True):
    """One normalized event. Build it with ``Event.create``; the journal stores exactly what ``encode`` gives."""

    event_type: str
    payload: dict[str, Any] = {}
    metadata: EventMetadata = msgspec.field(default_factory=EventMetadata)

    def __post_init__(self) -> None:
        if isinstance(self.event_type, enum.Enum):
            self.event_type = self.event_type.value
        if not self.event_type or len(self.event_type) > 128 or not self.event_type.isascii():
            raise EventValidationError(f"event type must be 1-128 ASCII characters, got {self.event_type!r}")

    # --- the seed's accessors -------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.metadata.event_id

    event_id = id

    @property
    def source(self) -> str:
        return self.metadata.source

    @property
    def timestamp(self) -> datetime:
        return self.metadata.timestamp

    @classmethod
    def create(
        cls,
        event_type: EventType | str,
        payload: dict[str, Any] | msgspec.Struct | None = None,
        source: str = "unknown",
        correlation_id: str | None = None,
        *,
        occurred_at: datetime | None = None,
        source_topic: str | None = None,
        custom: dict[str, Any] | None = None,
        validate: bool = True,
    ) -> "Event":
        """A new event with a fresh time-ordered id; a typed payload is validated (see ``validate_payload``)."""
        etype = event_type.value if isinstance(event_type, enum.Enum) else str(event_type)
        data = msgspec.to_builtins(payload) if payload is not None else {}
        if not isinstance(data, dict):
            raise EventValidationError(f"payload of {etype} must be a JSON object, got {type(data).__name__}")
        md = EventMetadata(
            source=source,
            correlation_id=correlation_id,
            source_topic=source_topic,
            custom=custom or {},
            **({"timestamp": _utc(occurred_at, "occurred_at")} if occurred_at is not None
               else {} if clock_synchronized() else {"clock_unsynced": True}),
        )
        event = cls(event_type=etype, payload=data, metadata=md)
        if validate:
            validate_payload(event)
        return event

    def derive(
        self, event_type: EventType | str, payload: dict[str, Any] | msgspec.Struct, source: str | None = None
    ) -> "Event":
        """A follow-up event carrying this one's correlation id and naming it as its cause."""
        child = Event.create(event_type, payload, source or self.source)
        return msgspec.structs.replace(child, metadata=child.metadata.with_causation(self))

    def with_retry(self) -> "Event":
        return msgspec.structs.replace(self, metadata=self.metadata.increment_retry())

    def typed_payload(self) -> Any:
        """The payload as its domain Struct (e.g. ``TestResultEvent``), or the dict for untyped events."""
        cls = PAYLOAD_TYPES.get(self.event_type)
        return self.payload if cls is None else _convert(self.payload, cls, f"payload of {self.event_type}")

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        return _convert(data, cls, "event")


def _convert(data: Any, cls: type, what: str = "value") -> Any:
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as e:
        raise EventValidationError(f"{what}: {e}") from None


def validate_payload(event: Event) -> None:
    """Raise ``EventValidationError`` naming the field if a typed event's payload does not fit its Struct."""
    cls = PAYLOAD_TYPES.get(event.event_type)
    if cls is not None:
        _convert(event.payload, cls, f"payload of {event.event_type}")


def _build_type_info() -> None:
    """msgspec builds a Struct's type information on first use and calls back into Python half-way through
    (``get_class_annotations``); two threads doing that for the same type at once crashed the agent with SIGSEGV
    (the fault harness: about 1 in 60 starts, always within seconds of a start, every trace in ``msgspec.convert``
    on one thread while another ran). Built here, at import, on one thread, nothing is left to race."""
    for cls in (Event, EventMetadata, *PAYLOAD_TYPES.values()):
        msgspec.json.Decoder(cls)


_build_type_info()

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes | memoryview) -> Event:
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as e:
        raise EventValidationError(f"event: {e}") from None
