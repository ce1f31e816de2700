"""The WSJF contract of ``reference/wats-api.md`` §2 as tables, a validator and a status oracle.

Written from the contract text alone, never from the agent's code, so that it is an independent check of what the
agent sends: the WATS stand-in refuses what ``check_report`` finds (400, as WATS would) and records what
``audit_report`` finds (WATS accepts a wrong status: it does not re-judge limits, §2.2), and the conformance corpus
can import the oracle (``judge_numeric``, ``judge_string``) to say what each status must be.

Every problem is one string ``<JSON path>: <what is wrong>``, the path as ``root.steps[2].numericMeas[0].value``.
Text lengths are counted in code points (what the WATS client library's pydantic model counts).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, NamedTuple

# ------------------------------------------------------------------------------------------------ key tables (§2.3)
TOP_KEYS = frozenset({"type", "id", "pn", "sn", "rev", "processCode", "processName", "processCodeFormat", "result",
                      "machineName", "location", "purpose", "start", "startUTC", "uut", "uur", "root", "miscInfos",
                      "subUnits", "assets", "binaryData", "additionalData"})
TOP_REQUIRED_T = ("type", "id", "pn", "sn", "rev", "processCode", "result", "machineName", "location", "purpose",
                  "start", "startUTC", "uut", "root")
REPORT_RESULTS = ("P", "F", "E", "T")
PART_TEXT = ("pn", "sn", "rev")  # pyWATS refuses FORBIDDEN_CHARS in these
HEADER_TEXT = ("pn", "sn", "rev", "machineName", "location", "purpose")  # each 1..100
FORBIDDEN_CHARS = frozenset("*%?[]^!/\\")
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# (kind, max length or None): "str", "int", "num", "bool", "intstr" (int or string), "obj", "list"
UUT_KEYS: dict[str, tuple[str, int | None]] = {
    "user": ("str", 100), "comment": ("str", 5000), "execTime": ("num", None), "fixtureId": ("str", 100),
    "testSocketIndex": ("int", None), "errorCode": ("intstr", None), "errorMessage": ("str", None),
    "batchSN": ("str", 100), "batchFailCount": ("int", None), "batchLoopIndex": ("int", None),
    "stepIdCausedUUTFailure": ("int", None)}
MISC_KEYS = frozenset({"description", "text", "numeric", "numericFormat", "typedef"})
SUBUNIT_KEYS = frozenset({"partType", "pn", "sn", "rev", "idx", "parentIdx", "position"})
ASSET_KEYS: dict[str, tuple[str, int | None]] = {
    "sn": ("str", None), "assetType": ("str", None), "partNumber": ("str", None), "usageCount": ("int", None),
    "calibrationDate": ("str", None), "calibrationDue": ("str", None)}

# ------------------------------------------------------------------------------------------------ steps (§2.4)
STEP_STATUSES = ("P", "F", "S", "D", "E", "T")
STEP_GROUPS = ("S", "M", "C")
STEP_COMMON: dict[str, tuple[str, int | None]] = {
    "stepType": ("str", None), "name": ("str", 100), "group": ("str", None), "status": ("str", None),
    "id": ("int", None), "errorCode": ("intstr", None), "errorCodeFormat": ("str", None),
    "errorMessage": ("str", None), "reportText": ("str", 5000), "start": ("str", None), "totTime": ("num", None),
    "tsGuid": ("str", None), "causedSeqFailure": ("bool", None), "causedUUTFailure": ("bool", None),
    "loop": ("obj", None), "additionalResults": ("list", None), "chart": ("obj", None), "attachment": ("obj", None)}
LOOP_KEYS = frozenset({"idx", "num", "endingIndex", "passed", "failed"})
PAYLOAD_KEYS = frozenset({"seqCall", "steps", "numericMeas", "booleanMeas", "stringMeas", "messagePopup", "callExe"})
MEAS_ARRAYS = ("numericMeas", "booleanMeas", "stringMeas")


class StepKind(NamedTuple):
    """What a stepType carries: its measurement array (if any), whether that array has exactly one element
    (single) or one or more uniquely named ones (multi), and any other payload keys it takes."""

    meas: str | None = None
    multi: bool = False
    container: bool = False
    extra: frozenset[str] = frozenset()


_SEQ = StepKind(container=True)
STEP_KINDS: dict[str, StepKind] = {
    "SequenceCall": _SEQ, "WATS_SeqCall": _SEQ,
    "ET_NLT": StepKind("numericMeas"), "NumericLimitTest": StepKind("numericMeas"),
    "ET_MNLT": StepKind("numericMeas", True), "MultiNumericLimitTest": StepKind("numericMeas", True),
    "ET_PFT": StepKind("booleanMeas"), "PassFailTest": StepKind("booleanMeas"),
    "ET_MPFT": StepKind("booleanMeas", True),
    "ET_SVT": StepKind("stringMeas"), "StringValueTest": StepKind("stringMeas"),
    "ET_MSVT": StepKind("stringMeas", True), "MultiStringTest": StepKind("stringMeas", True),
    "WATS_XYGMNLT": StepKind("numericMeas", True),
    "Action": StepKind(), "ET_A": StepKind(), "Label": StepKind(), "Statement": StepKind(),
    "MessagePopup": StepKind(extra=frozenset({"messagePopup"})),
    "CallExecutable": StepKind(extra=frozenset({"callExe"})),
}


def step_kind(step_type: str) -> StepKind | None:
    """The table's row for a stepType; ``NI_*`` is a family of measurement-less steps."""
    if step_type in STEP_KINDS:
        return STEP_KINDS[step_type]
    return StepKind() if step_type.startswith("NI_") else None


NUMERIC_MEAS_KEYS = frozenset({"status", "value", "unit", "compOp", "lowLimit", "highLimit", "name", "valueFormat",
                               "lowLimitFormat", "highLimitFormat"})
BOOLEAN_MEAS_KEYS = frozenset({"status", "name", "value"})
STRING_MEAS_KEYS = frozenset({"status", "value", "compOp", "limit", "name"})
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}  # pydantic ser_json_inf_nan='strings'

# ------------------------------------------------------------------------------------------------ the oracle (§2.4)
NO_LIMIT_OPS = frozenset({"LOG"})
SINGLE_LIMIT_OPS = frozenset({"EQ", "EQT", "NE", "LT", "LE", "GT", "GE"})
RANGE_OPS = frozenset({"GTLT", "GTLE", "GELT", "GELE", "LTGT", "LTGE", "LEGT", "LEGE"})
NUMERIC_OPS_ALL = NO_LIMIT_OPS | SINGLE_LIMIT_OPS | RANGE_OPS

# compOp -> passes(value, lowLimit, highLimit), for a finite value; the table of §2.4 line by line. EQT is
# "not judged by the client library" and so has no row: judge_numeric returns None for it.
NUMERIC_ORACLE: dict[str, Callable[[float, float | None, float | None], bool]] = {
    "LOG": lambda v, lo, hi: True,
    "EQ": lambda v, lo, hi: v == lo,
    "NE": lambda v, lo, hi: v != lo,
    "GT": lambda v, lo, hi: v > lo,
    "LT": lambda v, lo, hi: v < lo,
    "GE": lambda v, lo, hi: v >= lo,
    "LE": lambda v, lo, hi: v <= lo,
    "GTLT": lambda v, lo, hi: lo < v < hi,
    "GELE": lambda v, lo, hi: lo <= v <= hi,
    "GELT": lambda v, lo, hi: lo <= v < hi,
    "GTLE": lambda v, lo, hi: lo < v <= hi,
    "LTGT": lambda v, lo, hi: v < lo or v > hi,
    "LEGE": lambda v, lo, hi: v <= lo or v >= hi,
    "LEGT": lambda v, lo, hi: v <= lo or v > hi,
    "LTGE": lambda v, lo, hi: v < lo or v >= hi,
}

# compOp -> passes(value, limit) for stringMeas; LOG is "not judged" (no row: judge_string returns None)
STRING_ORACLE: dict[str, Callable[[str, str], bool]] = {
    "CASESENSIT": lambda v, lim: v == lim,
    "EQ": lambda v, lim: v == lim,
    "IGNORECASE": lambda v, lim: v.lower() == lim.lower(),  # as the WATS client library compares
    "NE": lambda v, lim: v != lim,
}
STRING_OPS_ALL = frozenset(STRING_ORACLE) | {"LOG"}


def judge_numeric(op: str, value: float, low: float | None, high: float | None) -> bool | None:
    """True if the value passes under ``op``, False if it fails, None if the operator is not judged (EQT).

    A value that is not a finite number never passes, except under LOG (§2.4)."""
    if op == "LOG":
        return True
    if op not in NUMERIC_ORACLE:
        return None
    if not math.isfinite(value):
        return False
    return NUMERIC_ORACLE[op](value, low, high)


def judge_string(op: str, value: str, limit: str | None) -> bool | None:
    """True/False for a judged string operator, None for LOG (not judged)."""
    if op not in STRING_ORACLE or limit is None:
        return None
    return STRING_ORACLE[op](value, limit)


def numeric_value(raw: Any) -> float | None:
    """A numericMeas ``value`` as a float: a JSON number, or one of the strings pydantic writes for non-finite
    floats. None if it is neither."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        value = float(raw)
        return value if math.isfinite(value) else None  # 1e400 is no JSON number WATS can store
    if isinstance(raw, str) and raw in NON_FINITE:
        return NON_FINITE[raw]
    return None


# ------------------------------------------------------------------------------------------------ validation
def _kind_ok(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "num":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "intstr":
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    if kind == "obj":
        return isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list)
    raise ValueError(kind)


_KIND_NAME = {"str": "a string", "int": "an integer", "num": "a finite number", "bool": "true or false",
              "intstr": "an integer or a string", "obj": "an object", "list": "an array"}


def _unknown_keys(obj: dict, allowed: frozenset[str] | set[str], where: str) -> Iterator[str]:
    for key in [k for k in obj if k not in allowed]:
        lower = {k.lower(): k for k in allowed}
        hint = (f" (keys are case-sensitive: {lower[key.lower()]!r})" if key.lower() in lower else "")
        yield f"{_join(where, key)}: unknown key{hint}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _typed_fields(obj: dict, table: dict[str, tuple[str, int | None]], where: str) -> Iterator[str]:
    """Optional fields of a table: absent or null, or of their kind and within their length."""
    for key, (kind, limit) in table.items():
        value = obj.get(key)
        if value is None:
            continue
        path = _join(where, key)
        if not _kind_ok(value, kind):
            yield f"{path}: must be {_KIND_NAME[kind]}, got {_show(value)}"
        elif limit is not None and len(value) > limit:
            yield f"{path}: {len(value)} characters, at most {limit} allowed"


def _text(obj: dict, key: str, where: str, low: int, high: int, parts: bool = False) -> Iterator[str]:
    """A required text field of ``low``..``high`` characters (and, for a part's pn/sn/rev, none of the characters
    the WATS client refuses)."""
    path = _join(where, key)
    value = obj.get(key)
    if value is None:
        yield f"{path}: required string missing"
    elif not isinstance(value, str):
        yield f"{path}: must be a string, got {_show(value)}"
    elif not low <= len(value) <= high:
        yield f"{path}: {len(value)} characters, must be {low}..{high}"
    elif parts and (bad := sorted(set(value) & FORBIDDEN_CHARS)):
        yield f"{path}: contains {''.join(bad)!r}, which the WATS client refuses (* % ? [ ] ^ ! / \\)"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _iso(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def check_report(r: Any, test_codes: dict[int, str] | None = None, max_depth: int = 64) -> list[str]:
    """Every way a WSJF report breaks §2.3-§2.4; empty if it conforms. ``test_codes`` maps the server's test
    operation codes to their names (processCode must be one; processName, if sent, must match it exactly).
    Time checks that depend on "now" (future dates) are the stand-in's, not this function's."""
    if not isinstance(r, dict):
        return ["(body): a report must be one JSON object"]
    out: list[str] = []
    out += _unknown_keys(r, TOP_KEYS, "")
    for key in TOP_REQUIRED_T:
        if r.get(key) is None:
            lower = {k.lower(): k for k in r}
            hint = (f" (found {lower[key.lower()]!r}: keys are case-sensitive)"
                    if key.lower() in lower and lower[key.lower()] != key else "")
            out.append(f"{key}: missing required field {key!r}{hint}")
    if "type" in r and r["type"] != "T":
        out.append(f"type: {_show(r['type'])}: this server takes UUT reports, type must be T")
    if r.get("uur") is not None:
        out.append("uur: only a UUR report (type R) carries uur")
    rid = r.get("id")
    if rid is not None and not (isinstance(rid, str) and GUID.fullmatch(rid)):
        out.append(f"id: {_show(rid)} is not a GUID")
    for key in HEADER_TEXT:
        if key in r and r[key] is not None:
            out += _text(r, key, "", 1, 100, parts=key in PART_TEXT)
    code = r.get("processCode")
    if code is not None:
        if not isinstance(code, int) or isinstance(code, bool):
            out.append(f"processCode: must be an integer, got {_show(code)}")
        elif test_codes is not None and code not in test_codes:
            out.append(f"processCode: processCode {code} is not a test operation")
        elif test_codes is not None and isinstance(r.get("processName"), str) and r["processName"] != test_codes[code]:
            out.append(f"processName: {r['processName']!r} does not match {test_codes[code]!r} "
                       f"(case-sensitive) for processCode {code}")
    for key in ("processName", "processCodeFormat"):
        if r.get(key) is not None and not isinstance(r[key], str):
            out.append(f"{key}: must be a string, got {_show(r[key])}")
    if "result" in r and r["result"] not in REPORT_RESULTS:
        out.append(f"result: {_show(r['result'])} is not one of P, F, E, T")
    out += _check_times(r)
    uut = r.get("uut")
    if uut is not None:
        if not isinstance(uut, dict):
            out.append(f"uut: must be an object, got {_show(uut)}")
        else:
            out += _unknown_keys(uut, frozenset(UUT_KEYS), "uut")
            out += _typed_fields(uut, UUT_KEYS, "uut")
    out += _check_list(r, "miscInfos", _check_misc)
    out += _check_list(r, "subUnits", _check_sub_unit)
    out += _check_list(r, "assets", _check_asset)
    for key in ("binaryData", "additionalData"):
        if r.get(key) is not None and not isinstance(r[key], (list, dict)):
            out.append(f"{key}: must be an array or an object, got {_show(r[key])}")
    root = r.get("root")
    if root is not None:
        if not isinstance(root, dict):
            out.append(f"root: must be a step object, got {_show(root)}")
        else:
            if root.get("stepType") not in ("SequenceCall", "WATS_SeqCall"):
                out.append(f"root.stepType: the root is a SequenceCall, got {_show(root.get('stepType'))}")
            out += _check_step(root, "root", 0, max_depth)
    return out


def _check_times(r: dict) -> Iterator[str]:
    start_raw, utc_raw = r.get("start"), r.get("startUTC")
    start = _iso(start_raw) if isinstance(start_raw, str) else None
    if start_raw is not None:
        if start is None:
            yield f"start: {_show(start_raw)} is not an ISO-8601 time"
        elif start.tzinfo is None:
            yield f"start: {start_raw!r} must carry a UTC offset (e.g. +01:00)"
    if utc_raw is not None:
        utc = _iso(utc_raw) if isinstance(utc_raw, str) else None
        if utc is None or not utc_raw.endswith("Z"):
            yield f"startUTC: {_show(utc_raw)} must be an ISO-8601 time in Z"
        elif start is not None and start.tzinfo is not None and abs((start - utc).total_seconds()) > 1:
            yield "startUTC: startUTC must be the same instant as start, in Z"


def _check_list(r: dict, key: str, check: Callable[[Any, str], Iterator[str]]) -> Iterator[str]:
    items = r.get(key)
    if items is None:
        return
    if not isinstance(items, list):
        yield f"{key}: must be an array, got {_show(items)}"
        return
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            yield f"{where}: must be an object, got {_show(item)}"
        else:
            yield from check(item, where)


def _check_misc(m: dict, where: str) -> Iterator[str]:
    yield from _unknown_keys(m, MISC_KEYS, where)
    yield from _text(m, "description", where, 1, 100)
    text, numeric = m.get("text"), m.get("numeric")
    if text is None and numeric is None:
        yield f"{where}: needs one of text or numeric"
    elif text is not None and numeric is not None:
        yield f"{where}: carries both text and numeric, exactly one is allowed"
    if text is not None:
        if not isinstance(text, str):
            yield f"{where}.text: must be a string, got {_show(text)}"
        elif len(text) > 100:
            yield f"{where}.text: {len(text)} characters, at most 100 allowed"
    if numeric is not None and not _kind_ok(numeric, "num"):
        yield f"{where}.numeric: must be a finite number, got {_show(numeric)}"
    for key in ("numericFormat", "typedef"):
        if m.get(key) is not None and not isinstance(m[key], str):
            yield f"{where}.{key}: must be a string, got {_show(m[key])}"


def _check_sub_unit(u: dict, where: str) -> Iterator[str]:
    yield from _unknown_keys(u, SUBUNIT_KEYS, where)
    yield from _text(u, "partType", where, 1, 50)
    for key in PART_TEXT:
        yield from _text(u, key, where, 1, 100, parts=True)
    yield from _typed_fields(u, {"idx": ("int", None), "parentIdx": ("int", None), "position": ("int", None)}, where)


def _check_asset(a: dict, where: str) -> Iterator[str]:
    yield from _unknown_keys(a, frozenset(ASSET_KEYS), where)
    yield from _text(a, "sn", where, 1, 100)
    yield from _typed_fields(a, ASSET_KEYS, where)


_STEP_KEYS = frozenset(STEP_COMMON) | PAYLOAD_KEYS  # payload keys are judged per stepType, with a clearer message
_STEP_OPTIONAL = {k: v for k, v in STEP_COMMON.items() if k not in ("stepType", "name", "status", "group")}


def _check_step(s: dict, where: str, depth: int, max_depth: int) -> Iterator[str]:
    if depth > max_depth:
        yield f"{where}: sequences nested deeper than {max_depth}"
        return
    step_type = s.get("stepType")
    kind = step_kind(step_type) if isinstance(step_type, str) else None
    if step_type is None:
        yield f"{where}.stepType: required string missing"
    elif kind is None:
        yield f"{where}.stepType: {_show(step_type)} is not a step type of §2.4"
    yield from _unknown_keys(s, _STEP_KEYS, where)
    yield from _text(s, "name", where, 1, 100)
    status = s.get("status")
    if status is None:
        yield f"{where}.status: required field missing"
    elif status not in STEP_STATUSES:
        yield f"{where}.status: {_show(status)} is not one of P, F, S, D, E, T"
    if s.get("group") is not None and s["group"] not in STEP_GROUPS:
        yield f"{where}.group: {_show(s['group'])} is not one of S, M, C"
    yield from _typed_fields(s, _STEP_OPTIONAL, where)
    if isinstance(s.get("start"), str) and _iso(s["start"]) is None:
        yield f"{where}.start: {_show(s['start'])} is not an ISO-8601 time"
    if isinstance(s.get("loop"), dict):
        yield from _unknown_keys(s["loop"], LOOP_KEYS, f"{where}.loop")
        yield from _typed_fields(s["loop"], {k: ("int", None) for k in LOOP_KEYS}, f"{where}.loop")
    if kind is None:
        return
    takes = set(kind.extra)
    if kind.container:
        takes |= {"seqCall", "steps"}
    if kind.meas:
        takes.add(kind.meas)
    for key in sorted(PAYLOAD_KEYS - takes):
        if key in s:
            yield f"{where}.{key}: a {step_type} step does not take {key}"
    if kind.container:
        yield from _check_seq_call(s, where, depth, max_depth)
    if kind.meas:
        yield from _check_meas_array(s, kind, where)
    for key in kind.extra:
        if s.get(key) is not None and not isinstance(s[key], dict):
            yield f"{where}.{key}: must be an object, got {_show(s[key])}"


def _check_seq_call(s: dict, where: str, depth: int, max_depth: int) -> Iterator[str]:
    seq = s.get("seqCall")
    if seq is None:
        yield f"{where}.seqCall: required object missing (path, name, version)"
    elif not isinstance(seq, dict):
        yield f"{where}.seqCall: must be an object, got {_show(seq)}"
    else:
        yield from _unknown_keys(seq, frozenset({"path", "name", "version"}), f"{where}.seqCall")
        for key in ("path", "name", "version"):
            if not isinstance(seq.get(key), str) or not seq[key]:
                yield f"{where}.seqCall.{key}: required string missing"
    steps = s.get("steps")
    if steps is None:
        yield f"{where}.steps: required array missing"
    elif not isinstance(steps, list):
        yield f"{where}.steps: must be an array, got {_show(steps)}"
    else:
        for i, child in enumerate(steps):
            path = f"{where}.steps[{i}]"
            if not isinstance(child, dict):
                yield f"{path}: must be a step object, got {_show(child)}"
            else:
                yield from _check_step(child, path, depth + 1, max_depth)


def _check_meas_array(s: dict, kind: StepKind, where: str) -> Iterator[str]:
    key = kind.meas
    assert key is not None
    meas = s.get(key)
    path = f"{where}.{key}"
    if meas is None:
        yield f"{path}: required array missing for a {s['stepType']} step"
        return
    if not isinstance(meas, list):
        yield f"{path}: must be an array, got {_show(meas)}"
        return
    if kind.multi and not meas:
        yield f"{path}: a {s['stepType']} step needs at least one measurement"
    if not kind.multi and len(meas) != 1:
        yield f"{path}: a {s['stepType']} step takes exactly 1 measurement, got {len(meas)}"
    names: set[str] = set()
    check = {"numericMeas": _check_numeric, "booleanMeas": _check_boolean, "stringMeas": _check_string}[key]
    for i, m in enumerate(meas):
        mpath = f"{path}[{i}]"
        if not isinstance(m, dict):
            yield f"{mpath}: must be an object, got {_show(m)}"
            continue
        name = m.get("name")
        if kind.multi:
            if not isinstance(name, str) or not name:
                yield f"{mpath}.name: required (a non-empty string) in a {s['stepType']} step"
            elif name in names:
                yield f"{mpath}.name: {name!r} is not unique in this step"
            else:
                names.add(name)
        elif name is not None and not isinstance(name, str):
            yield f"{mpath}.name: must be a string or null, got {_show(name)}"
        yield from check(m, mpath)


def _meas_status(m: dict, mpath: str) -> Iterator[str]:
    status = m.get("status")
    if status is None:
        yield f"{mpath}.status: required field missing"
    elif status not in STEP_STATUSES:
        yield f"{mpath}.status: {_show(status)} is not one of P, F, S, D, E, T"


def _check_numeric(m: dict, mpath: str) -> Iterator[str]:
    yield from _unknown_keys(m, NUMERIC_MEAS_KEYS, mpath)
    yield from _meas_status(m, mpath)
    raw = m.get("value")
    if raw is None:
        yield f"{mpath}.value: required number missing"
    elif numeric_value(raw) is None:
        yield f"{mpath}.value: must be a number (or \"NaN\", \"Infinity\", \"-Infinity\"), got {_show(raw)}"
    for key in ("unit", "valueFormat", "lowLimitFormat", "highLimitFormat"):
        if m.get(key) is not None and not isinstance(m[key], str):
            yield f"{mpath}.{key}: must be a string, got {_show(m[key])}"
    op = m.get("compOp")
    if op is None:
        yield f"{mpath}.compOp: required field missing"
        return
    if op not in NUMERIC_OPS_ALL:
        yield f"{mpath}.compOp: {_show(op)} is not a numeric compOp of §2.4"
        return
    low, high = m.get("lowLimit"), m.get("highLimit")
    for key, value in (("lowLimit", low), ("highLimit", high)):
        if value is not None and not _kind_ok(value, "num"):
            yield f"{mpath}.{key}: must be a finite number, got {_show(value)}"
    if op in NO_LIMIT_OPS and (low is not None or high is not None):
        yield f"{mpath}: compOp LOG takes no limits (lowLimit/highLimit must be absent or null)"
    elif op in SINGLE_LIMIT_OPS:
        if low is None:
            yield f"{mpath}.lowLimit: single-limit compOp {op} takes lowLimit only, and lowLimit is missing"
        if high is not None:
            yield f"{mpath}.highLimit: single-limit compOp {op} takes lowLimit only (highLimit absent or null)"
    elif op in RANGE_OPS:
        for key, value in (("lowLimit", low), ("highLimit", high)):
            if value is None:
                yield f"{mpath}.{key}: range compOp {op} needs both limits, {key} is missing"


def _check_boolean(m: dict, mpath: str) -> Iterator[str]:
    yield from _unknown_keys(m, BOOLEAN_MEAS_KEYS, mpath)
    yield from _meas_status(m, mpath)
    if m.get("value") is not None and not isinstance(m["value"], bool):
        yield f"{mpath}.value: must be true or false, got {_show(m['value'])}"


def _check_string(m: dict, mpath: str) -> Iterator[str]:
    yield from _unknown_keys(m, STRING_MEAS_KEYS, mpath)
    yield from _meas_status(m, mpath)
    if m.get("value") is None:
        yield f"{mpath}.value: required string missing"
    elif not isinstance(m["value"], str):
        yield f"{mpath}.value: must be a string, got {_show(m['value'])}"
    op = m.get("compOp")
    if op is None:
        yield f"{mpath}.compOp: required field missing"
    elif op not in STRING_OPS_ALL:
        yield f"{mpath}.compOp: {_show(op)} is not a string compOp (CASESENSIT, IGNORECASE, EQ, NE, LOG)"
    limit = m.get("limit")
    if limit is not None and not isinstance(limit, str):
        yield f"{mpath}.limit: must be a string, got {_show(limit)}"
    elif limit is None and op in STRING_ORACLE:
        yield f"{mpath}.limit: required string missing for compOp {op}"


# ------------------------------------------------------------------------------------------------ the audit
class Finding(NamedTuple):
    """A status that disagrees with the contract's judging: WATS accepts it, the yield report is wrong."""

    report_id: str
    path: str
    expected: str
    sent: str


PASSED = ("P", "D")  # "Done" is a pass that was not judged; it is no more right than P for a failed value
NOT_PASSED = ("F", "E", "T")


def audit_report(r: dict) -> list[Finding]:
    """Each status of an accepted report checked against the oracle and the rules of §2.5: a measurement's status
    against its value, limits and operator; a step with a failed measurement is F; a sequence whose child did not
    pass is not P; the report's result is not P when a step did not pass. Only statuses P, D and F of a
    measurement are audited (S, E, T say it was not judged)."""
    rid = str(r.get("id"))
    out: list[Finding] = []
    root = r.get("root")
    if not isinstance(root, dict):
        return out
    bad_steps = _audit_step(root, "root", rid, out)
    if r.get("result") in PASSED and bad_steps:
        out.append(Finding(rid, "result", f"not P ({bad_steps[0]} did not pass)", str(r.get("result"))))
    return out


def _audit_step(s: dict, where: str, rid: str, out: list[Finding]) -> list[str]:
    """Audit one step and its children; returns the paths of the steps (this one included) that did not pass."""
    status = s.get("status")
    bad: list[str] = []
    children = s.get("steps") if isinstance(s.get("steps"), list) else []
    bad_children: list[str] = []
    for i, child in enumerate(children):
        if isinstance(child, dict):
            path = f"{where}.steps[{i}]"
            bad += _audit_step(child, path, rid, out)
            if child.get("status") in NOT_PASSED:
                bad_children.append(path)
    if bad_children and status in PASSED:
        out.append(Finding(rid, f"{where}.status", f"not P ({bad_children[0]} did not pass)", str(status)))
    meas_statuses: list[str] = []
    for key in MEAS_ARRAYS:
        meas = s.get(key)
        if not isinstance(meas, list):
            continue
        for i, m in enumerate(meas):
            if isinstance(m, dict):
                meas_statuses.append(str(m.get("status")))
                finding = _audit_meas(key, m, f"{where}.{key}[{i}]", rid)
                if finding:
                    out.append(finding)
    if "F" in meas_statuses:
        allowed = {"F"} | ({"E", "T"} & set(meas_statuses))
        if status not in allowed:
            out.append(Finding(rid, f"{where}.status", "F (a measurement failed)", str(status)))
    if status in NOT_PASSED:
        bad.insert(0, where)
    return bad


def _audit_meas(key: str, m: dict, mpath: str, rid: str) -> Finding | None:
    sent = m.get("status")
    if sent not in ("P", "D", "F"):
        return None
    if key == "numericMeas":
        value = numeric_value(m.get("value"))
        op = m.get("compOp")
        if value is None or not isinstance(op, str):
            return None
        low, high = m.get("lowLimit"), m.get("highLimit")
        if (op in SINGLE_LIMIT_OPS and numeric_value(low) is None) or (
                op in RANGE_OPS and (numeric_value(low) is None or numeric_value(high) is None)):
            return None  # refused by check_report; nothing to judge against
        verdict = judge_numeric(op, value, low, high)
        what = f"{op} {_limits(op, low, high)} value {m.get('value')!r}"
    elif key == "stringMeas":
        value, op = m.get("value"), m.get("compOp")
        if not isinstance(value, str) or not isinstance(op, str):
            return None
        verdict = judge_string(op, value, m.get("limit") if isinstance(m.get("limit"), str) else None)
        what = f"{op} {m.get('limit')!r} value {value!r}"
    else:  # booleanMeas: the status is the verdict; a `value` sent beside it is the outcome (True = pass)
        value = m.get("value")
        if not isinstance(value, bool):
            return None
        verdict, what = value, f"value {value}"
    if verdict is None:
        return None
    if verdict and sent == "F":
        return Finding(rid, f"{mpath}.status", f"P ({what})", sent)
    if not verdict and sent in PASSED:
        return Finding(rid, f"{mpath}.status", f"F ({what})", sent)
    return None


def _limits(op: str, low: Any, high: Any) -> str:
    if op in RANGE_OPS:
        return f"{low}..{high}"
    return "" if op in NO_LIMIT_OPS else f"{low}"
