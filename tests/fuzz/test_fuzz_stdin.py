"""Fuzzing ``publish --stdin`` lines (``agent.cli._parse_line``): any bytes are an event that can be journaled or
a ValueError that names the line — the documented bad input, dead-lettered with its raw bytes by ``publish``."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.cli import _parse_line
from agent.events.model import Event, EventType

from .strategies import Tally, deeply_nested, fuzz_settings, json_objects, json_values, mutated, to_json

pytestmark = pytest.mark.fuzz
WHERE = "stdin line 7"

_RESULT = {"unit_id": "SN1", "result": "pass", "start_time": "2026-01-01T00:00:00Z"}
_lines = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from([t.value for t in EventType]), st.text(max_size=20))},
    optional={"payload": st.one_of(json_objects, st.just(_RESULT),
                                   st.builds(lambda extra: {**_RESULT, **extra}, json_objects), json_values),
              "source": st.one_of(st.none(), st.text(max_size=20), json_values),
              "occurred_at": st.one_of(st.none(), st.datetimes().map(lambda d: d.isoformat()),
                                       st.sampled_from(["2026-03-01T10:00:00+02:00", "2026-03-01", "yesterday",
                                                        "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z"]),
                                       json_values),
              "correlation_id": st.one_of(st.none(), st.text(max_size=20), json_values)}).map(to_json)

_tally = Tally("publish --stdin line")


@fuzz_settings()
@given(st.one_of(
    st.binary(max_size=200),
    json_values.map(to_json),
    _lines,
    _lines,
    mutated(_lines),
    st.builds(lambda line, extra: line[:-1] + b',"extra":' + to_json(extra) + b"}", _lines, json_values),
    deeply_nested(),
    deeply_nested().map(lambda inner: b'{"type":"custom","payload":{"a":' + inner + b"}}"),
))
def test_any_line_is_an_event_or_an_error_naming_the_line(line):
    try:
        event = _parse_line(line, WHERE, "cli")
    except ValueError as e:
        assert type(e) is ValueError and str(e).startswith(f"{WHERE}: "), repr(e)
        assert "\n" not in str(e)
        _tally.refuse(str(e)[len(WHERE) + 2:])
        return
    assert isinstance(event, Event)
    body = msgspec.json.encode(event)  # what the journal stores must encode and read back
    assert msgspec.json.decode(body, type=Event).metadata.event_id == event.metadata.event_id
    _tally.accept()


def test_deep_nesting_is_nested_too_deep_not_a_recursion_error():
    for depth in (65, 5_000, 60_000):
        line = b'{"type":"custom","payload":{"a":' + b"[" * depth + b"]" * depth + b"}}"
        with pytest.raises(ValueError, match=r"^stdin line 7: not valid JSON: nested too deep"):
            _parse_line(line, WHERE, "cli")


def teardown_module():
    """The tallies, once every test of the file ran (printed with -s; appended to $FIXTURE_AGENT_FUZZ_REPORT)."""
    for t in (_tally,):
        print(t.report())
