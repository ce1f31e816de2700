"""Fuzzing the serial JSON-lines protocol as the serial source runs it: ``parse`` → ``sequence_verdict`` →
``to_events`` (and the ack). Any line is a message whose events can be journaled, or a ``ProtocolError`` — the
dead letter with an ack when the line said its seq, no ack otherwise. Never another exception: the source catches
only ``ProtocolError``, so anything else would stop reading the port. Deep nesting is "nested too deep"."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.events.model import Event
from agent.protocols import jsonlines as jl

from .strategies import Tally, deeply_nested, fuzz_settings, json_objects, json_values, mutated, to_json

pytestmark = pytest.mark.fuzz
RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

_ints = st.one_of(st.integers(-3, 5), st.integers(), st.integers(min_value=2**62, max_value=2**66))
_step = st.fixed_dictionaries({"name": st.text(max_size=10)}, optional={
    "value": json_values, "low": json_values, "high": json_values, "unit": st.text(max_size=4),
    "result": st.sampled_from(["pass", "fail", "P", "F", "skipped", "error", "?"]), "comp": st.text(max_size=5)})
_common = {"seq": st.one_of(_ints, json_values), "session": st.one_of(st.text(max_size=8), json_values),
           "oldest": _ints, "asset_id": st.one_of(st.text(max_size=12), json_values),
           "ts": st.one_of(st.datetimes(timezones=st.sampled_from([None, timezone.utc])).map(lambda d: d.isoformat()),
                           st.sampled_from(["2026-01-26T00:00:00Z", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "now"]),
                           json_values)}
_messages = st.one_of(
    st.fixed_dictionaries({"type": st.just("hello")}, optional={**_common, "model": st.text(max_size=8),
                                                               "serial": st.text(max_size=8), "firmware": json_values}),
    st.fixed_dictionaries({"type": st.just("counters"), "running_count": st.one_of(_ints, json_values),
                           "total_count": st.one_of(_ints, json_values)}, optional=_common),
    st.fixed_dictionaries({"type": st.just("selftest"), "result": st.one_of(st.sampled_from(["pass", "fail", "P", "?"]),
                                                                            json_values)},
                          optional={**_common, "unit_id": st.text(max_size=8), "steps": st.lists(_step, max_size=4),
                                    "duration_ms": st.one_of(st.floats(), _ints, json_values)}),
    st.fixed_dictionaries({"type": st.just("state"), "state": st.sampled_from(["busy", "idle", "online", "offline",
                                                                              "error", "maintenance", "nope"])},
                          optional={**_common, "reason": st.text(max_size=10)}),
    st.fixed_dictionaries({"type": st.just("fault"), "code": st.one_of(st.text(max_size=8), json_values)},
                          optional={**_common, "message": st.text(max_size=10), "cleared": json_values,
                                    "severity": st.sampled_from(["info", "warning", "error", "critical", "x"])}),
    json_objects.map(lambda d: {"type": "counters", **d}),
).map(to_json)
_last = st.one_of(st.none(), st.fixed_dictionaries({"session": st.text(max_size=8), "seq": st.integers(0, 10)}))

_tally = Tally("serial JSON line")


@fuzz_settings()
@given(line=st.one_of(st.binary(max_size=200), json_values.map(to_json), _messages, _messages, mutated(_messages),
                      deeply_nested(), deeply_nested().map(lambda d: b'{"type":"hello","model":' + d + b"}")),
       last=_last)
def test_any_line_is_a_message_with_events_or_a_protocol_error(line, last):
    try:
        msg = jl.parse(line)
        verdict = jl.sequence_verdict(msg.seq, msg.session, last, msg.oldest)
        events = jl.to_events(msg, asset_id="FX-1", source="serial:dut", received=RECEIVED)
    except jl.ProtocolError as e:
        assert type(e) is jl.ProtocolError and str(e) and "\n" not in str(e), repr(e)
        if e.seq is not None:
            verdict = jl.sequence_verdict(e.seq, e.session, last)
            if verdict.ack:
                assert json.loads(jl.ack(e.seq, str(e)))["ack"] == e.seq
        _tally.refuse(str(e))
        return
    assert events and all(isinstance(ev, Event) for ev in events)
    for ev in events:
        assert msgspec.json.decode(msgspec.json.encode(ev), type=Event).event_type == ev.event_type
    if verdict.ack:
        assert json.loads(jl.ack(msg.seq))["ack"] == msg.seq
    _tally.accept()


def test_deep_nesting_is_a_protocol_error_not_a_recursion_error():
    """The schema has no free-form field, so the decoder refuses a deep value at its first wrong type, before it
    recurses; a RecursionError anyway (a deeper stack) reads "nested too deep". Never the RecursionError itself."""
    for depth in (5_000, 60_000):
        deep_array, deep_object = b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth
        for line, reason in ((deep_array, "Expected `object`, got `array`"),
                             (b'{"type":"hello","model":' + deep_array + b"}", "at `$.model`"),
                             (b'{"type":"selftest","result":"pass","steps":[{"name":"a","value":' + deep_object
                              + b"}]}", "at `$.steps[0].value`"),
                             (b'{"type":"counters","x":' + deep_object + b"}", "invalid message")):
            with pytest.raises(jl.ProtocolError) as err:
                jl.parse(line)
            assert reason in str(err.value)


def teardown_module():
    """The tallies, once every test of the file ran (printed with -s; appended to $FIXTURE_AGENT_FUZZ_REPORT)."""
    for t in (_tally,):
        print(t.report())
