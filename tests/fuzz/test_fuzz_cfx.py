"""Fuzzing CFX ingest: the envelope reader and every mapped body (``protocols/cfx.py``, ``protocols/cfx_mapping.py``),
the source's whole decode path for one AMQP message (``CfxSource.read``: the body's type, ``max_message_bytes``,
content-encoding, gzip up to ``max_inflated_bytes``, a JSON array of envelopes, the own-message and duplicate
checks, the mapping), and a batch of messages as the receiver journals them.

The only outcomes are events that encode and validate, or ``CfxError`` naming where (the source keeps it as a
dead letter and rejects the delivery). Anything else reaches the receiver's "internal error" branch: an ERROR with
a traceback per message, the defect the fuzzing looks for. In a batch, a bad message next to good ones costs only
itself: every good one's events are journaled and its delivery accepted, each delivery settled exactly once.

Documents are shaped like each mapped message (the samples, and the SDK's shapes for the rest, with keys dropped,
re-cased or given any value), arbitrary JSON, arbitrary bytes, gzip of those (truncated, bombs), arrays of
envelopes, JSON nested past any recursion limit and bodies over the size bound.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import tempfile
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from proton import Delivery, Message

from agent.config import parse_config
from agent.events import EventBus, Journal
from agent.events.model import Event, validate_payload
from agent.protocols import cfx
from agent.protocols.cfx_mapping import MAPPERS, NOT_EVENTS, RELAYED_BY, to_events
from agent.protocols.cfx_samples import SAMPLES
from agent.sources.cfx import CfxSource, _Receiver

from .strategies import Tally, deeply_nested, fuzz_settings, json_objects, json_scalars, json_values, mutated, to_json

pytestmark = pytest.mark.fuzz
WHEN = datetime(2026, 11, 23, 8, 31, 7, tzinfo=timezone.utc)
SENDER = "Acme.Line4.SN77"
#: how a CFX refusal begins (docs/bad-input.md: the JSON path, or what of the body is wrong)
REASON = re.compile(r"^(body|envelope|MessageBody|mapped [a-z_.]+ is not valid)")

# ------------------------------------------------------------------------------------------------ the shapes
_UNIT = {"UnitIdentifier": "PNL000123", "PositionNumber": 1, "PositionName": "1", "X": 0.0, "Y": 0.0, "Z": None,
         "Rotation": 0.0, "FlipX": False, "FlipY": False, "Status": "Pass"}
_OPERATOR = {"OperatorIdentifier": "BADGE1022", "ActorType": "Human", "LastName": "Meyer", "FirstName": "Lena",
             "LoginName": "lmeyer"}
#: the mapped messages without a sample in ``cfx_samples``, as reference/cfx.md §6-7 gives their bodies
_MORE = {
    "CFX.Production.UnitsArrived": {"PrimaryIdentifier": "PNL000123", "HermesIdentifier": None, "UnitCount": 1,
                                    "Units": [_UNIT], "Lane": 1},
    "CFX.Production.UnitsDeparted": {"PrimaryIdentifier": "PNL000123", "HermesIdentifier": None, "UnitCount": 2,
                                     "Units": [_UNIT, {**_UNIT, "UnitIdentifier": "PNL000124"}], "Lane": 2},
    "CFX.Production.UnitsDisqualified": {"TransactionID": "0b7d9a4e-5c1f-4e8a-b2d3-9f6e1a2c3d4b",
                                         "DisqualifiedUnits": [_UNIT], "Reason": "Damaged",
                                         "Comments": "dropped by the handler"},
    "CFX.ResourcePerformance.MaintenancePerformed": {
        "MaintenanceType": "Preventive", "MaintenanceOrderNumber": "MO-88", "MaintenanceJobCode": "PINS-REPLACE",
        "ConsumedMaterials": [{"MaterialLocation": {"LocationIdentifier": "L1", "LocationName": "bench",
                                                    "MaterialPackage": {"UniqueIdentifier": "PKG-1",
                                                                        "InternalPartNumber": "POGO-100",
                                                                        "Quantity": 12}},
                               "QuantityUsed": 12, "QuantitySpoiled": 0, "RemainingQuantity": 88}],
        "Tasks": [{"Task": "Replaced 12 pogo pins", "TaskId": "T1", "Operator": _OPERATOR, "ManHoursConsumed": 0.5},
                  {"Task": "Cleaned the plate", "TaskId": "T2", "Operator": None, "ManHoursConsumed": 0.25}]},
}
#: message name → the envelopes that map (every sample, plus the ones above)
BASES: dict[str, list[dict[str, Any]]] = {}
for _doc in [d for _, d in SAMPLES.values()] + [cfx.envelope_doc(n, b, source=SENDER, when=WHEN)
                                                 for n, b in _MORE.items()]:
    BASES.setdefault(_doc["MessageName"], []).append(msgspec.json.decode(cfx.encode(_doc)))
assert set(BASES) >= set(MAPPERS), set(MAPPERS) - set(BASES)

#: values a CFX field meets: enumerations, E10 codes in each spelling, times past either end of the calendar,
#: TimeSpans, the SDK's spelling of non-finite floats, $types, numbers at the edges
_CFX_VALUES = st.sampled_from([
    "Passed", "Failed", "Error", "Aborted", "Skipped", "Pass", "Fail", "passed", " Passed ", "Completed",
    "Information", "Warning", "Alarm", "NaN", "Infinity", "-Infinity", "1100", 1100, "22A0", "22b0", "5300", 5300,
    "999", 7000, "0", "00:01:00", "1.02:03:04.5", "-00:00:01", "2026-11-23T09:30:58.1000000+01:00",
    "2026-11-23T09:30:58", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-13-45T99:00:00Z",
    "CFX.Structures.NumericMeasurement, CFX", "CFX.Structures.BooleanMeasurement, CFX",
    "CFX.Structures.TextMeasurement, CFX", "CFX.Structures.Nope, CFX", ", CFX", "CFX.", "ICT", "Human",
    SENDER, "", " ", 0, -1, 0.5, 1e308, -1e308, 2**63, -(2**63), 2**64 - 1, True, False, None])
#: (an empty list or object is a new one each time: a shared one, grown by a later change, made hypothesis'
#: generation depend on earlier inputs)
_LEAF = st.one_of(_CFX_VALUES, st.builds(list), st.builds(dict), json_scalars, json_values)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path (keys and indices) to every node of a document below its root."""
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


_OPS = st.sampled_from(["drop", "value", "value", "value", "recase", "empty", "cut", "grow", "add"])
_KEYS = st.one_of(st.sampled_from(sorted(cfx.CANONICAL.values()) + ["$type"]), st.text(max_size=8))


def _mutate(doc: Any, path: tuple[Any, ...], op: str, draw: st.DrawFn) -> None:
    """One change at ``path`` (nothing if an earlier change removed it): the key dropped or re-cased, the value
    replaced, a list emptied, cut or grown by a copy of an item, an object given another key."""
    parent, last = None, None
    node = doc
    for step in path:
        if isinstance(node, dict) and isinstance(step, str) and step in node \
                or isinstance(node, list) and isinstance(step, int) and step < len(node):
            parent, last, node = node, step, node[step]
        else:
            return
    if op == "drop":
        del parent[last]
    elif op == "recase" and isinstance(last, str):
        parent[draw(st.sampled_from([last.lower(), last.upper(), last.swapcase()]))] = parent.pop(last)
    elif op in ("empty", "cut", "grow") and isinstance(node, list):
        if op == "empty":
            node.clear()
        elif op == "cut":
            del node[len(node) // 2:]
        else:
            node.append(msgspec.json.decode(msgspec.json.encode(node[draw(st.integers(0, len(node) - 1))]))
                        if node else draw(_LEAF))
    elif op == "add" and isinstance(node, dict):
        node[draw(_KEYS)] = draw(_LEAF)
    else:
        parent[last] = draw(_LEAF)


@st.composite
def shaped(draw: st.DrawFn, bases: tuple[tuple[bytes, list[tuple[Any, ...]]], ...]) -> Any:
    """One of ``bases`` (documents that map, as JSON, with their paths) with a few changes anywhere in it (see
    ``_mutate``): the keys stay the ones the mapping reads, so the fuzzer gets past the first missing key. A few
    decisions per document, not one per node, and no strategy built per draw: generation stays cheap."""
    raw, paths = bases[draw(st.integers(0, len(bases) - 1))] if len(bases) > 1 else bases[0]
    doc = msgspec.json.decode(raw)
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 2, 3, 4, 6, 10]))):
        _mutate(doc, paths[draw(st.integers(0, len(paths) - 1))], draw(_OPS), draw)
    return doc


def _arbitrary_body(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """``name``'s envelope around an arbitrary JSON object, with any TimeStamp and Source now and then."""
    return st.builds(lambda body, ts, src: cfx.envelope_doc(name, body, source=src, when=WHEN) | (
        {"TimeStamp": ts} if ts is not None else {}), json_objects, st.one_of(st.none(), _LEAF),
                     st.one_of(st.just(SENDER), st.none(), _LEAF))


_SHAPES = {name: shaped(tuple((cfx.encode(d), _paths(d)) for d in docs)) for name, docs in BASES.items()}
#: per message name: envelopes shaped like its message (twice as likely), and its name around an arbitrary body
LIKE = {name: st.one_of(_SHAPES[name], _SHAPES[name], _arbitrary_body(name)) for name in BASES}
_any_shape = st.one_of(*LIKE.values())
_tallies = {name: Tally(f"CFX {name.rsplit('.', 1)[-1]}") for name in sorted(MAPPERS)}
_events = Counter[str]()


def _check(events: list[Event]) -> None:
    for e in events:
        assert isinstance(e, Event)
        validate_payload(e)
        assert msgspec.json.decode(msgspec.json.encode(e), type=Event).event_type == e.event_type


def _refused(e: cfx.CfxError) -> str:
    reason = str(e)
    assert type(e) is cfx.CfxError and REASON.match(reason) and "\n" not in reason, repr(e)
    return reason


@pytest.mark.parametrize("name", sorted(MAPPERS))
@fuzz_settings(quick=100)
@given(data=st.data())
def test_any_document_shaped_like_a_mapped_message_is_events_or_a_cfx_error(name, data):
    doc = data.draw(LIKE[name], label="envelope")
    try:
        events = [e for env in cfx.decode(to_json(doc)) for e in to_events(env, "cfx:cfx")]
    except cfx.CfxError as e:
        _tallies[name].refuse(_refused(e))
        return
    _check(events)
    _events[name] += len(events)
    _tallies[name].accept()


# ------------------------------------------------------------------------------------------------ the source
_CONFIG = ('[agent]\nstation = "s"\n[sources.cfx]\nurl = "amqp://127.0.0.1:1"\nmax_message_bytes = "64KB"\n'
           'max_inflated_bytes = "256KB"\n')
_MAX = 64 * 1024
_BOMB = gzip.compress(b"0" * (300 * 1024), compresslevel=9)  # 300 bytes that inflate past max_inflated_bytes


class _Rig:
    """A CFX source on a real journal and bus, not connected: its decode path and its receiver's batching are
    driven directly. Renewed every ``RENEW`` uses, so a long run does not grow one journal without bound."""

    RENEW = 500

    def __init__(self) -> None:
        self.uses = 0
        self.dir: tempfile.TemporaryDirectory[str] | None = None
        self._new()

    def _new(self) -> None:
        if self.dir is not None:
            self.journal.close()
            self.dir.cleanup()
        self.dir = tempfile.TemporaryDirectory(prefix="fuzz-cfx-")
        self.journal = Journal(Path(self.dir.name) / "journal.db", sync="normal")
        self.bus = EventBus(self.journal)
        self.source = CfxSource(parse_config(_CONFIG).sources.cfx, "s")
        self.bus.register_transport(self.source)
        self.source.recent.load(self.journal.get_state(self.source.recent_key))

    def get(self) -> "_Rig":
        self.uses += 1
        if self.uses % self.RENEW == 0:
            self._new()
        return self


_RIG = _Rig()
_gz = st.builds(lambda b, level: gzip.compress(b, compresslevel=level), st.one_of(
    st.binary(max_size=200), _any_shape.map(to_json), st.lists(_any_shape, min_size=1, max_size=3).map(to_json)),
    st.sampled_from([1, 9]))
_payloads = st.one_of(
    st.binary(max_size=300), json_values.map(to_json), _any_shape.map(to_json), _any_shape.map(to_json),
    st.lists(_any_shape, max_size=3).map(to_json), mutated(_any_shape.map(to_json)), _gz, _gz,
    st.builds(lambda g, cut: g[:max(1, int(len(g) * cut))], _gz, st.floats(0, 0.99)),  # gzip cut short
    st.just(_BOMB), st.just(_BOMB + _BOMB), _gz.map(lambda g: g + b"\0\0" + g),  # two members with padding
    deeply_nested(), deeply_nested().map(lambda d: b'{"MessageName":"CFX.Heartbeat","MessageBody":' + d + b"}"),
    deeply_nested(b'{"$type":"CFX.Heartbeat, CFX"}').map(lambda d: b'[' + d + b']'),
    st.builds(lambda d, n: to_json(d)[:-1] + b',"pad":"' + b"x" * n + b'"}', _any_shape,
              st.sampled_from([_MAX, 70_000, 300_000])),  # over max_message_bytes
)
_bodies = st.one_of(_payloads, _payloads, _payloads, _payloads, st.text(max_size=50),
                    _any_shape.map(lambda d: to_json(d).decode("utf-8", "replace")),  # an AmqpValue string
                    st.one_of(st.none(), st.integers(), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                        max_size=2), st.lists(st.integers())))
_encodings = st.one_of(st.sampled_from([None, "None", "gzip", "GZIP", " gzip ", "identity", "none", "", "deflate",
                                        "br"]), st.text(max_size=6))


def _labelled(body: Any, roll: int, other: str | None) -> tuple[Any, str | None]:
    """Mostly the content-encoding a sender would put on ``body`` (gzip for gzip, none otherwise), else any."""
    if roll < 7:
        return body, "gzip" if isinstance(body, bytes) and body[:2] == b"\x1f\x8b" and roll < 5 else None
    return body, other


_messages = st.builds(_labelled, _bodies, st.integers(0, 9), _encodings)
_properties = st.one_of(st.just({}), st.fixed_dictionaries({RELAYED_BY: st.one_of(
    st.text(max_size=20), st.sampled_from(["FixtureAgent.s", "A.B.C,FixtureAgent.s", "a,b,c,d,e", ",", SENDER]),
    st.integers())}), st.dictionaries(st.text(max_size=6), json_scalars, max_size=2))


def _message(body: Any, encoding: str | None, properties: dict[str, Any]) -> Message:
    return Message(body=body, content_encoding=encoding, properties=properties, subject="Acme.Line4.SN77.CFX.x")


def _read_outcome(tally: Tally, source: CfxSource, msg: Message) -> None:
    try:
        events, ids = source.read(msg)
    except cfx.CfxError as e:
        tally.refuse(_refused(e))
        return
    _check(events)
    assert all(isinstance(i, str) for i in ids)
    _events["source"] += len(events)
    tally.accept()


_source_tally = Tally("CFX source decode path (CfxSource.read)")


@fuzz_settings()
@given(body_encoding=_messages, properties=_properties)
def test_any_amqp_body_is_events_or_a_cfx_error(body_encoding, properties):
    _read_outcome(_source_tally, _RIG.get().source, _message(*body_encoding, properties))


# ------------------------------------------------------------------------------------------------ a batch
class _Delivery:
    """What the receiver does with one delivery: its disposition and how often it was settled (a real proton
    delivery needs a link; the receiver only updates and settles it)."""

    refused = False

    def __init__(self) -> None:
        self.local = SimpleNamespace(condition=None)
        self.states: list[Any] = []
        self.settled = 0

    def update(self, state: Any) -> None:
        self.states.append(state)

    def settle(self) -> None:
        self.settled += 1


class _Link:
    def __init__(self) -> None:
        self.credit = 0
        self.scheduled: list[float] = []

    def flow(self, n: int) -> None:
        self.credit += n

    def schedule(self, delay: float, handler: Any) -> None:
        self.scheduled.append(delay)


_good = st.sampled_from(sorted(k for k, (_, d) in SAMPLES.items() if d["MessageName"] in MAPPERS))
_batch_tally = Tally("CFX batch: bad messages beside good ones")


@fuzz_settings(quick=100)
@given(batch=st.lists(st.one_of(st.tuples(st.just("good"), _good, st.booleans()),
                                _messages.map(lambda m: ("fuzz", *m))), min_size=2, max_size=6))
def test_a_bad_message_in_a_batch_costs_only_itself(batch):
    """As the receiver runs a batch (``on_message`` for each delivery that arrived together, one journal commit in
    ``on_timer_task``): each good message's events are journaled and its delivery accepted, whatever is beside it;
    every delivery is settled once; each rejected one is a dead letter with a CFX reason, never "internal"."""
    rig = _RIG.get()
    src, link = rig.source, _Link()
    receiver = _Receiver(src, {})
    receiver.receiver = link
    seq0, dead0 = rig.journal.last_seq, rig.journal.last_dead_letter_id()
    sent = []
    for kind, what, how in batch:
        if kind == "good":
            doc = copy.deepcopy(SAMPLES[what][1]) | {"UniqueID": str(uuid.uuid4())}
            msg = _message(cfx.encode(doc, compress=how), "gzip" if how else None, {})
            expected = len(to_events(cfx.read_envelope(doc), src.name))
        else:
            msg, expected, doc = _message(what, how, {}), None, None
        d = _Delivery()
        receiver.on_message(SimpleNamespace(delivery=d, message=msg, receiver=link, container=link))
        sent.append((kind, doc, expected, d))
    receiver.on_timer_task(SimpleNamespace(container=link))

    stored = [msgspec.json.decode(e.body, type=Event) for e in rig.journal.read_after(seq0, limit=10_000)]
    by_uid = Counter(e.payload.get("custom_data", {}).get("cfx", {}).get("unique_id") for e in stored)
    dead = [d for d in rig.journal.dead_letters() if d.id > dead0]
    rejected = [d for *_, d in sent if d.states == [Delivery.REJECTED]]
    for kind, doc, expected, d in sent:
        assert d.settled == 1 and d.states in ([Delivery.ACCEPTED], [Delivery.REJECTED]), (kind, d.states)
        if kind == "good":
            assert d.states == [Delivery.ACCEPTED] and by_uid[doc["UniqueID"]] == expected, (doc["UniqueID"], by_uid)
    assert len(dead) == len(rejected) and link.credit == len(sent)
    for dl in dead:
        assert not dl.reason.startswith("internal error") and REASON.match(dl.reason), dl.reason
        _batch_tally.refuse(dl.reason)
    for _ in range(len(sent) - len(rejected)):
        _batch_tally.accept()
    _events["batch"] += len(stored)


def test_root_and_unmapped_messages_are_accepted_without_events():
    """Not every envelope that reads is an event: the root topic and types not mapped are remembered by their
    UniqueID and counted, not refused (so the fuzz tallies' "accepted" includes them)."""
    from agent.sources.cfx import _key

    src = _RIG.get().source
    for name in sorted(NOT_EVENTS)[:3] + ["CFX.Production.Application.Nope"]:
        doc = cfx.envelope_doc(name, {"CFXHandle": SENDER}, source=SENDER, when=WHEN)
        assert src.read(_message(cfx.encode(doc), None, {})) == ([], [_key(doc["UniqueID"])])
    assert src.not_mapped["CFX.Production.Application.Nope"] >= 1


def teardown_module():
    """The tallies, once every test of the file ran (printed with -s; appended to $FIXTURE_AGENT_FUZZ_REPORT)."""
    for t in [*_tallies.values(), _source_tally, _batch_tally]:
        if t.started is not None:  # not the tests a -k left out
            print(t.report())
    print("events produced:", dict(_events))
    path = os.environ.get("FIXTURE_AGENT_FUZZ_REPORT")
    if path and _events:  # how many events the accepted inputs made (an accepted root message makes none)
        with open(path, "a") as f:
            f.write(json.dumps({"test": "CFX events produced", **_events}) + "\n")
