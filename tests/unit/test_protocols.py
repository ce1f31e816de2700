import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events.model import decode, encode
from agent.events.payloads import TestResult
from agent.protocols import jsonlines as jl
from agent.protocols import scpi
from agent.protocols.lines import LineFramer
from agent.protocols.results import judged, read_result


def test_framer_splits_joins_and_limits():
    f = LineFramer(max_line=32)
    assert f.feed(b"ab") == []
    assert [l.data for l in f.feed(b"c\r\nde\n\nf")] == [b"abc", b"de"]
    assert f.pending == 1
    out = f.feed(b"x" * 100 + b"\nok\n")
    assert [(l.data[:3], l.oversized) for l in out] == [(b"fxx", True), (b"ok", False)]
    assert len(out[0].data) == 32
    # an oversized line spread over many reads is reported once, and what follows it survives
    f2 = LineFramer(max_line=16)
    res = []
    for _ in range(10):
        res += f2.feed(b"y" * 10)
    res += f2.feed(b"tail\nnext\n")
    assert [(l.oversized, l.data) for l in res] == [(True, b"y" * 16), (False, b"next")]


VALID = [
    {"type": "counters", "seq": 1, "session": "s1", "running_count": 5, "total_count": 10},
    {"type": "selftest", "seq": 2, "session": "s1", "result": "Passed",
     "steps": [{"name": "VCC", "value": 3.31, "unit": "V", "low": 3.2, "high": 3.4},
               {"name": "LED", "status": "P"}]},
    {"type": "state", "seq": 3, "session": "s1", "state": "busy", "reason": "lid closed"},
    {"type": "fault", "seq": 4, "session": "s1", "code": "E42", "message": "vacuum low", "severity": "critical"},
    {"type": "hello", "seq": 5, "session": "s1", "model": "FX-CTRL", "firmware": "1.2.0"},
]


@pytest.mark.parametrize("doc", VALID, ids=[d["type"] for d in VALID])
def test_each_message_type_becomes_a_valid_event(doc):
    msg = jl.parse(json.dumps(doc).encode())
    [ev] = jl.to_events(msg, asset_id="FX-1", source="serial:ctl")
    assert decode(encode(ev)) == ev
    assert ev.payload.get("asset_id", ev.payload.get("fixture_id")) == "FX-1"
    assert ev.payload["custom_data"]["serial_seq"] == doc["seq"]


def test_selftest_verdict_is_the_agents():
    doc = dict(VALID[1], result="pass", steps=[{"name": "VCC", "value": 3.6, "unit": "V", "low": 3.2, "high": 3.4}])
    [ev] = jl.to_events(jl.parse(json.dumps(doc).encode()), asset_id="FX-1", source="s")
    assert ev.payload["result"] == "fail"  # the device said pass; its own measurement says otherwise
    assert ev.payload["steps"][0]["measurements"][0]["status"] == "fail"


@pytest.mark.parametrize("line,reason,seq", [
    (b"\xff\xfe{}", "not UTF-8", None),
    (b"{not json", "not JSON", None),
    (b'{"type":"counters","seq":7,"session":"s","running_count":"many","total_count":1}', "$.running_count", 7),
    (b'{"type":"teleport","seq":8}', "Invalid value 'teleport'", 8),
    (b'{"type":"state","seq":9,"state":"sleepy"}', "$.state", 9),
    (b'[1,2]', "Expected `object`", None),
])
def test_bad_lines_name_the_problem(line, reason, seq):
    with pytest.raises(jl.ProtocolError) as err:
        jl.parse(line)
    assert reason in str(err.value)
    assert err.value.seq == seq


def test_counters_must_be_consistent():
    msg = jl.parse(b'{"type":"counters","seq":1,"session":"s","running_count":9,"total_count":3}')
    with pytest.raises(jl.ProtocolError, match="running_count must not exceed"):
        jl.to_events(msg, asset_id="A", source="s")


def test_go_back_n():
    v = jl.sequence_verdict
    assert v(1, "a", None) == jl.Verdict(True, True)
    assert v(3, "a", None) == jl.Verdict(False, False)  # a new session starts at 1: 1 and 2 will be resent
    assert v(5, "a", {"session": "a", "seq": 4}) == jl.Verdict(True, True)
    assert v(4, "a", {"session": "a", "seq": 4}) == jl.Verdict(False, True)  # resend: ack again
    assert v(7, "a", {"session": "a", "seq": 4}) == jl.Verdict(False, False)  # gap: wait
    assert v(1, "b", {"session": "a", "seq": 4}) == jl.Verdict(True, True)  # controller rebooted
    # the controller says its buffer starts at 7: accept from there, and report the gap
    assert v(7, "a", {"session": "a", "seq": 4}, oldest=7) == jl.Verdict(True, True, gap=2)
    assert v(9, "c", None, oldest=9) == jl.Verdict(True, True, gap=8)
    assert v(8, "a", {"session": "a", "seq": 4}, oldest=7) == jl.Verdict(False, False)
    assert v(None, None, None) == jl.Verdict(True, False)
    assert jl.ack(3) == b'{"ack":3}\n' and json.loads(jl.ack(4, "bad"))["error"] == "bad"


def test_result_words_and_judging():
    assert read_result("Passed") is TestResult.PASS and read_result("F") is TestResult.FAIL
    with pytest.raises(ValueError, match="'meh' is not a result"):
        read_result("meh")
    assert judged("v", 3.5, "V", 3.2, 3.4).status is TestResult.FAIL
    assert judged("v", 3.3, "V", 3.2, 3.4).comp_op == "GELE"
    assert judged("v", None, "V", 3.2).status is TestResult.ERROR
    assert judged("ok", True).status is TestResult.PASS


def test_scpi_parsing():
    idn = scpi.parse_idn(b"Keysight Technologies,34465A,MY12345678,A.02.14\n")
    assert idn.model == "34465A" and str(idn).startswith("Keysight")
    assert scpi.parse_idn("ACME,PSU").firmware == ""
    assert scpi.parse_int("+0") == 0 and scpi.parse_int("1\r\n") == 1
    assert scpi.parse_error('-113,"Undefined header"') == (-113, "Undefined header")
    assert scpi.parse_error('+0,"No error"') == (0, "No error")
    assert scpi.parse_number("+3.30120000E+00") == pytest.approx(3.3012)
    assert scpi.parse_number("9.91E37") is None
    for bad, fn in (("abc", scpi.parse_number), ("x,y", scpi.parse_error), ("1.5", scpi.parse_int),
                    (b"\xff", scpi.parse_idn)):
        with pytest.raises(scpi.ScpiError):
            fn(bad)


# --------------------------------------------------------------------------------------------- fuzzing
good_line = st.sampled_from([json.dumps(d).encode() for d in VALID])
noise = st.binary(max_size=300)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(good_line.map(lambda b: ("good", b)), noise.map(lambda b: ("noise", b))), max_size=30),
       st.integers(min_value=1, max_value=64))
def test_fuzz_no_exception_escapes_and_no_valid_line_is_lost(parts, chunk):
    """Random noise between valid lines: every valid line that arrives whole is parsed; nothing else escapes."""
    stream = b""
    expected = []
    for kind, data in parts:
        if kind == "good":
            stream += b"\n" + data + b"\n"
            expected.append(data)
        else:
            stream += data.replace(b"\n", b" ")  # noise within a line (a line ends where a newline is)
    framer = LineFramer(max_line=4096)
    lines = []
    for i in range(0, len(stream), chunk):
        lines += framer.feed(stream[i:i + chunk])
    got = []
    for line in lines:
        try:
            msg = jl.parse(line.data)
            got.append(line.data)
            jl.to_events(msg, asset_id="A", source="s")
        except jl.ProtocolError:
            pass
    assert [g for g in got if g in expected] == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parsers_raise_only_their_own_errors(data):
    for fn in (scpi.parse_idn, scpi.parse_int, scpi.parse_error, scpi.parse_number):
        try:
            fn(data)
        except scpi.ScpiError:
            pass
    try:
        msg = jl.parse(data)
        jl.to_events(msg, asset_id="A", source="s", received=datetime.now(timezone.utc))
    except jl.ProtocolError:
        pass
