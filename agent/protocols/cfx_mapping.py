"""CFX messages ↔ normalized events, as the CFX seed's mapping table says. Pure functions: no broker here.

In (``to_events``): UnitsTested → ``test.result`` and UnitsInspected → ``inspection.result`` (one per unit, the
agent judging numeric measurements against their limits like every other source), StationStateChanged →
``asset.state_changed`` (SEMI E10 family → our states, the codes kept), FaultOccurred/FaultCleared →
``asset.fault``, MaterialsInstalled → ``material.installed``, WorkStarted/WorkCompleted/UnitsArrived/UnitsDeparted/
UnitsDisqualified → ``production.*``, MaintenancePerformed → ``asset.maintenance``. The CFX ``UniqueID`` and the
sender's handle travel in ``custom_data.cfx``; the asset is the sender's CFX handle. Root messages (Heartbeat,
EndpointConnected …) are the transport's business, not events: ``to_events`` returns nothing for them.

Out (``to_cfx``): the fixture's own ``test.result`` → UnitsTested, ``asset.state_changed`` →
StationStateChanged with E10 codes, ``asset.fault`` → FaultOccurred or FaultCleared. The envelope's
``UniqueID`` is the event id, so a resend is recognisably the same message. Only the fixture's **own** events
(``is_own``: not from an ingest of other equipment) are said under its handle; another's, when the endpoint relays
them (``relay_cfx``), go out as their sender wrote them: its handle, its UniqueID, its TimeStamp, its body.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from ..events.model import Event, EventType
from ..events.payloads import (
    AssetFaultEvent, AssetState, AssetStateChangedEvent, InspectionResultEvent, InstalledComponent,
    MaintenanceEvent, MaterialInstalledEvent, SeverityLevel, TestMeasurement, TestResult, TestResultEvent, TestStep,
    UnitDisqualifiedEvent, WorkCompletedEvent, WorkStartedEvent,
)
from .cfx import CfxError, Envelope, envelope_doc, format_timespan, parse_resource_state, parse_time, type_name
from ..events import limits
from .results import judged, overall

RESULT_WORDS = {"passed": TestResult.PASS, "failed": TestResult.FAIL, "error": TestResult.ERROR,
                "aborted": TestResult.ABORTED, "skipped": TestResult.SKIPPED}
CFX_RESULT = {TestResult.PASS: "Passed", TestResult.FAIL: "Failed", TestResult.ERROR: "Error",
              TestResult.ABORTED: "Aborted", TestResult.SKIPPED: "Skipped"}
SEVERITY = {"information": SeverityLevel.INFO, "warning": SeverityLevel.WARNING, "error": SeverityLevel.ERROR,
            "alarm": SeverityLevel.CRITICAL}
CFX_SEVERITY = {v: k.capitalize() for k, v in SEVERITY.items()}
#: SEMI E10 family → our state: productive, standby, engineering, scheduled and unscheduled downtime, non-scheduled
E10_FAMILY = {1000: AssetState.BUSY, 2000: AssetState.IDLE, 3000: AssetState.MAINTENANCE,
              4000: AssetState.MAINTENANCE, 5000: AssetState.ERROR, 6000: AssetState.OFFLINE}
#: our state → the E10 code the endpoint publishes
E10_CODE = {AssetState.BUSY: 1100, AssetState.IDLE: 2200, AssetState.ONLINE: 2000, AssetState.MAINTENANCE: 4300,
            AssetState.ERROR: 5000, AssetState.OFFLINE: 6000}


# ------------------------------------------------------------------------------------------------ helpers
def _list(body: dict, key: str, where: str) -> list:
    v = body.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise CfxError(f"{where}.{key}: expected a list, got {type(v).__name__}")
    return v


def _obj(v: Any, where: str) -> dict:
    if not isinstance(v, dict):
        raise CfxError(f"{where}: expected an object, got {type(v).__name__}")
    return v


def _get(v: Any, *keys: str) -> Any:
    """``v[k1][k2]…``, or None where a step is missing or not an object (optional structures of any shape)."""
    for k in keys:
        if not isinstance(v, dict):
            return None
        v = v.get(k)
    return v


def _text(v: Any) -> str | None:
    return str(v) if v is not None and v != "" else None


def _result(v: Any, where: str) -> TestResult:
    r = RESULT_WORDS.get(str(v).strip().lower()) if v is not None else None
    if r is None:
        raise CfxError(f"{where}: {v!r} is not a TestResult (Passed, Failed, Error, Aborted, Skipped)")
    return r


def _num(v: Any, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CfxError(f"{where}: {v!r} is not a number")
    return float(v)


def _cfx_meta(env: Envelope, **extra: Any) -> dict[str, Any]:
    meta = {"unique_id": env.unique_id, "message": env.message_name, "handle": env.source,
            "notes": list(env.notes) or None, **extra}  # a unit's own notes (``extra``) include the envelope's
    return {k: v for k, v in meta.items() if v is not None}


def _asset(env: Envelope) -> str:
    if not env.source:
        raise CfxError("envelope.Source: missing (the asset is the sender's CFX handle)")
    return env.source


def _create(etype: EventType, payload: Any, source: str) -> Event:
    try:
        return Event.create(etype, payload, source=source)
    except Exception as e:  # noqa: BLE001 - a payload our model refuses is a bad message, named
        raise CfxError(f"mapped {etype.value} is not valid: {e}") from None


# ------------------------------------------------------------------------------------------------ measurements
def _reading(v: Any, where: str) -> float | None:
    """A measured value: a number, or a non-finite one as the SDK's JSON writer spells it (``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``: Newtonsoft writes special floats as strings by default)."""
    if isinstance(v, str) and v in limits.NON_FINITE:
        return limits.NON_FINITE[v]
    return _num(v, where)


def measurement(m: Any, where: str, notes: list[str]) -> TestMeasurement:
    """One CFX measurement, judged by the agent wherever its limits or expected value decide it (the one table in
    ``events/limits.py``); the tester's ``Result`` stands only where nothing does. Without ``$type`` (the SDK
    could not read it) the kind is taken from its fields, and that is noted."""
    m = _obj(m, where)
    kind = type_name(m.get("$type"))
    if kind is None:
        if isinstance(m.get("MeasuredValue"), dict):
            kind = "CFX.Structures.NumericMeasurement"
        elif isinstance(m.get("Value"), bool):
            kind = "CFX.Structures.BooleanMeasurement"
        elif isinstance(m.get("Value"), str):
            kind = "CFX.Structures.TextMeasurement"
        else:
            raise CfxError(f"{where}: no $type, and neither MeasuredValue nor Value says what it is")
        notes.append(f"{where} had no $type; read as {kind.rsplit('.', 1)[-1]}")
    name = _text(m.get("MeasurementName")) or _text(m.get("UniqueIdentifier")) or "measurement"
    reported = _result(m["Result"], f"{where}.Result") if m.get("Result") is not None else None
    try:
        return _judged_measurement(m, kind, name, reported, where)
    except limits.LimitError as e:
        raise CfxError(f"{where}: {e}") from None


def _judged_measurement(m: dict, kind: str, name: str, reported: TestResult | None, where: str) -> TestMeasurement:
    if kind.endswith("NumericMeasurement"):
        mv = _obj(m.get("MeasuredValue"), f"{where}.MeasuredValue")
        return judged(name, _reading(mv.get("Value"), f"{where}.MeasuredValue.Value"),
                      _text(mv.get("ValueUnits")) or "",
                      _num(mv.get("MinimumAcceptableValue"), f"{where}.MeasuredValue.MinimumAcceptableValue"),
                      _num(mv.get("MaximumAcceptableValue"), f"{where}.MeasuredValue.MaximumAcceptableValue"),
                      _num(mv.get("ExpectedValue"), f"{where}.MeasuredValue.ExpectedValue"), reported=reported)
    if kind.endswith("BooleanMeasurement"):
        value, expected = m.get("Value"), m.get("ExpectedValue", True)
        if not isinstance(value, bool):
            raise CfxError(f"{where}.Value: {value!r} is not a boolean")
        if expected is not None and not isinstance(expected, bool):
            raise CfxError(f"{where}.ExpectedValue: {expected!r} is not a boolean")
        return judged(name, value, expected=True if expected is None else expected, reported=reported)
    if kind.endswith("TextMeasurement"):
        value, expected = m.get("Value"), m.get("ExpectedValue")
        return judged(name, None if value is None else str(value),
                      expected=str(expected) if expected not in (None, "") else None, reported=reported)
    raise CfxError(f"{where}: $type {kind} is not a measurement this agent reads")


def _steps(tests: list, where: str, notes: list[str], step_type: str, name_key: str, start_key: str,
           end_key: str) -> tuple[list[TestStep], datetime | None, datetime | None]:
    steps, starts, ends = [], [], []
    for i, t in enumerate(tests):
        tw = f"{where}[{i}]"
        t = _obj(t, tw)
        ms = [measurement(m, f"{tw}.Measurements[{j}]", notes) for j, m in enumerate(_list(t, "Measurements", tw))]
        reported = _result(t["Result"], f"{tw}.Result") if t.get("Result") is not None else None
        status = overall([m.status for m in ms], reported) if ms else (reported or TestResult.PASS)
        start = parse_time(t.get(start_key), f"{tw}.{start_key}", notes)
        end = parse_time(t.get(end_key), f"{tw}.{end_key}", notes)
        starts += [start] if start else []
        ends += [end] if end else []
        problems = [_text(s.get("Description")) or _text(s.get("SymptomCode")) for s in _list(t, "SymptomsFound", tw)
                    if isinstance(s, dict)]
        problems += [_text(d.get("Description")) or _text(d.get("DefectCode")) for d in _list(t, "DefectsFound", tw)
                     if isinstance(d, dict)]
        message = "; ".join(p for p in [_text(t.get("Error")), *problems] if p) or None
        steps.append(TestStep(name=_text(t.get(name_key)) or f"step {i + 1}", status=status, start_time=start,
                              end_time=end, measurements=ms, message=message, step_type=step_type))
    return steps, (min(starts) if starts else None), (max(ends) if ends else None)


# ------------------------------------------------------------------------------------------------ in
def _judged_units(env: Envelope, units_key: str, tests_key: str, name_key: str, start_key: str, end_key: str,
                  step_type: str) -> Iterator[tuple[dict, str, list[TestStep], datetime, datetime, TestResult,
                                                     list[str]]]:
    """Each tested or inspected unit of a message, its steps judged: (unit, id, steps, start, end, result,
    notes). Raises if there is none."""
    units = _list(env.body, units_key, "MessageBody")
    if not units:
        raise CfxError(f"MessageBody.{units_key}: no units")
    for i, u in enumerate(units):
        where = f"MessageBody.{units_key}[{i}]"
        u = _obj(u, where)
        unit_id = _text(u.get("UnitIdentifier"))
        if not unit_id:
            raise CfxError(f"{where}.UnitIdentifier: missing")
        notes = list(env.notes)
        steps, start, end = _steps(_list(u, tests_key, where), f"{where}.{tests_key}", notes, step_type, name_key,
                                   start_key, end_key)
        reported = _result(u["OverallResult"], f"{where}.OverallResult") if u.get("OverallResult") else None
        yield (u, unit_id, steps, start or env.time_stamp, end or env.time_stamp,
               overall([s.status for s in steps], reported), notes)


def units_tested(env: Envelope, source: str) -> list[Event]:
    b = env.body
    method = (_text(b.get("TestMethod")) or "Automated").lower()
    tester = b.get("Tester") if isinstance(b.get("Tester"), dict) else {}
    out = []
    for u, unit_id, steps, start, end, result, notes in _judged_units(
            env, "TestedUnits", "Tests", "TestName", "TestStartTime", "TestEndTime", method):
        custom = {"test_type": method, "cfx": _cfx_meta(env, transaction_id=_text(b.get("TransactionID")),
                                                        recipe=_text(b.get("RecipeName")),
                                                        recipe_revision=_text(b.get("RecipeRevision")),
                                                        position=u.get("UnitPositionNumber"), notes=notes or None)}
        payload = TestResultEvent(unit_id=unit_id, result=result, start_time=start, end_time=end, steps=steps,
                                  fixture_id=env.source, operator_id=_text(tester.get("OperatorIdentifier")),
                                  custom_data=custom)
        out.append(_create(EventType.TEST_RESULT, payload, source))
    return out


def _region(r: Any) -> str | None:
    """Where on the board a defect is (CFX ``RegionOfInterest``'s start point), as text for the report."""
    if not isinstance(r, dict) or r.get("StartPointX") is None or r.get("StartPointY") is None:
        return None
    return f"x={r['StartPointX']} y={r['StartPointY']}"


def units_inspected(env: Envelope, source: str) -> list[Event]:
    b = env.body
    method = (_text(b.get("InspectionMethod")) or "Human").lower()
    out = []
    for u, unit_id, steps, start, end, result, notes in _judged_units(
            env, "InspectedUnits", "Inspections", "InspectionName", "InspectionStartTime", "InspectionEndTime",
            method):
        defects = [{"code": _text(d.get("DefectCode")), "category": _text(d.get("DefectCategory")),
                    "description": _text(d.get("Description")),
                    "component": _text((d.get("ComponentOfInterest") or {}).get("ReferenceDesignator"))
                    if isinstance(d.get("ComponentOfInterest"), dict) else None,
                    "location": _region(d.get("RegionOfInterest")),
                    "verification": _text(d.get("Verification")),
                    "inspection": _text(ins.get("InspectionName"))}
                   for ins in _list(u, "Inspections", "MessageBody") if isinstance(ins, dict)
                   for d in _list(ins, "DefectsFound", "MessageBody") if isinstance(d, dict)]
        payload = InspectionResultEvent(
            unit_id=unit_id, result=result, start_time=start, end_time=end, inspection_type=method,
            defects=[{k: v for k, v in d.items() if v is not None} for d in defects],
            custom_data={"cfx": _cfx_meta(env, transaction_id=_text(b.get("TransactionID")),
                                          recipe=_text(b.get("RecipeName")),
                                          recipe_revision=_text(b.get("RecipeRevision")), notes=notes or None),
                         "steps": [{"name": s.name, "status": s.status.value} for s in steps]})
        out.append(_create(EventType.INSPECTION_RESULT, payload, source))
    return out


def station_state_changed(env: Envelope, source: str) -> list[Event]:
    b = env.body
    new = parse_resource_state(b.get("NewState"), "MessageBody.NewState")
    if new is None:
        raise CfxError("MessageBody.NewState: missing")
    old = parse_resource_state(b.get("OldState"), "MessageBody.OldState")
    fault = b.get("RelatedFault") if isinstance(b.get("RelatedFault"), dict) else None
    duration = b.get("OldStateDuration")
    payload = AssetStateChangedEvent(
        asset_id=_asset(env), new_state=E10_FAMILY[new // 1000 * 1000], timestamp=env.time_stamp,
        previous_state=E10_FAMILY[old // 1000 * 1000] if old else None,
        reason=_text(fault.get("Description")) if fault else None,
        custom_data={"e10_state": new, "e10_previous": old, "old_state_duration": duration,
                     "cfx": _cfx_meta(env)})
    return [_create(EventType.ASSET_STATE_CHANGED, payload, source)]


def fault_occurred(env: Envelope, source: str) -> list[Event]:
    f = _obj(env.body.get("Fault"), "MessageBody.Fault")
    code = _text(f.get("FaultCode"))
    if not code:
        raise CfxError("MessageBody.Fault.FaultCode: missing")
    severity = SEVERITY.get(str(f.get("Severity") or "Error").lower())
    if severity is None:
        raise CfxError(f"MessageBody.Fault.Severity: {f.get('Severity')!r} is not Information, Warning, Error or "
                       "Alarm")
    notes = list(env.notes)
    payload = AssetFaultEvent(
        asset_id=_asset(env), fault_code=code, fault_message=_text(f.get("Description")) or code,
        timestamp=parse_time(f.get("OccurredAt"), "MessageBody.Fault.OccurredAt", notes) or env.time_stamp,
        severity=severity,
        custom_data={"fault_occurrence_id": _text(f.get("FaultOccurrenceId")), "cause": _text(f.get("Cause")),
                     "lane": f.get("Lane"), "cfx": _cfx_meta(env)})
    return [_create(EventType.ASSET_FAULT, payload, source)]


def fault_cleared(env: Envelope, source: str) -> list[Event]:
    occurrence = _text(env.body.get("FaultOccurrenceId"))
    if not occurrence:
        raise CfxError("MessageBody.FaultOccurrenceId: missing")
    op = env.body.get("Operator") if isinstance(env.body.get("Operator"), dict) else {}
    who = _text(op.get("OperatorIdentifier"))
    payload = AssetFaultEvent(
        asset_id=_asset(env), fault_code=occurrence, fault_message=f"fault {occurrence} cleared"
        + (f" by {who}" if who else ""), timestamp=env.time_stamp, severity=SeverityLevel.INFO, cleared=True,
        cleared_time=env.time_stamp, custom_data={"fault_occurrence_id": occurrence, "cfx": _cfx_meta(env)})
    return [_create(EventType.ASSET_FAULT, payload, source)]


def materials_installed(env: Envelope, source: str) -> list[Event]:
    by_unit: dict[str, list[InstalledComponent]] = {}
    for i, im in enumerate(_list(env.body, "InstalledMaterials", "MessageBody")):
        where = f"MessageBody.InstalledMaterials[{i}]"
        im = _obj(im, where)
        unit_id = _text(im.get("UnitIdentifier"))
        if not unit_id:
            raise CfxError(f"{where}.UnitIdentifier: missing")
        mat = im.get("Material") if isinstance(im.get("Material"), dict) else {}
        pn, package = _text(mat.get("InternalPartNumber")), _text(mat.get("UniqueIdentifier"))
        comps = _list(im, "InstalledComponents", where)
        if comps:  # placed parts from a reel or tray: the package is their lot
            by_unit.setdefault(unit_id, []).extend(
                InstalledComponent(reference_designator=_text(c.get("ReferenceDesignator")) or "", part_number=pn,
                                   lot_number=package) for c in comps if isinstance(c, dict))
        else:  # a serialized sub-assembly built in: it is a child unit
            by_unit.setdefault(unit_id, []).append(InstalledComponent(reference_designator="", part_number=pn,
                                                                      serial_number=package))
    if not by_unit:
        raise CfxError("MessageBody.InstalledMaterials: nothing installed")
    return [_create(EventType.MATERIAL_INSTALLED,
                    MaterialInstalledEvent(unit_id=u, timestamp=env.time_stamp, components=c, station_id=env.source,
                                           custom_data={"cfx": _cfx_meta(
                                               env, transaction_id=_text(env.body.get("TransactionID")))}), source)
            for u, c in by_unit.items()]


def _unit_ids(b: dict, key: str = "Units") -> list[str]:
    ids = [_text(u.get("UnitIdentifier")) for u in _list(b, key, "MessageBody") if isinstance(u, dict)]
    return [i for i in ids if i] or ([_text(b.get("PrimaryIdentifier"))] if _text(b.get("PrimaryIdentifier")) else [])


def work_started(env: Envelope, source: str) -> list[Event]:
    b = env.body
    unit = _text(b.get("PrimaryIdentifier")) or next(iter(_unit_ids(b)), None) or _text(b.get("TransactionID"))
    if not unit:
        raise CfxError("MessageBody: WorkStarted names no unit (PrimaryIdentifier, Units) and no TransactionID")
    wo = b.get("WorkOrderIdentifier") if isinstance(b.get("WorkOrderIdentifier"), dict) else {}
    payload = WorkStartedEvent(unit_id=unit, station_id=_asset(env), timestamp=env.time_stamp,
                               work_order_id=_text(wo.get("WorkOrderId")), lane=b.get("Lane"),
                               custom_data={"units": _unit_ids(b), "recipe": _text(b.get("RecipeName")),
                                            "cfx": _cfx_meta(env, transaction_id=_text(b.get("TransactionID")))})
    return [_create(EventType.WORK_STARTED, payload, source)]


WORK_RESULT = {"completed": "completed", "failed": "failed", "aborted": "aborted", "skipped": "skipped"}


def work_completed(env: Envelope, source: str) -> list[Event]:
    b = env.body
    result = WORK_RESULT.get(str(b.get("Result") or "Completed").lower())
    if result is None:
        raise CfxError(f"MessageBody.Result: {b.get('Result')!r} is not Completed, Failed, Aborted or Skipped")
    unit = _text(b.get("PrimaryIdentifier")) or next(iter(_unit_ids(b)), None) or _text(b.get("TransactionID"))
    if not unit:
        raise CfxError("MessageBody: WorkCompleted names no unit and no TransactionID")
    payload = WorkCompletedEvent(unit_id=unit, station_id=_asset(env), end_time=env.time_stamp,
                                 result=result,  # type: ignore[arg-type]
                                 custom_data={"units": _unit_ids(b),
                                              "cfx": _cfx_meta(env, transaction_id=_text(b.get("TransactionID")))})
    return [_create(EventType.WORK_COMPLETED, payload, source)]


def _units_moved(etype: EventType) -> Callable[[Envelope, str], list[Event]]:
    def adapt(env: Envelope, source: str) -> list[Event]:
        ids = _unit_ids(env.body)
        if not ids:
            raise CfxError("MessageBody: no units (Units, PrimaryIdentifier)")
        return [_create(etype, {"unit_id": u, "station_id": _asset(env), "timestamp": env.time_stamp,
                                "lane": env.body.get("Lane"), "custom_data": {"cfx": _cfx_meta(env)}}, source)
                for u in ids]
    return adapt


def units_disqualified(env: Envelope, source: str) -> list[Event]:
    ids = _unit_ids(env.body, "DisqualifiedUnits")
    if not ids:
        raise CfxError("MessageBody.DisqualifiedUnits: no units")
    reason = _text(env.body.get("Reason")) or _text(env.body.get("Comments")) or "disqualified"
    return [_create(EventType.UNIT_DISQUALIFIED,
                    UnitDisqualifiedEvent(unit_id=u, reason=reason, timestamp=env.time_stamp, station_id=env.source,
                                          custom_data={"cfx": _cfx_meta(env)}), source) for u in ids]


def maintenance_performed(env: Envelope, source: str) -> list[Event]:
    b = env.body
    numbered = [(i, t) for i, t in enumerate(_list(b, "Tasks", "MessageBody")) if isinstance(t, dict)]
    tasks = [t for _, t in numbered]
    hours = sum(_num(t.get("ManHoursConsumed"), f"MessageBody.Tasks[{i}].ManHoursConsumed") or 0 for i, t in numbered)
    if not math.isfinite(hours):
        raise CfxError(f"MessageBody.Tasks: ManHoursConsumed adds up to {hours} hours")
    who = next((_text(t["Operator"].get("OperatorIdentifier")) for t in tasks if isinstance(t.get("Operator"), dict)),
               None)
    parts = [_text(_get(c, "MaterialLocation", "MaterialPackage", "InternalPartNumber"))
             for c in _list(b, "ConsumedMaterials", "MessageBody")]
    description = "; ".join(_text(t.get("Task")) or "" for t in tasks) or _text(b.get("MaintenanceJobCode")) or "-"
    payload = MaintenanceEvent(asset_id=_asset(env), maintenance_type=str(b.get("MaintenanceType") or "Repair").lower(),
                               description=description, timestamp=env.time_stamp, performed_by=who,
                               duration_minutes=hours * 60 if hours else None, parts_replaced=[p for p in parts if p],
                               custom_data={"order": _text(b.get("MaintenanceOrderNumber")),
                                            "job_code": _text(b.get("MaintenanceJobCode")), "cfx": _cfx_meta(env)})
    return [_create(EventType.ASSET_MAINTENANCE, payload, source)]


MAPPERS: dict[str, Callable[[Envelope, str], list[Event]]] = {
    "CFX.Production.TestAndInspection.UnitsTested": units_tested,
    "CFX.Production.TestAndInspection.UnitsInspected": units_inspected,
    "CFX.ResourcePerformance.StationStateChanged": station_state_changed,
    "CFX.ResourcePerformance.FaultOccurred": fault_occurred,
    "CFX.ResourcePerformance.FaultCleared": fault_cleared,
    "CFX.ResourcePerformance.MaintenancePerformed": maintenance_performed,
    "CFX.Production.Assembly.MaterialsInstalled": materials_installed,
    "CFX.Production.WorkStarted": work_started,
    "CFX.Production.WorkCompleted": work_completed,
    "CFX.Production.UnitsArrived": _units_moved(EventType.UNIT_ARRIVED),
    "CFX.Production.UnitsDeparted": _units_moved(EventType.UNIT_DEPARTED),
    "CFX.Production.UnitsDisqualified": units_disqualified,
}
#: Understood, and deliberately not events (the root topic: endpoints saying who and how they are).
NOT_EVENTS = {"CFX.Heartbeat", "CFX.EndpointConnected", "CFX.EndpointShuttingDown", "CFX.WhoIsThereRequest",
              "CFX.WhoIsThereResponse", "CFX.AreYouThereRequest", "CFX.AreYouThereResponse",
              "CFX.GetEndpointInformationRequest", "CFX.GetEndpointInformationResponse", "CFX.NotSupportedResponse"}


def to_events(env: Envelope, source: str) -> list[Event]:
    """The normalized events for one envelope ([] for root messages and types this agent does not map)."""
    mapper = MAPPERS.get(env.message_name)
    return mapper(env, source) if mapper is not None else []


# ------------------------------------------------------------------------------------------------ out
def _derived_id(event_id: str, k: int) -> str:
    """A GUID for the k-th part of an event (a test, a measurement): the same on every resend, and cheap (a
    uuid5 per measurement was most of the mapping's cost)."""
    return f"{event_id[:24]}{(int(event_id[24:], 16) ^ (k * 0x9E3779B1)) & 0xFFFFFFFFFFFF:012x}"


def _measurement_out(m: dict[str, Any], seq: int, when: str | None, uid: str) -> dict[str, Any]:
    base = {"UniqueIdentifier": uid, "MeasurementName": m.get("name"), "TimeRecorded": when,
            "Sequence": seq, "Result": CFX_RESULT[TestResult(m["status"])], "CRDs": None}
    value = m.get("value")
    if isinstance(value, bool):
        return {"$type": "CFX.Structures.BooleanMeasurement, CFX", "Value": value, "ExpectedValue": True, **base}
    if isinstance(value, (int, float)):
        unit = m.get("unit") or None
        return {"$type": "CFX.Structures.NumericMeasurement, CFX",
                "MeasuredValue": {"Value": value, "ValueUnits": unit, "ExpectedValue": m.get("nominal"),
                                  "ExpectedValueUnits": unit if m.get("nominal") is not None else None,
                                  "MinimumAcceptableValue": m.get("low_limit"),
                                  "MinimumAcceptableValueUnits": unit if m.get("low_limit") is not None else None,
                                  "MaximumAcceptableValue": m.get("high_limit"),
                                  "MaximumAcceptableValueUnits": unit if m.get("high_limit") is not None else None},
                **base}
    return {"$type": "CFX.Structures.TextMeasurement, CFX", "Value": None if value is None else str(value),
            "ExpectedValue": None, **base}


def _iso(v: Any) -> str | None:
    from .cfx import format_time

    if v is None:
        return None
    when = v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # as the reader takes them
    return format_time(when)


#: The sources that report other equipment's events (``Event.source`` is ``<kind>:<name>``): CFX ingest, MQTT
#: devices. Everything else (serial, GPIO, the simulated station, ``fixture-agent publish``) is the fixture's own.
FOREIGN_SOURCES = ("cfx", "mqtt")
#: AMQP application property: the handles of the relays a message passed through, comma-separated, oldest first
RELAYED_BY = "fixture-agent-relayed-by"


def is_own(event: Event) -> bool:
    """Did the fixture itself report this event? Not when an ingest source journaled it (its ``source`` names
    the CFX or MQTT ingest) or when it carries another sender's CFX origin (``custom_data.cfx``)."""
    kind = event.source.split(":", 1)[0]
    if kind in FOREIGN_SOURCES:
        return False
    custom = event.payload.get("custom_data") if isinstance(event.payload, dict) else None
    return not (isinstance(custom, dict) and isinstance(custom.get("cfx"), dict))


def cfx_origin(event: Event) -> dict[str, Any]:
    """``custom_data.cfx`` of an event the CFX ingest journaled ({} for others)."""
    custom = event.payload.get("custom_data") if isinstance(event.payload, dict) else None
    meta = custom.get("cfx") if isinstance(custom, dict) else None
    return meta if isinstance(meta, dict) else {}


def relay_cfx(event: Event) -> dict[str, Any] | None:
    """The envelope that relays another sender's event as it sent it (its handle as Source, its UniqueID — or one
    derived from it for one unit of several —, its TimeStamp, its body: RecipeName, symptoms and defects as CFX
    structures), or None when the event carries no original (an MQTT device's, or one journaled while the
    endpoint did not relay)."""
    origin = cfx_origin(event)
    original = origin.get("original")
    handle = origin.get("handle")
    if not isinstance(original, dict) or not isinstance(handle, str) or not handle:
        return None
    when = datetime.fromisoformat(original["time_stamp"])
    return envelope_doc(original["message"], original["body"], source=handle, when=when,
                        unique_id=original["unique_id"])


def to_cfx(event: Event, handle: str) -> dict[str, Any] | None:
    """The CFX envelope (a dict, SDK key order) the endpoint publishes for one of its own events, or None."""
    p = event.payload if isinstance(event.payload, dict) else {}
    t = event.event_type
    when = event.metadata.timestamp
    if t == EventType.TEST_RESULT.value:
        tests = []
        k = 0
        for i, s in enumerate(p.get("steps") or []):
            k += 1
            test_id = _derived_id(event.id, k)
            ms = []
            for j, m in enumerate(s.get("measurements") or []):
                k += 1
                ms.append(_measurement_out(m, j + 1, _iso(s.get("end_time")), _derived_id(event.id, k)))
            tests.append({
                "UniqueIdentifier": test_id, "TestName": s.get("name"),
                "TestStartTime": _iso(s.get("start_time")), "TestEndTime": _iso(s.get("end_time")),
                "TestConditions": [], "TestProcedure": None, "Comments": None,
                "Result": CFX_RESULT[TestResult(s["status"])], "Error": s.get("message"),
                "SymptomsFound": [], "DefectsFound": [],
                "Measurements": ms})
        cd = p.get("custom_data") or {}
        body = {"TransactionId": _derived_id(event.id, 0xFFFFF),
                "TestMethod": _test_method(cd.get("test_type")),
                "Tester": {"OperatorIdentifier": p.get("operator_id") or handle, "ActorType":
                           "Human" if p.get("operator_id") else "RemoteSystem", "LastName": None, "FirstName": None,
                           "LoginName": None},
                "RecipeName": p.get("part_number"), "RecipeRevision": p.get("revision"),
                "SamplingInformation": None,
                "TestedUnits": [{"UnitIdentifier": p.get("unit_id"), "UnitPositionNumber": None,
                                 "OverallResult": CFX_RESULT[TestResult(p["result"])], "Tests": tests}]}
        name = "CFX.Production.TestAndInspection.UnitsTested"
    elif t == EventType.ASSET_STATE_CHANGED.value:
        cd = p.get("custom_data") or {}
        new = cd.get("e10_state") or E10_CODE.get(AssetState(p["new_state"]), 6000)
        old = cd.get("e10_previous") or (E10_CODE.get(AssetState(p["previous_state"])) if p.get("previous_state")
                                        else None)
        body = {"OldState": str(old) if old else None, "OldStateDuration": None, "NewState": str(new),
                "RelatedFault": None}
        name = "CFX.ResourcePerformance.StationStateChanged"
    elif t == EventType.ASSET_FAULT.value:
        occurrence = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fixture-agent:{p.get('asset_id')}:{p.get('fault_code')}"))
        if p.get("cleared"):
            body = {"FaultOccurrenceId": occurrence, "Operator": None}
            name = "CFX.ResourcePerformance.FaultCleared"
        else:
            body = {"Fault": {"TransactionID": None, "Cause": "MechanicalFailure",
                              "Severity": CFX_SEVERITY.get(SeverityLevel(p.get("severity", "error")), "Error"),
                              "FaultCode": p.get("fault_code"), "FaultOccurrenceId": occurrence, "Lane": None,
                              "Stage": None, "SideLocation": "Unknown", "AccessType": "Unknown",
                              "Description": (p.get("fault_message") or "")[:1024], "DescriptionTranslations": {},
                              "OccurredAt": _iso(p.get("timestamp")), "DueDateTime": None}}
            name = "CFX.ResourcePerformance.FaultOccurred"
    else:
        return None
    return envelope_doc(name, body, source=handle, when=when, unique_id=event.id)


def _test_method(test_type: Any) -> str:
    known = {"ict": "ICT", "fct": "FCT", "fpt": "FPT", "bst": "BST", "human": "Human"}
    return known.get(str(test_type or "").lower(), "Automated")


PUBLISHED_TYPES = (EventType.TEST_RESULT.value, EventType.ASSET_STATE_CHANGED.value, EventType.ASSET_FAULT.value)


def timespan(seconds: float) -> str:
    from datetime import timedelta

    return format_timespan(timedelta(seconds=seconds))
