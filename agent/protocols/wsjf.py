"""``test.result`` / ``inspection.result`` → a WATS WSJF UUT report (``POST /api/Report/WSJF``).

Pure mapping, no I/O: the WATS uplink (a sink) sends what this builds. Rules from ``reference/wats-api.md`` §2:

* The report ``id`` is the event id: a resend overwrites the same report instead of duplicating it.
* ``start`` carries the local offset (the server treats it as authoritative) and ``startUTC`` is sent too.
* The server does not check limits, so the agent decides every status, with the one table of operators in
  ``events/limits.py``: the limits written beside a value are the ones it was judged against, under the operator
  written beside them. A failed measurement fails its step, a failed step its parents and the report
  (``result``); the first failing step is marked ``causedUUTFailure``.
* Each step gets the step type its measurements need: numbers ``ET_NLT``/``ET_MNLT`` (a reading that is not
  finite is written ``"NaN"``/``"Infinity"``, as the WATS client library writes it, and never passes), booleans and
  steps that carry only a verdict ``ET_PFT``/``ET_MPFT``, texts ``ET_SVT``/``ET_MSVT``, a mix a sequence of one
  step per measurement, a step with nothing to report an ``Action``.
* Texts keep to §2.3–§2.4's lengths. Identifiers (part and serial numbers, revision, operator, fixture, batch) are
  never shortened, since a shortened serial is another unit: too long, or with a character WATS refuses, the report
  cannot be built (or, with ``identifier_chars = "replace"``, the character is replaced). Descriptions (step and
  measurement names, misc info texts) are shortened with "…" and the full text kept where there is room
  (``reportText``).
* The part number: the result's own, or a ``[[sinks.wats.products]]`` rule matching its recipe (CFX
  ``RecipeName``) or part number, or the recipe itself when ``recipe_as_part_number``, or the default. See
  ``docs/wats-uplink.md``.
* A report that cannot be built raises ``MappingError`` naming the field: permanent, so the uplink dead-letters it
  instead of retrying for ever. ``NoPartNumber`` is the one a new config rule can cure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from fnmatch import fnmatchcase
from typing import Any, Literal

from ..events import limits
from ..events.model import Event, EventType
from ..events.payloads import (
    InspectionResultEvent, TestMeasurement, TestResult, TestResultEvent, TestStep, _text_of,
)

RESULT_CODE = {TestResult.PASS: "P", TestResult.FAIL: "F", TestResult.ERROR: "E", TestResult.ABORTED: "T",
               TestResult.SKIPPED: "S"}
#: A report's result is one of P, F, E, T; a test that was skipped as a whole was not completed.
REPORT_RESULT = {**RESULT_CODE, TestResult.SKIPPED: "T"}
#: characters the WATS client library refuses in part numbers, serial numbers and revisions (§2.3)
FORBIDDEN_CHARS = frozenset("*%?[]^!/\\")
NAME_MAX = 100  # pn, sn, rev, machineName, location, purpose, step and measurement names, misc info texts
PART_TYPE_MAX = 50
LONG_TEXT_MAX = 5000  # reportText, uut.comment
MISC_INFOS_MAX = 50
#: a defect verified as a false call, or accepted as it is, does not fail its inspection (CFX VerificationResult)
NOT_A_DEFECT = frozenset({"DefectRejected", "DefectAccepted"})
#: custom_data keys the agent itself writes (origin and bookkeeping, not the tester's data)
INTERNAL_KEYS = frozenset({"test_type", "cfx", "mqtt_topic", "serial_seq", "serial_session", "steps", "recipe",
                           "recipe_revision"})


class MappingError(ValueError):
    """The event cannot become a valid WSJF report; the message names the field."""


class NoPartNumber(MappingError):
    """Nothing gives this result a part number; a ``[[sinks.wats.products]]`` rule (or a default) would."""

    def __init__(self, recipe: str | None, test_type: str, matched: str | None = None) -> None:
        self.recipe = recipe
        if matched is not None:
            text = (f"no part number: recipe {recipe!r} matches the [[sinks.wats.products]] rule {matched!r}, "
                    "which gives no part_number")
        elif recipe:
            text = (f"no part number: recipe {recipe!r} matches no [[sinks.wats.products]] rule (and "
                    "recipe_as_part_number is off; default_part_number is only for results that name no recipe)")
        else:
            text = "no part number: the result names none, and sinks.wats.default_part_number is not set"
        super().__init__(text)


@dataclass(frozen=True)
class ProductRule:
    """``[[sinks.wats.products]]``: results whose recipe (or, failing that, part number) matches ``match`` (a
    glob, case-sensitive) are filed under this part number, revision and process code."""

    match: str
    part_number: str | None = None
    revision: str | None = None
    process_code: int | None = None


@dataclass(frozen=True)
class Station:
    """Who is reporting: WSJF's machineName, location, purpose, and how results map to part numbers and process
    codes."""

    machine_name: str
    location: str
    purpose: str
    process_codes: dict[str, int] = field(default_factory=dict)  # test type ("test", "selftest" …) → code
    default_process_code: int | None = None
    default_part_number: str | None = None
    default_revision: str = "1"
    operator: str = "fixture-agent"
    agent_version: str = ""
    timezone: tzinfo | None = None  # for ``start``; the Pi's local zone when None
    products: tuple[ProductRule, ...] = ()
    recipe_as_part_number: bool = False
    identifier_chars: Literal["refuse", "replace"] = "refuse"
    identifier_replacement: str = "_"

    def process_code(self, test_type: str) -> int:
        code = self.process_codes.get(test_type, self.default_process_code)
        if code is None:
            raise MappingError(f"no process code for test type {test_type!r} (set sinks.wats.process_codes)")
        return code


@dataclass(frozen=True)
class Product:
    part_number: str
    revision: str
    process_code: int
    rule: ProductRule | None


def test_type_of(event: Event) -> str:
    custom = event.payload.get("custom_data") or {}
    if isinstance(custom.get("test_type"), str):
        return custom["test_type"]
    return "inspection" if event.event_type == EventType.INSPECTION_RESULT.value else "test"


def recipe_of(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """The recipe (test program) a result names, and its revision: ``custom_data.recipe`` (MQTT, serial, a
    script), or the CFX message's ``RecipeName``/``RecipeRevision``."""
    custom = payload.get("custom_data") or {}
    cfx = custom.get("cfx") if isinstance(custom.get("cfx"), dict) else {}
    recipe = custom.get("recipe") or cfx.get("recipe")
    revision = custom.get("recipe_revision") or cfx.get("recipe_revision")
    return (str(recipe) if recipe else None), (str(revision) if revision else None)


def product_of(payload: dict[str, Any], test_type: str, station: Station) -> Product:
    """Part number, revision and process code for a result, by the rule in ``docs/wats-uplink.md``: the
    message's own part number first, then a ``[[sinks.wats.products]]`` rule on its recipe (or its part number),
    then the recipe itself (``recipe_as_part_number``), then the default, which is only for results that name no
    recipe. The revision comes from where the part number came from."""
    recipe, recipe_rev = recipe_of(payload)
    own_pn = (payload.get("part_number") or "").strip() or None
    rule = next((r for key in (recipe, own_pn) if key for r in station.products if fnmatchcase(key, r.match)), None)
    own_rev = (payload.get("revision") or "").strip() or None
    if own_pn:
        pn, rev = own_pn, own_rev or (rule.revision if rule else None)
    elif rule and rule.part_number:
        pn, rev = rule.part_number, rule.revision
    elif recipe and station.recipe_as_part_number:
        pn, rev = recipe, recipe_rev
    elif not recipe and station.default_part_number:
        pn, rev = station.default_part_number, None
    else:
        raise NoPartNumber(recipe, test_type, rule.match if rule else None)
    code = rule.process_code if rule and rule.process_code is not None else station.process_code(test_type)
    return Product(pn, rev or station.default_revision, code, rule)


# ------------------------------------------------------------------------------------------------ texts
def _identifier(value: str | None, what: str, station: Station, forbidden: bool = True) -> str:
    """An identifier exactly as given, or a ``MappingError`` naming the field: never shortened."""
    value = (value or "").strip()  # as the WATS client's own model does (str_strip_whitespace)
    if not value:
        raise MappingError(f"{what} is required")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise MappingError(f"{what} {value!r} contains a control character")
    if len(value) > NAME_MAX:
        raise MappingError(f"{what} {value[:40]!r}… is {len(value)} characters; WATS takes at most {NAME_MAX}")
    bad = sorted(set(value) & FORBIDDEN_CHARS) if forbidden else []
    if bad:
        if station.identifier_chars == "replace":
            return "".join(station.identifier_replacement if c in FORBIDDEN_CHARS else c for c in value)
        raise MappingError(f"{what} {value!r} contains {' '.join(bad)}, which WATS refuses in identifiers (set "
                           "sinks.wats.identifier_chars = \"replace\" to replace them)")
    return value


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with "…"."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _long_text(text: str) -> str:
    """``text`` within 5000 characters, the cut said with how many characters it cost."""
    if len(text) <= LONG_TEXT_MAX:
        return text
    note = ""
    for _ in range(3):  # the note's length depends on the count it carries
        keep = LONG_TEXT_MAX - len(note)
        note = f" … ({len(text) - keep} characters cut)"
    return text[:LONG_TEXT_MAX - len(note)] + note


def _iso_local(when: datetime, tz: tzinfo | None) -> str:
    local = when.astimezone(tz) if tz is not None else when.astimezone()
    return local.isoformat(timespec="milliseconds" if local.microsecond else "seconds")


def _iso_utc(when: datetime) -> str:
    u = when.astimezone(timezone.utc)
    return u.isoformat(timespec="milliseconds" if u.microsecond else "seconds").replace("+00:00", "Z")


def _worst(statuses: list[TestResult]) -> TestResult:
    for s in (TestResult.ERROR, TestResult.ABORTED, TestResult.FAIL):
        if s in statuses:
            return s
    if statuses and all(s is TestResult.SKIPPED for s in statuses):
        return TestResult.SKIPPED
    return TestResult.PASS


# ------------------------------------------------------------------------------------------------ measurements
def _verdict(m: TestMeasurement) -> TestResult:
    try:
        return m.verdict()
    except limits.LimitError as e:
        raise MappingError(f"measurement {m.name!r}: {e}") from None


def _written_status(m: TestMeasurement, verdict: TestResult) -> TestResult:
    """A ``LOG`` measurement is recorded, not judged: WSJF shows it passed; a verdict the source gave it anyway
    (a tester's "Failed" on a value without limits) is carried by its step."""
    if m.comp_op == "LOG" and m.kind != "boolean" and verdict is TestResult.FAIL:
        return TestResult.PASS
    return verdict


def _shape(m: TestMeasurement) -> Literal["num", "bool", "str", "none"]:
    kind = m.kind
    if m.value is None:
        return "none"
    if kind == "numeric":
        return "num" if limits.as_number(m.value) is not None else "str"
    return "bool" if kind == "boolean" else "str"


def _limits_text(m: TestMeasurement) -> str:
    lo, hi = limits.limits_of(m.comp_op or "LOG", m.low_limit, m.high_limit)
    unit = f" {m.unit}" if m.unit else ""
    if lo is None:
        return ""
    return f"{m.comp_op} {lo}{'..' + str(hi) if hi is not None else ''}{unit}"


def _numeric(m: TestMeasurement, status: TestResult, name: str | None) -> dict[str, Any]:
    op = m.comp_op or "LOG"
    number = limits.as_number(m.value)
    assert number is not None
    d: dict[str, Any] = {"status": RESULT_CODE[status],
                         "value": number if math.isfinite(number) else limits.non_finite_text(number),
                         "unit": m.unit or "", "compOp": op}
    try:
        lo, hi = limits.limits_of(op, m.low_limit, m.high_limit)
    except limits.LimitError as e:
        raise MappingError(f"measurement {m.name!r}: {e}") from None
    if lo is not None:
        d["lowLimit"] = lo
    if hi is not None:
        d["highLimit"] = hi
    if name is not None:
        d["name"] = name
    return d


def _string(m: TestMeasurement, status: TestResult, name: str | None) -> dict[str, Any]:
    expected = m.expected if isinstance(m.expected, str) else None
    op = m.comp_op if m.comp_op in limits.STRING_OPS else "LOG"
    d: dict[str, Any] = {"status": RESULT_CODE[status], "value": _text_of(m.value), "compOp": op}
    if op != "LOG":
        d["limit"] = expected
    if name is not None:
        d["name"] = name
    return d


def _unique_names(names: list[str]) -> list[str]:
    """Measurement names of a multi-measurement step: each ≤ 100 characters and unique, as WSJF requires."""
    out: list[str] = []
    seen: set[str] = set()
    for i, n in enumerate(names):
        base = shorten(n.strip() or f"measurement {i + 1}", NAME_MAX)
        cand, k = base, 2
        while cand in seen:
            suffix = f" ({k})"
            cand, k = shorten(base, NAME_MAX - len(suffix)) + suffix, k + 1
        seen.add(cand)
        out.append(cand)
    return out


# ------------------------------------------------------------------------------------------------ steps
class _Builder:
    def __init__(self) -> None:
        self.next_id = 2  # the root is 1
        self.first_failure: int | None = None

    def _base(self, name: str, status: TestResult, texts: list[str]) -> dict[str, Any]:
        sid = self.next_id
        self.next_id += 1
        clean = name.strip() or "step"
        short = shorten(clean, NAME_MAX)
        if short != clean:
            texts = [f"Step: {clean}", *texts]
        base: dict[str, Any] = {"id": sid, "name": short, "group": "M", "status": RESULT_CODE[status]}
        if texts:
            base["reportText"] = _long_text("\n".join(texts))
        return base

    def _mark(self, base: dict[str, Any], status: TestResult) -> None:
        if status in (TestResult.FAIL, TestResult.ERROR) and self.first_failure is None:
            self.first_failure = base["id"]
            base["causedUUTFailure"] = True

    def step(self, s: TestStep) -> tuple[dict[str, Any], TestResult]:
        judged = [(m, _verdict(m)) for m in s.measurements]
        status = _worst([s.status, *(v for _, v in judged)])
        texts = [s.message] if s.message else []
        shapes = {_shape(m) for m, _ in judged}
        if len(judged) > 1 and len(shapes) > 1:
            return self._sequence(s, judged, status, texts)
        base = self._base(s.name, status, texts)
        if s.start_time is not None:
            base["start"] = _iso_utc(s.start_time)
            if s.end_time is not None:
                base["totTime"] = round((s.end_time - s.start_time).total_seconds(), 6)
        multi = len(judged) > 1
        names = _unique_names([m.name for m, _ in judged]) if multi else [None] * len(judged)
        shape = shapes.pop() if shapes else None
        if shape is None:
            if status in (TestResult.PASS, TestResult.FAIL):
                base["stepType"] = "ET_PFT"  # a step that carries only its verdict is a pass/fail test
                base["booleanMeas"] = [{"status": RESULT_CODE[status]}]
            else:
                base["stepType"] = "Action"
        elif shape == "num":
            base["stepType"] = "ET_MNLT" if multi else "ET_NLT"
            base["numericMeas"] = [_numeric(m, _written_status(m, v), n) for (m, v), n in zip(judged, names)]
        elif shape in ("bool", "none"):
            base["stepType"] = "ET_MPFT" if multi else "ET_PFT"
            base["booleanMeas"] = [{"status": RESULT_CODE[_written_status(m, v)], **({"name": n} if n else {})}
                                   for (m, v), n in zip(judged, names)]
            missing = [f"{m.name}: no reading" + (f" (limits {_limits_text(m)})" if _limits_text(m) else "")
                       for m, _ in judged if m.value is None and (m.low_limit is not None
                                                                  or m.high_limit is not None)]
            if missing:
                base["reportText"] = _long_text("\n".join([*filter(None, [base.get("reportText")]), *missing]))
        else:
            base["stepType"] = "ET_MSVT" if multi else "ET_SVT"
            base["stringMeas"] = [_string(m, _written_status(m, v), n) for (m, v), n in zip(judged, names)]
        self._mark(base, status)
        return base, status

    def _sequence(self, s: TestStep, judged: list[tuple[TestMeasurement, TestResult]], status: TestResult,
                  texts: list[str]) -> tuple[dict[str, Any], TestResult]:
        """Measurements of different kinds in one step: a sequence with one step per measurement."""
        base = self._base(s.name, status, texts)
        base["stepType"] = "SequenceCall"
        base["seqCall"] = {"path": "fixture-agent", "name": base["name"], "version": "1.0.0"}
        self._mark(base, status)
        base["steps"] = [self.step(TestStep(name=m.name, status=v, measurements=[m]))[0] for m, v in judged]
        return base, status

    def container(self, name: str, children: list[TestStep], status: TestResult) -> tuple[dict[str, Any], TestResult]:
        """A sequence of steps under one name (an inspection and its defects); ids stay depth-first."""
        base = self._base(name, status, [])
        base["stepType"] = "SequenceCall"
        base["seqCall"] = {"path": "fixture-agent", "name": base["name"], "version": "1.0.0"}
        self._mark(base, status)
        base["steps"] = [self.step(c)[0] for c in children]
        return base, status


# ------------------------------------------------------------------------------------------------ inspections
def _inspection_steps(r: InspectionResultEvent, builder: _Builder) -> list[tuple[dict[str, Any], TestResult]]:
    """An inspection result's inspections as steps, each defect a failed pass/fail step under its inspection
    naming the component, the defect code and where: a failed AOI report shows what failed."""
    listed = r.custom_data.get("steps") if isinstance(r.custom_data.get("steps"), list) else []
    order: list[str] = []
    status_of: dict[str, TestResult] = {}
    for s in listed:
        if isinstance(s, dict) and s.get("name"):
            name = str(s["name"])
            order.append(name)
            try:
                status_of[name] = TestResult(s.get("status", "pass"))
            except ValueError:
                raise MappingError(f"inspection {name!r}: status {s.get('status')!r} is not a result") from None
    by_inspection: dict[str, list[dict[str, Any]]] = {}
    for d in r.defects:
        where = str(d.get("inspection") or "Defects")
        if where not in status_of and where not in order:
            order.append(where)
        by_inspection.setdefault(where, []).append(d)
    out = []
    for name in dict.fromkeys(order):
        defects = by_inspection.get(name, [])
        real = [d for d in defects if d.get("verification") not in NOT_A_DEFECT]
        status = status_of.get(name, TestResult.FAIL if real else TestResult.PASS)
        if defects:
            status = _worst([status, TestResult.FAIL]) if real else status
            children = []
            for i, d in enumerate(defects):
                component = d.get("component") or d.get("reference_designator")
                code = d.get("code") or d.get("defect_code") or "defect"
                label = " ".join(str(x) for x in (component, code) if x) or f"defect {i + 1}"
                shown = ("code", "category", "description", "component", "location", "verification", "comments")
                detail = [f"{k}: {d[k]}" for k in shown if d.get(k) not in (None, "")]
                extra = [f"{k}: {v}" for k, v in d.items() if k not in (*shown, "inspection")
                         and v not in (None, "", [], {})]
                false_call = d.get("verification") in NOT_A_DEFECT  # verified at a repair station: not a defect
                children.append(TestStep(name=label, status=TestResult.PASS if false_call else TestResult.FAIL,
                                         message="\n".join([*detail, *extra]) or None))
            out.append(builder.container(name, children, status))
        else:
            out.append(builder.step(TestStep(name=name, status=status)))
    return out


# ------------------------------------------------------------------------------------------------ misc infos
def _misc_infos(custom: dict[str, Any], recipe: str | None, recipe_rev: str | None,
                agent_version: str) -> list[dict[str, Any]]:
    """``AgentVersion``, the recipe, then the result's own ``custom_data`` (its site-specific extras): numbers as
    ``numeric``, everything else as ``text`` (≤ 100 characters, shortened with "…"); nested objects one level
    deep as ``key.sub``."""
    infos: list[dict[str, Any]] = [{"description": "AgentVersion", "text": shorten(agent_version or "unknown",
                                                                                   NAME_MAX)}]
    if recipe:
        infos.append({"description": "Recipe", "text": shorten(recipe, NAME_MAX)})
    if recipe_rev:
        infos.append({"description": "RecipeRevision", "text": shorten(recipe_rev, NAME_MAX)})

    def add(key: str, value: Any) -> None:
        desc = shorten(key.strip(), NAME_MAX)
        if len(infos) >= MISC_INFOS_MAX or value is None or value == "" or not desc:
            return  # a key WATS cannot show (empty) is left out
        if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e300 \
                and math.isfinite(float(value)) and (isinstance(value, float) or abs(value) < 2 ** 53):
            infos.append({"description": desc, "numeric": value})
        else:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            infos.append({"description": desc, "text": shorten(text, NAME_MAX)})

    for key, value in custom.items():
        if key in INTERNAL_KEYS:
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                add(f"{key}.{sub}", v)
        else:
            add(str(key), value)
    return infos


# ------------------------------------------------------------------------------------------------ the report
def to_wsjf(event: Event, station: Station) -> dict[str, Any]:
    """The WSJF UUT report for a ``test.result`` or ``inspection.result`` event."""
    if event.event_type not in (EventType.TEST_RESULT.value, EventType.INSPECTION_RESULT.value):
        raise MappingError(f"{event.event_type} is not a test or inspection result")
    try:
        r = event.typed_payload()
    except ValueError as e:
        raise MappingError(str(e)) from None
    test_type = test_type_of(event)
    builder = _Builder()
    if isinstance(r, InspectionResultEvent):
        built = _inspection_steps(r, builder)
    else:
        built = [builder.step(s) for s in r.steps]
    steps = [d for d, _ in built]
    statuses = [st for _, st in built]
    # the steps decide; the device's own verdict can make the result worse, never hide a failed step
    result = _worst([*statuses, r.result])
    product = product_of(event.payload, test_type, station)
    operator = (getattr(r, "operator_id", None) or "").strip() or station.operator
    uut: dict[str, Any] = {"user": _identifier(operator, "operator", station, forbidden=False)}
    if r.end_time is not None:
        uut["execTime"] = max(0.0, round((r.end_time - r.start_time).total_seconds(), 6))
    fixture = (getattr(r, "fixture_id", None) or "").strip()
    if fixture:
        uut["fixtureId"] = _identifier(fixture, "fixture_id", station, forbidden=False)
    if getattr(r, "test_socket", None) is not None:
        try:
            uut["testSocketIndex"] = int(r.test_socket)
        except ValueError:
            raise MappingError(f"test_socket {r.test_socket!r} is not an integer") from None
    if getattr(r, "batch_sn", None):
        uut["batchSN"] = _identifier(r.batch_sn, "batch_sn", station, forbidden=False)
    if builder.first_failure is not None:
        uut["stepIdCausedUUTFailure"] = builder.first_failure
    recipe, recipe_rev = recipe_of(event.payload)
    sub_units = []
    for i, u in enumerate(getattr(r, "sub_units", [])):
        where = f"sub_units[{i}]"
        sub_units.append({"partType": shorten(u.part_type or "Unknown", PART_TYPE_MAX),
                          "pn": _identifier(u.part_number, f"{where}.part_number", station),
                          "sn": _identifier(u.serial_number, f"{where}.serial_number", station),
                          "rev": _identifier(u.revision or station.default_revision, f"{where}.revision", station),
                          **({"position": u.position} if u.position is not None else {})})
    report = {
        "type": "T",
        "id": event.id,
        "pn": _identifier(product.part_number, "part_number", station),
        "sn": _identifier(r.unit_id, "unit_id (serial number)", station),
        "rev": _identifier(product.revision, "revision", station),
        "processCode": product.process_code,
        "result": REPORT_RESULT[result],
        "machineName": _identifier(station.machine_name, "machineName (agent.station)", station, forbidden=False),
        "location": _identifier(station.location, "location (agent.location)", station, forbidden=False),
        "purpose": _identifier(station.purpose, "purpose (agent.purpose)", station, forbidden=False),
        "start": _iso_local(r.start_time, station.timezone),
        "startUTC": _iso_utc(r.start_time),
        "uut": uut,
        "miscInfos": _misc_infos(r.custom_data, recipe, recipe_rev, station.agent_version),
        "subUnits": sub_units,
        "root": {
            "id": 1,
            "stepType": "SequenceCall",
            "name": "MainSequence Callback",
            "group": "M",
            "status": RESULT_CODE[result],
            "seqCall": {"path": f"fixture-agent/{shorten(test_type, 60)}.seq", "name": "MainSequence Callback",
                        "version": "1.0.0"},
            "steps": steps,
        },
    }
    return report
