"""IPC-CFX (IPC-2591) on the wire: the envelope, its JSON, and what AMQP carries it. No broker, no I/O here.

Written exactly as the CFX SDK writes it (``reference/cfx.md`` §1-2): PascalCase keys in SDK order, every envelope
key present (nulls too), ``TimeStamp`` in local time with 7 fraction digits and an offset, ``UniqueID`` a lowercase
GUID, ``MessageBody`` first key ``$type`` = ``"<full type name>, CFX"``. One Data section of UTF-8 JSON, gzip when
the content-encoding says so.

Read as the SDK reads, and as real equipment writes: keys matched without regard to case (``TransactionID`` and
``TransactionId``), ``ResourceState`` as ``"1100"``, ``1100`` or the legacy ``"22A0"``, raw or gzip bodies (also
gzip without the header saying so), one envelope or a JSON array of them, ``$type`` missing on the body (the
``MessageName`` says what it is) and on a measurement (its fields say). Anything else that does not fit raises
``CfxError`` naming what and where.
"""

from __future__ import annotations

import gzip
import re
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec

CFX_VERSION = "2.1"
CONTENT_TYPE = 'application/json; charset="utf-8"'


class CfxError(ValueError):
    """A message that is not a CFX envelope we can read; the text names the field. Control characters are escaped:
    the reason is one line in the log and the dead letter, whatever the sender put in a ``$type`` or a key."""

    def __init__(self, reason: str) -> None:
        super().__init__(re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", reason))


@dataclass
class Envelope:
    message_name: str  # e.g. CFX.Production.TestAndInspection.UnitsTested
    body: dict[str, Any]  # keys canonical (see ``canonical``), ``$type`` removed
    time_stamp: datetime
    unique_id: str
    source: str | None = None
    target: str | None = None
    request_id: str | None = None
    version: str = CFX_VERSION
    notes: list[str] = field(default_factory=list)  # what was read leniently (kept with the events)

    @property
    def short_name(self) -> str:
        """``UnitsTested`` for ``CFX.Production.TestAndInspection.UnitsTested``."""
        return self.message_name.rsplit(".", 1)[-1]

    @property
    def topic(self) -> str:
        """``CFX.Production.TestAndInspection`` (the message's namespace; ``CFX`` for the root messages)."""
        return self.message_name.rsplit(".", 1)[0]


# ------------------------------------------------------------------------------------------------ time
def format_time(when: datetime) -> str:
    """``2024-05-14T09:31:07.1234567+02:00``: local time with the offset, 7 fraction digits (the SDK's form)."""
    if when.tzinfo is None:
        raise ValueError("CFX times carry an offset: give an aware datetime")
    local = when.astimezone()
    off = local.strftime("%z")
    return f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond:06d}0{off[:3]}:{off[3:]}"


def parse_time(value: Any, where: str, notes: list[str] | None = None) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CfxError(f"{where}: {value!r} is not a time")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise CfxError(f"{where}: {value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        if notes is not None:
            notes.append(f"{where} {value} had no offset; taken as UTC")
        when = when.replace(tzinfo=timezone.utc)
    try:
        return when.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+14:00, 9999-12-31T23:59-14:00: before or after what UTC can say
        raise CfxError(f"{where}: {value!r} is out of range (before year 1 or after 9999 in UTC)") from None


_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")


def format_timespan(td: timedelta) -> str:
    """.NET's "c" format: ``[-][d.]hh:mm:ss[.fffffff]``."""
    sign = "-" if td < timedelta(0) else ""
    td = abs(td)
    days, rest = divmod(td, timedelta(days=1))
    hours, rest = divmod(rest, timedelta(hours=1))
    minutes, rest = divmod(rest, timedelta(minutes=1))
    seconds = rest.seconds
    ticks = rest.microseconds * 10
    out = f"{sign}{f'{days}.' if days else ''}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return out + (f".{ticks:07d}" if ticks else "")


def parse_timespan(value: Any, where: str) -> timedelta | None:
    if value is None:
        return None
    m = _TIMESPAN.match(str(value))
    if not m:
        raise CfxError(f"{where}: {value!r} is not a TimeSpan ([d.]hh:mm:ss[.fffffff])")
    sign, d, h, mi, s, frac = m.groups()
    td = timedelta(days=int(d or 0), hours=int(h), minutes=int(mi), seconds=int(s),
                   microseconds=int((frac or "0").ljust(7, "0")[:6]))
    return -td if sign else td


# ------------------------------------------------------------------------------------------------ SEMI E10 states
LEGACY_STATES = {"22A0": 2201, "22B0": 2202}


def parse_resource_state(value: Any, where: str) -> int | None:
    """``"1100"``, ``1100`` or the legacy ``"22A0"``/``"22B0"`` → 1100, 2201 …"""
    if value is None:
        return None
    if isinstance(value, bool):
        raise CfxError(f"{where}: {value!r} is not a ResourceState")
    if isinstance(value, int):
        code = value
    elif isinstance(value, str) and value.strip().upper() in LEGACY_STATES:
        code = LEGACY_STATES[value.strip().upper()]
    elif isinstance(value, str) and value.strip().isdigit():
        code = int(value.strip())
    else:
        raise CfxError(f"{where}: {value!r} is not a ResourceState (a SEMI E10 code such as 1100)")
    if not 1000 <= code <= 6999:
        raise CfxError(f"{where}: {code} is not a SEMI E10 state code (1000-6999)")
    return code


# ------------------------------------------------------------------------------------------------ reading
#: Every key we read, by its lower-case form: the SDK reads keys without regard to case, and the standard itself
#: spells TransactionID two ways.
_KNOWN_KEYS = """MessageName Version TimeStamp UniqueID Source Target RequestID MessageBody TransactionID TestMethod
Tester RecipeName RecipeRevision SamplingInformation TestedUnits UnitIdentifier UnitPositionNumber OverallResult Tests
UniqueIdentifier TestName TestStartTime TestEndTime TestConditions TestProcedure Comments Result Error SymptomsFound
DefectsFound Measurements MeasurementName TimeRecorded Sequence CRDs MeasuredValue Value ValueUnits ExpectedValue
ExpectedValueUnits MinimumAcceptableValue MaximumAcceptableValue SymptomCode SymptomCategory Description DefectCode
DefectCategory ComponentOfInterest ReferenceDesignator PartNumber InspectionMethod Inspector InspectedUnits
Inspections InspectionName InspectionStartTime InspectionEndTime OperatorIdentifier ActorType LastName FirstName
LoginName PrimaryIdentifier HermesIdentifier Lane UnitCount Units PositionNumber PositionName Status Revision
WorkOrderIdentifier WorkOrderId Batch OldState OldStateDuration NewState RelatedFault Fault Cause Severity FaultCode
FaultOccurrenceId Stage StageSequence StageName StageType SideLocation AccessType OccurredAt Operator MaintenanceType
MaintenanceOrderNumber MaintenanceJobCode ConsumedMaterials Tasks Task TaskId ManHoursConsumed InstalledMaterials
QuantityInstalled Material InternalPartNumber InstalledComponents DisqualifiedUnits Reason CFXHandle
HeartbeatFrequency RequestNetworkUri RequestTargetAddress Priority Verification TotalInspectionCount
MaterialLocation MaterialPackage QuantityUsed ActiveFaults ActiveRecipes""".split()
CANONICAL = {k.lower(): k for k in _KNOWN_KEYS}


def canonical(obj: Any) -> Any:
    """Keys in the case the model uses (``transactionid`` → ``TransactionID``); unknown keys as they are."""
    if isinstance(obj, dict):
        return {(CANONICAL.get(k.lower(), k) if isinstance(k, str) else k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


def type_name(value: Any) -> str | None:
    """``"CFX.Structures.NumericMeasurement, CFX"`` → ``"CFX.Structures.NumericMeasurement"``."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.split(",", 1)[0].strip()


#: What a gzip body may inflate to unless the caller says otherwise: far above any real CFX message, far below
#: what would take a Pi's memory (a 4 MB gzip of zeros inflates to about 4 GB).
MAX_INFLATED = 16 * 1024 * 1024


def _gunzip(data: bytes, limit: int) -> bytes:
    """Inflate gzip ``data`` (one member or several, as ``gzip.decompress`` reads), never holding more than
    ``limit`` bytes of output: a body that would inflate further raises ``CfxError`` as soon as it passes it."""
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = rest
        while True:
            chunk = d.decompress(pending, limit + 1 - len(out))
            out += chunk
            if len(out) > limit:
                raise CfxError(f"body: gzip that inflates to more than {limit} bytes (max_inflated_bytes)")
            pending = d.unconsumed_tail
            if d.eof or not (pending or chunk):
                break
        if not d.eof:
            raise CfxError("body: content-encoding gzip but not gzip data (truncated)")
        rest = d.unused_data.lstrip(b"\0")  # gzip.decompress also skips padding between members
    return bytes(out)


def unpack(data: bytes, content_encoding: str | None = None,
           max_inflated: int = MAX_INFLATED) -> tuple[bytes, list[str]]:
    """The JSON bytes of an AMQP Data body: gunzipped when the content-encoding says gzip (any case), or when it
    says nothing but the bytes are gzip (an SDK sender that lost its properties); inflated to ``max_inflated``
    bytes at most (a decompression bomb is a bad message, not the agent's memory)."""
    notes: list[str] = []
    enc = (content_encoding or "").strip().lower()
    if enc in ("", "none") and data[:2] == b"\x1f\x8b":
        notes.append("gzip body without content-encoding")
        enc = "gzip"
    if enc == "gzip":
        try:
            return _gunzip(data, max_inflated), notes
        except (OSError, EOFError, zlib.error) as e:
            raise CfxError(f"body: content-encoding gzip but not gzip data ({e})") from None
    if enc not in ("", "none", "identity"):
        raise CfxError(f"body: content-encoding {str(content_encoding)!r} is not gzip")
    return data, notes


def decode(data: bytes, content_encoding: str | None = None, max_inflated: int = MAX_INFLATED) -> list[Envelope]:
    """One AMQP message body → its envelopes (an SDK batch sends a JSON array of them)."""
    raw, notes = unpack(data, content_encoding, max_inflated)
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise CfxError(f"body: not JSON: {e}") from None
    except RecursionError:  # msgspec gives up at Python's recursion limit: bad input like any other
        raise CfxError("body: not valid JSON: nested too deep") from None
    docs = doc if isinstance(doc, list) else [doc]
    if not docs:
        raise CfxError("body: an empty array")
    out = []
    for i, d in enumerate(docs):
        where = f"envelope[{i}]" if isinstance(doc, list) else "envelope"
        try:
            env = read_envelope(d, where)
        except RecursionError:  # ``canonical`` walks the document: nested deeper than any CFX message
            raise CfxError(f"{where}: nested too deep") from None
        env.notes[:0] = notes
        out.append(env)
    return out


def read_envelope(doc: Any, where: str = "envelope") -> Envelope:
    if not isinstance(doc, dict):
        raise CfxError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    d = canonical(doc)
    body = d.get("MessageBody")
    if not isinstance(body, dict):
        raise CfxError(f"{where}.MessageBody: missing or not an object")
    notes: list[str] = []
    declared = type_name(body.get("$type"))
    name = d.get("MessageName")
    if not isinstance(name, str) or not name.startswith("CFX."):
        if declared is None:
            raise CfxError(f"{where}: neither MessageName nor MessageBody.$type says what this is")
        name = declared
    elif declared is None:
        notes.append("MessageBody without $type (its MessageName says what it is)")
    elif declared != name:
        raise CfxError(f"{where}: MessageName {name} but MessageBody.$type {declared}")
    uid = d.get("UniqueID")
    if not isinstance(uid, str) or not uid:
        raise CfxError(f"{where}.UniqueID: missing (receivers de-duplicate by it)")
    when = parse_time(d.get("TimeStamp"), f"{where}.TimeStamp", notes)
    if when is None:
        raise CfxError(f"{where}.TimeStamp: missing")
    return Envelope(
        message_name=name, body={k: v for k, v in body.items() if k != "$type"}, time_stamp=when,
        unique_id=uid.lower(), source=_str_or_none(d.get("Source")), target=_str_or_none(d.get("Target")),
        request_id=_str_or_none(d.get("RequestID")), version=str(d.get("Version") or ""), notes=notes,
    )


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


# ------------------------------------------------------------------------------------------------ writing
def envelope_doc(message_name: str, body: dict[str, Any], *, source: str | None, when: datetime,
                 unique_id: str | None = None, target: str | None = None,
                 request_id: str | None = None) -> dict[str, Any]:
    """The SDK's envelope, keys in its order, nulls written."""
    return {
        "MessageName": message_name, "Version": CFX_VERSION, "TimeStamp": format_time(when),
        "UniqueID": (unique_id or str(uuid.uuid4())).lower(), "Source": source, "Target": target,
        "RequestID": request_id, "MessageBody": {"$type": f"{message_name}, CFX", **body},
    }


def encode(doc: dict[str, Any] | list[dict[str, Any]], *, compress: bool = False) -> bytes:
    raw = msgspec.json.encode(doc)
    return gzip.compress(raw, compresslevel=1) if compress else raw  # fast: CFX messages are small


def amqp_properties(doc: dict[str, Any], *, compressed: bool) -> dict[str, Any]:
    """What the SDK puts on the AMQP message for an envelope (``AmqpUtilities.SetHeaders``)."""
    name = doc["MessageName"]
    return {
        "id": doc["UniqueID"], "to": doc.get("Target"), "reply_to": doc.get("Source"),
        "correlation_id": doc.get("RequestID"), "content_type": CONTENT_TYPE,
        "content_encoding": "gzip" if compressed else None,
        "subject": f"{doc.get('Source')}.{name}", "durable": True,
        "creation_time": datetime.fromisoformat(doc["TimeStamp"]).timestamp(),
        "properties": {"cfx-topic": name.rsplit(".", 1)[0], "cfx-message": name, "cfx-handle": doc.get("Source"),
                       "cfx-target": doc.get("Target")},
    }
