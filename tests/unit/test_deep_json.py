"""Deeply nested JSON from a device is bad input with a plain reason, never a RecursionError (issues 16.6, 23.11).

60 KB of nested arrays made msgspec raise RecursionError: the MQTT source logged an ERROR with a traceback and
kept the message as "internal error: RecursionError"; the JSON-lines parser raised it out of the serial loop.
"""

import logging

import pytest

from agent.protocols import jsondepth
from agent.protocols import jsonlines as jl
from tests.unit.test_mqtt_source import batch, msg, source

DEEP = b"[" * 30000 + b"]" * 30000  # 60 KB, under the default max_payload_bytes


def nested(depth: int) -> bytes:
    return b'{"running_count": 1, "total_count": 2, "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [30000, 900, jsondepth.MAX_DEPTH])
def test_deep_nesting_is_refused_below_the_decoders_limit_too(depth):
    with pytest.raises(jsondepth.NestedTooDeep, match="not valid JSON: nested too deep"):
        jsondepth.decode(nested(depth))


def test_ordinary_documents_decode_and_the_bound_is_exact():
    ok = jsondepth.MAX_DEPTH - 1  # the object itself is one level
    assert jsondepth.decode(nested(ok))["total_count"] == 2
    assert jsondepth.decode(b'{"m": [{"v": [1, 2]}, {"v": [3]}]}') == {"m": [{"v": [1, 2]}, {"v": [3]}]}
    many = b"[" + b",".join([b"[]"] * 5000) + b"]"  # many brackets, shallow: walked, accepted
    assert len(jsondepth.decode(many)) == 5000


@pytest.mark.parametrize("payload", [DEEP, nested(30000), nested(900)])
def test_mqtt_deep_nesting_is_a_dead_letter_without_a_traceback(journal, caplog, payload):
    src, _ = source(journal)
    caplog.set_level(logging.WARNING)
    src.ingest(batch(msg("assets/FX-1/counters", payload),
                     msg("assets/FX-1/counters", b'{"running_count": 1, "total_count": 2}', mid=2)))
    [dl] = journal.dead_letters()
    assert dl.reason.startswith("not valid JSON: nested too deep") and dl.body == payload
    assert "internal error" not in dl.reason
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert len(journal.read_after(0, 10)) == 1  # the good message behind it is journaled
    assert src.counts["bad"] == 1


@pytest.mark.parametrize("line", [
    DEEP,
    b'{"type": "counters", "seq": 1, "x": ' + b"[" * 30000 + b"]" * 30000 + b"}",
    b'{"type": "counters", "seq": 1, "running_count": ' + b"[" * 30000 + b"]" * 30000 + b"}",
    b'{"seq": "one", "x": ' + b"{\"a\":" * 20000 + b"1" + b"}" * 20000 + b"}",
])
def test_a_deep_json_line_is_a_protocol_error_not_a_recursion_error(line):
    with pytest.raises(jl.ProtocolError) as err:
        jl.parse(line)
    assert "RecursionError" not in str(err.value)
