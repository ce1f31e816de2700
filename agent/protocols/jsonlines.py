"""The fixture controller's serial JSON-lines protocol (the contract is ``docs/serial-protocol.md``).

Each line is one JSON object with a ``type`` (``hello``, ``counters``, ``selftest``, ``state``, ``fault``), a
``seq`` and a ``session``. The agent answers ``{"ack": <seq>}`` only once the event is durable. Delivery is
go-back-N per session: the agent accepts ``seq`` = last accepted + 1 (a new session starts at 1),
re-acknowledges a ``seq`` it already has without publishing it again, and ignores a ``seq`` beyond a gap (the
controller resends from its oldest unacknowledged message; one that had to drop messages says so with
``oldest``). Together with the last accepted ``seq`` being stored
in the same transaction as the event, a resend after an agent crash is acknowledged, not duplicated.

A line that is valid JSON with a ``seq`` but does not fit the schema is kept in the dead-letter table and
acknowledged with an ``error``, so a controller never resends a poison message for ever; a line that is not even
JSON is not acknowledged (it may be a good message mangled on the wire, and the controller will resend it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Union

import msgspec

from ..events.model import Event, EventType
from ..events.payloads import (
    AssetCountersEvent, AssetFaultEvent, AssetState, AssetStateChangedEvent, SeverityLevel,
)
from .jsondepth import NestedTooDeep
from .results import ReportedStep, reported_test


class ProtocolError(ValueError):
    """A line that is not a valid message; ``seq`` is set when the line said which message it was."""

    def __init__(self, reason: str, seq: int | None = None, session: str | None = None) -> None:
        # one line in the log and the dead letter, whatever the device put in a key (a key "\n" is quoted back)
        super().__init__(re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", reason))
        self.seq = seq
        self.session = session


class _Msg(msgspec.Struct, tag_field="type", kw_only=True, forbid_unknown_fields=True):
    seq: int | None = None
    session: str | None = None
    oldest: int | None = None  # the oldest unacknowledged seq the controller still holds (after a full buffer)
    ts: datetime | None = None  # controller's clock; the agent's receive time when absent
    asset_id: str | None = None


class Hello(_Msg, tag="hello"):
    """Sent at controller start; identity goes into the source's status and event metadata."""

    model: str | None = None
    serial: str | None = None
    firmware: str | None = None


class Counters(_Msg, tag="counters"):
    running_count: int
    total_count: int


class SelftestStep(ReportedStep, forbid_unknown_fields=True):
    pass


class Selftest(_Msg, tag="selftest"):
    result: str
    unit_id: str | None = None
    duration_ms: float | None = None
    steps: list[SelftestStep] = []


class State(_Msg, tag="state"):
    state: AssetState
    reason: str | None = None


class Fault(_Msg, tag="fault"):
    code: str
    message: str = ""
    severity: SeverityLevel = SeverityLevel.ERROR
    cleared: bool = False


Message = Union[Hello, Counters, Selftest, State, Fault]
_decoder = msgspec.json.Decoder(Message)


def parse(line: bytes) -> Message:
    """Decode one line; ``ProtocolError`` names what is wrong (and carries ``seq`` if it could be read)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"not UTF-8 at byte {e.start}") from None
    try:
        return _decoder.decode(text)  # the schema bounds the depth of what it keeps; skipped keys may recurse
    except msgspec.ValidationError as e:
        seq, session = _peek_ids(text)
        raise ProtocolError(f"invalid message: {e}", seq, session) from None
    except msgspec.DecodeError as e:
        raise ProtocolError(f"not JSON: {e}") from None
    except RecursionError:
        raise ProtocolError(str(NestedTooDeep())) from None


def _peek_ids(text: str) -> tuple[int | None, str | None]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    seq = doc.get("seq")
    session = doc.get("session")
    return (seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            session if isinstance(session, str) else None)


def ack(seq: int, error: str | None = None) -> bytes:
    doc: dict[str, Any] = {"ack": seq}
    if error:
        doc["error"] = error[:200]
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


@dataclass
class Verdict:
    """What to do with a message, given the session's delivery state. ``gap`` counts messages the controller
    says it dropped before we had them (its buffer was full): kept visible, never silent."""

    publish: bool
    ack: bool
    gap: int = 0


def sequence_verdict(seq: int | None, session: str | None, last: dict[str, Any] | None,
                     oldest: int | None = None) -> Verdict:
    """Go-back-N: ``last`` is ``{"session": …, "seq": …}`` of the last message accepted from this port.

    A session starts at seq 1: messages sent before the agent was listening are resent from the oldest
    unacknowledged one, so accepting a later seq first would lose them. A controller that had to drop messages
    says so with ``oldest``; then the agent accepts from there and reports the gap.
    """
    if seq is None or session is None:
        return Verdict(publish=True, ack=seq is not None)  # unsequenced controllers: best effort
    expected = 1 if last is None or last.get("session") != session else last["seq"] + 1
    if seq < expected:
        return Verdict(publish=False, ack=True)  # a resend of something durable: acknowledge again
    if seq == expected:
        return Verdict(publish=True, ack=True)
    if oldest is not None and seq == oldest and oldest > expected:
        return Verdict(publish=True, ack=True, gap=oldest - expected)
    return Verdict(publish=False, ack=False)  # a gap: wait for the controller to resend the missing one


def to_events(msg: Message, *, asset_id: str, source: str, received: datetime | None = None) -> list[Event]:
    """The normalized events for one message (``hello`` produces a state change to ``online``), or a
    ``ProtocolError``: the serial source catches only that, so a value no event can hold (a ``duration_ms`` that
    ends past the year 9999: OverflowError) must be one too, or the controller's resend would kill the source
    again and again (found by tests/fuzz/test_fuzz_jsonlines.py)."""
    try:
        return _events(msg, asset_id=asset_id, source=source, received=received)
    except ProtocolError:
        raise
    except (ValueError, OverflowError) as e:
        raise ProtocolError(f"invalid {type(msg).__name__.lower()}: {e}", msg.seq, msg.session) from None


def _events(msg: Message, *, asset_id: str, source: str, received: datetime | None) -> list[Event]:
    when = msg.ts or received or datetime.now(timezone.utc)
    if when.tzinfo is None:
        raise ProtocolError("ts must include a UTC offset", msg.seq, msg.session)
    asset = msg.asset_id or asset_id
    custom = {"serial_seq": msg.seq, "serial_session": msg.session} if msg.seq is not None else {}
    if isinstance(msg, Counters):
        try:
            payload: msgspec.Struct = AssetCountersEvent(asset_id=asset, running_count=msg.running_count,
                                                         total_count=msg.total_count, timestamp=when,
                                                         custom_data=custom)
        except ValueError as e:
            raise ProtocolError(f"invalid counters: {e}", msg.seq, msg.session) from None
        return [Event.create(EventType.ASSET_COUNTERS, payload, source=source)]
    if isinstance(msg, Selftest):
        try:
            payload = reported_test(unit_id=msg.unit_id or asset, reported=msg.result, steps=msg.steps, when=when,
                                    duration_ms=msg.duration_ms, fixture_id=asset, custom=custom)
        except ValueError as e:
            raise ProtocolError(str(e), msg.seq, msg.session) from None
        return [Event.create(EventType.TEST_RESULT, payload, source=source)]
    if isinstance(msg, State):
        payload = AssetStateChangedEvent(asset_id=asset, new_state=msg.state, timestamp=when, reason=msg.reason,
                                         custom_data=custom)
        return [Event.create(EventType.ASSET_STATE_CHANGED, payload, source=source)]
    if isinstance(msg, Fault):
        payload = AssetFaultEvent(asset_id=asset, fault_code=msg.code, fault_message=msg.message, timestamp=when,
                                  severity=msg.severity, cleared=msg.cleared,
                                  cleared_time=when if msg.cleared else None, custom_data=custom)
        return [Event.create(EventType.ASSET_FAULT, payload, source=source)]
    # Hello
    ident = {k: v for k, v in (("model", msg.model), ("serial", msg.serial), ("firmware", msg.firmware)) if v}
    payload = AssetStateChangedEvent(asset_id=asset, new_state=AssetState.ONLINE, timestamp=when,
                                     reason="controller started", custom_data={**custom, **ident})
    return [Event.create(EventType.ASSET_STATE_CHANGED, payload, source=source)]

