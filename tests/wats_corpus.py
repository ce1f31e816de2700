"""A conformance corpus for the WATS uplink (issue 15): varied results in every source's own input shape.

Seeded, so a failure is reproducible. Every step kind and operator, nested sequences, sub units, misc infos,
inspection defects, unicode, texts longer than WATS takes, non-finite values, clock corrections, and a few inputs
that must NOT become reports (no serial, an identifier WATS refuses, a recipe no rule knows, an operator without its
limit), each with the reason its dead letter must give.

Each generator returns what the source reads: ``publish --stdin`` lines, MQTT (topic, payload), CFX envelopes,
serial JSON lines. ``Expected`` says what must come of them.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from agent.protocols.cfx_samples import SAMPLES

NUMERIC_OPS = ["EQ", "NE", "GT", "LT", "GE", "LE", "GTLT", "GELE", "GELT", "GTLE", "LTGT", "LEGE", "LEGT", "LTGE",
               "LOG", "EQT"]
STRING_OPS = ["CASESENSIT", "IGNORECASE", "EQ", "NE", "LOG"]
RULE_RECIPE = "RCP-CORPUS-"  # [[sinks.wats.products]] match = "RCP-CORPUS-*" in the corpus test's config
CFX_RECIPE = "PCB4711_"  # match = "PCB4711_*"


@dataclass
class Expected:
    """What the corpus must produce: ``reports`` results accepted by WATS, and dead letters whose reasons contain
    each of ``refusals`` (one per designed bad input)."""

    reports: int = 0
    refusals: list[str] = field(default_factory=list)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _numeric_measurement(rng: random.Random, name: str) -> dict[str, Any]:
    op = rng.choice(NUMERIC_OPS)
    lo = round(rng.uniform(-5, 5), 3)
    hi = round(lo + rng.uniform(0.1, 4), 3)
    m: dict[str, Any] = {"name": name, "status": "pass", "unit": rng.choice(["V", "A", "Ω", "°C", "", "mΩ"]),
                         "comp_op": op}
    if op in ("EQ", "NE", "GT", "LT", "GE", "LE", "EQT"):
        if rng.random() < 0.3:
            m["high_limit"] = lo  # the source named its one limit "high": still the one limit
        else:
            m["low_limit"] = lo
        edge = [lo, lo + 0.001, lo - 0.001]
    elif op != "LOG":
        m["low_limit"], m["high_limit"] = lo, hi
        edge = [lo, hi, (lo + hi) / 2, lo - 1, hi + 1]
    else:
        edge = [lo]
        if rng.random() < 0.3:
            m["status"] = rng.choice(["pass", "fail"])  # a verdict on a logged value: carried by the step
    roll = rng.random()
    if roll < 0.08:
        m["value"] = rng.choice(["NaN", "Infinity", "-Infinity"])
    elif roll < 0.5:
        m["value"] = round(rng.choice(edge), 3)
    else:
        m["value"] = round(rng.uniform(lo - 2, hi + 2), 3)
    if op in ("EQ", "NE") and rng.random() < 0.5:
        m["value"] = m.get("low_limit", m.get("high_limit"))
    m["status"] = m["status"] if op in ("LOG", "EQT") else rng.choice(["pass", "fail"])  # the agent re-judges
    return m


def _boolean_measurement(rng: random.Random, name: str) -> dict[str, Any]:
    m = {"name": name, "status": rng.choice(["pass", "fail"]), "value": rng.random() < 0.5}
    if rng.random() < 0.6:
        m["expected"] = rng.random() < 0.5
    return m


def _string_measurement(rng: random.Random, name: str) -> dict[str, Any]:
    op = rng.choice(STRING_OPS)
    value = rng.choice(["1.4.2", "ABC-é", "abc-É", "ok", "日本語"])
    m = {"name": name, "status": rng.choice(["pass", "fail"]), "value": value, "comp_op": op}
    if op != "LOG":
        m["expected"] = rng.choice([value, value.upper(), value.lower(), "other"])
    return m


def _step(rng: random.Random, i: int) -> dict[str, Any]:
    kind = rng.choice(["num", "num", "multi", "bool", "multibool", "str", "multistr", "word", "mixed", "none"])
    name = rng.choice([f"Step {i}", f"Spannung {i} ü", f"電圧 {i}", f"S{i} " + "x" * 150])
    step: dict[str, Any] = {"name": name, "status": rng.choice(["pass", "fail", "pass", "pass"])}
    if kind == "num":
        step["measurements"] = [_numeric_measurement(rng, name)]
    elif kind == "multi":
        step["measurements"] = [_numeric_measurement(rng, rng.choice(["V1", "V2", "V1"])) for _ in range(3)]
    elif kind == "bool":
        step["measurements"] = [_boolean_measurement(rng, name)]
    elif kind == "multibool":
        step["measurements"] = [_boolean_measurement(rng, f"K{j}") for j in range(2)]
    elif kind == "str":
        step["measurements"] = [_string_measurement(rng, name)]
    elif kind == "multistr":
        step["measurements"] = [_string_measurement(rng, f"T{j}") for j in range(2)]
    elif kind == "mixed":
        step["measurements"] = [_numeric_measurement(rng, "n"), _boolean_measurement(rng, "b"),
                                _string_measurement(rng, "s")]
    elif kind == "word":
        step["status"] = rng.choice(["pass", "fail", "skipped", "error"])
    if rng.random() < 0.15:
        step["message"] = "Ausgabe: " + "ü" * rng.choice([50, 6000])
    return step


def published(rng: random.Random, n: int, now: datetime) -> tuple[list[str], Expected]:
    """``publish --stdin`` lines: test and inspection results as scripts write them."""
    lines, exp = [], Expected()
    for i in range(n):
        start = now - timedelta(seconds=rng.uniform(5, 600))
        if i % 17 == 5:
            start = now + timedelta(hours=2)  # a device clock ahead: corrected, and the correction said
        payload: dict[str, Any] = {"unit_id": f"PUB{i:04d}", "result": rng.choice(["pass", "fail", "pass"]),
                                   "start_time": _iso(start), "end_time": _iso(start + timedelta(seconds=3))}
        if i % 3 == 0:
            payload["custom_data"] = {"recipe": f"{RULE_RECIPE}{i % 4}"}
        else:
            payload["part_number"] = rng.choice(["PCBA-100", "PCBA-200"])
            payload["revision"] = rng.choice(["A", "B2"])
        if i % 10 == 7:  # an inspection with defects
            defects = [{"code": rng.choice(["TOMBSTONE", "BRIDGE", "MISSING"]), "component": f"C{j}",
                        "category": "Placement", "inspection": rng.choice(["AOI_TOP", "AOI_BOTTOM"]),
                        "location": "x=1.5 y=2.5"} for j in range(rng.randint(1, 3))]
            payload.update(result="fail", defects=defects,
                           custom_data={**payload.get("custom_data", {}),
                                        "steps": [{"name": "AOI_TOP", "status": "fail"},
                                                  {"name": "AOI_BOTTOM", "status": "pass"}]})
            lines.append(json.dumps({"type": "inspection.result", "payload": payload}))
            exp.reports += 1
            continue
        payload["steps"] = [_step(rng, j) for j in range(rng.randint(0, 6))]
        if i % 5 == 1:
            payload["sub_units"] = [{"part_number": "PSU-9", "serial_number": f"PSU{i}", "revision": "B",
                                     "part_type": "Power supply unit of the DUT, with a very long type name"}]
        if i % 4 == 2:
            payload.setdefault("custom_data", {}).update(
                {"firmware": "1.4.2", "temperature_c": 23.5, "fixture": {"slot": i, "nest": "A"},
                 "comment": "ö" * 300, "flags": [1, 2, 3], "ok": True, "": "no key", "  ": 1,
                 "serial_of_a_big_counter": 10 ** 400})
        if i % 9 == 4:
            payload["operator_id"] = "Zoë Müller"
            payload["fixture_id"] = "FX-ÆØÅ-7"
        lines.append(json.dumps({"type": "test.result", "payload": payload}))
        exp.reports += 1
    # designed to be refused, each with its reason
    bad = [
        ({"unit_id": "SN/1*A", "part_number": "PCBA-100"}, "contains * /"),
        ({"unit_id": "X" * 101, "part_number": "PCBA-100"}, "is 101 characters; WATS takes at most 100"),
        ({"unit_id": "PUB-NORULE", "custom_data": {"recipe": "UNKNOWN-RECIPE"}}, "matches no [[sinks.wats.products]] rule"),
        ({"unit_id": "PUB-OP", "part_number": "PCBA-100", "steps": [{"name": "v", "status": "pass", "measurements": [
            {"name": "v", "status": "pass", "value": 1.0, "low_limit": 0.0, "comp_op": "GELE"}]}]},
         "GELE needs a low and a high limit"),
    ]
    for p, reason in bad:
        p.update(result="pass", start_time=_iso(now - timedelta(seconds=10)))
        lines.append(json.dumps({"type": "test.result", "payload": p}))
        exp.refusals.append(reason)
    return lines, exp


def mqtt_messages(rng: random.Random, n: int) -> tuple[list[tuple[str, dict[str, Any]]], Expected]:
    """What test stations and ESP32 devices publish: ``testers/{id}/results`` and ``devices/{id}/selftest``."""
    out, exp = [], Expected()
    for i in range(n):
        steps = []
        for j in range(rng.randint(1, 5)):
            kind = rng.random()
            if kind < 0.3:
                steps.append({"name": f"Relay K{j}", "status": rng.choice(["pass", "fail", "Passed", "F"])})
            elif kind < 0.8:
                lo = round(rng.uniform(0, 3), 2)
                s = {"name": f"vcc{j}", "value": round(rng.uniform(lo - 0.5, lo + 1.5), 3), "unit": "V",
                     "low": lo, "high": round(lo + 0.6, 2)}
                if rng.random() < 0.4:
                    s["comp_op"] = rng.choice(["GTLT", "LTGT", "GELT"])
                steps.append(s)
            else:
                steps.append({"name": f"door{j}", "value": rng.random() < 0.5, "expected": rng.random() < 0.5})
        doc: dict[str, Any] = {"result": rng.choice(["Passed", "P", "fail"]), "steps": steps,
                               "duration_ms": rng.randint(10, 5000)}
        if i % 3 == 0:
            doc["serial_number"] = "DEV-CLAIMED-1"  # a device's claim: never the unit of a self-test
            out.append((f"devices/ESP-{i}/selftest", doc))
        else:
            doc.update(serial_number=f"MQ{i:04d}", operator="op-7")
            if i % 2:
                doc["part_number"] = "PCBA-300"
            else:
                doc["recipe"] = f"{RULE_RECIPE}mqtt"
            if i % 4 == 1:
                doc["sub_units"] = [{"part_number": "DISP-1", "serial_number": f"D{i}", "part_type": "Display"}]
            out.append((f"testers/FCT-{i % 3}/results", doc))
        exp.reports += 1
    out.append(("testers/FCT-1/results", {"result": "pass", "steps": []}))  # no unit: no report
    exp.refusals.append("no serial_number")
    return out, exp


def _cfx(name: str) -> dict[str, Any]:
    doc = copy.deepcopy(SAMPLES[name][1])
    doc["UniqueID"] = str(uuid.uuid4())
    doc["TimeStamp"] = _iso(datetime.now(timezone.utc) - timedelta(seconds=30))
    return doc


def _cfx_test(name: str, result: str, measurements: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"UniqueIdentifier": str(uuid.uuid4()), "TestName": name, "TestStartTime": None, "TestEndTime": None,
            "Result": result, "Error": extra.get("error"), "SymptomsFound": [], "DefectsFound": [],
            "Measurements": measurements}


def _cfx_num(name: str, value: Any, lo: float | None, hi: float | None, result: str = "Passed") -> dict[str, Any]:
    return {"$type": "CFX.Structures.NumericMeasurement, CFX", "MeasurementName": name, "Result": result,
            "MeasuredValue": {"Value": value, "ValueUnits": "V", "ExpectedValue": None,
                              "MinimumAcceptableValue": lo, "MaximumAcceptableValue": hi}}


def cfx_messages(rng: random.Random, n: int) -> tuple[list[dict[str, Any]], Expected]:
    """What testers and inspection machines publish on the plant broker (UnitsTested, UnitsInspected)."""
    out, exp = [], Expected()
    for i in range(n):
        if i % 4 == 3:
            doc = _cfx("aoi-units-inspected")
            doc["MessageBody"]["RecipeName"] = f"{CFX_RECIPE}TOP"
            unit = doc["MessageBody"]["InspectedUnits"][0]
            unit["UnitIdentifier"] = f"CFXI{i:04d}"
            if i % 8 == 7:  # a clean board: no defects
                unit["OverallResult"] = "Passed"
                unit["Inspections"][0].update(Result="Passed", DefectsFound=[])
            elif i % 8 == 3:  # a false call, rejected at verification: the board passed
                unit["OverallResult"] = "Passed"
                unit["Inspections"][0]["Result"] = "Passed"
                unit["Inspections"][0]["DefectsFound"][0]["Verification"] = "DefectRejected"
            out.append(doc)
            exp.reports += 1
            continue
        doc = _cfx("ict-units-tested")
        body = doc["MessageBody"]
        body["RecipeName"] = f"{CFX_RECIPE}ICT"
        tests = [
            _cfx_test("BOOT_OK", "Passed", [{"$type": "CFX.Structures.BooleanMeasurement, CFX",
                                              "MeasurementName": "relay open", "Value": False,
                                              "ExpectedValue": False, "Result": "Passed"}]),
            _cfx_test("FW", "Passed", [{"$type": "CFX.Structures.TextMeasurement, CFX", "MeasurementName": "fw",
                                         "Value": rng.choice(["1.4.2", "1.4.3"]), "ExpectedValue": "1.4.2",
                                         "Result": "Passed"}]),
            _cfx_test("VCC", "Passed", [_cfx_num("vcc", round(rng.uniform(3.0, 3.6), 3), 3.2, 3.4)]),
            _cfx_test("NOISE", "Passed", [_cfx_num("noise", rng.choice(["NaN", "Infinity", 0.01]), None, 0.05)]),
            _cfx_test("VISUAL", rng.choice(["Passed", "Failed"]), []),  # no measurements: the tester's verdict
            _cfx_test("LOGGED", "Failed", [_cfx_num("t", 21.5, None, None, "Failed")]),
        ]
        units = [{"UnitIdentifier": f"CFX{i:04d}-{k}", "UnitPositionNumber": k + 1,
                  "OverallResult": "Passed", "Tests": tests} for k in range(1 + i % 2)]
        body["TestedUnits"] = units
        out.append(doc)
        exp.reports += len(units)
    doc = _cfx("fct-units-tested")
    doc["MessageBody"]["RecipeName"] = "OTHER_LINE_FCT"  # no rule for it: waits for one
    out.append(doc)
    exp.refusals += ["matches no [[sinks.wats.products]] rule"] * len(doc["MessageBody"]["TestedUnits"])
    return out, exp


def serial_lines(rng: random.Random, n: int, session: str = "corpus1") -> tuple[list[bytes], Expected]:
    """A fixture controller's self-tests in the serial JSON-lines protocol (docs/serial-protocol.md)."""
    out, exp = [], Expected()
    for i in range(n):
        steps = [{"name": "VCC", "value": round(rng.uniform(3.1, 3.5), 3), "unit": "V", "low": 3.2, "high": 3.4},
                 {"name": "Relay K1", "status": rng.choice(["pass", "fail"])},
                 {"name": "Lid switch", "value": rng.random() < 0.5, "expected": True},
                 {"name": "Leak", "value": round(rng.uniform(0, 2), 2), "unit": "mbar/s", "high": 1.0,
                  "comp_op": "LT"}]
        out.append(json.dumps({"type": "selftest", "seq": i + 1, "session": session, "result": "pass",
                               "duration_ms": 120, "steps": steps[: 1 + i % 4]}).encode() + b"\n")
        exp.reports += 1
    return out, exp
