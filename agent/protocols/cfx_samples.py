"""The CFX seed's sample explorer: messages a test station meets, as the SDK writes them (``reference/cfx.md`` §7).

``fixture-agent cfx samples --list | --show NAME | --convert NAME``. The samples are also what the tests and the
benchmark feed the agent, so each one is known to map.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .cfx import envelope_doc

HANDLE = "Acme.ICT3070.SN40117"
WHEN = datetime(2026, 11, 23, 8, 31, 7, 123456, tzinfo=timezone.utc)
OPERATOR = {"OperatorIdentifier": "BADGE1022", "ActorType": "Human", "LastName": "Meyer", "FirstName": "Lena",
            "LoginName": "lmeyer"}


def _numeric(name: str, value: float, unit: str, low: float | None, high: float | None, expected: float | None,
             result: str, seq: int) -> dict[str, Any]:
    return {"$type": "CFX.Structures.NumericMeasurement, CFX",
            "MeasuredValue": {"Value": value, "ValueUnits": unit, "ExpectedValue": expected,
                              "ExpectedValueUnits": unit, "MinimumAcceptableValue": low,
                              "MinimumAcceptableValueUnits": unit, "MaximumAcceptableValue": high,
                              "MaximumAcceptableValueUnits": unit},
            "UniqueIdentifier": f"a1e0c3f2-2222-4a2b-9c3d-{seq:012d}", "MeasurementName": name,
            "TimeRecorded": "2026-11-23T09:30:58.3000000+01:00", "Sequence": seq, "Result": result, "CRDs": None}


def _test(name: str, result: str, measurements: list[dict], *, symptoms: list | None = None,
          defects: list | None = None, seq: int = 1) -> dict[str, Any]:
    return {"UniqueIdentifier": f"a1e0c3f2-1111-4a2b-9c3d-{seq:012d}", "TestName": name,
            "TestStartTime": "2026-11-23T09:30:58.1000000+01:00", "TestEndTime": "2026-11-23T09:30:58.3500000+01:00",
            "TestConditions": [], "TestProcedure": None, "Comments": None, "Result": result, "Error": None,
            "SymptomsFound": symptoms or [], "DefectsFound": defects or [], "Measurements": measurements}


def _units_tested(method: str, recipe: str, units: list[tuple[str, str, list]]) -> dict[str, Any]:
    return envelope_doc("CFX.Production.TestAndInspection.UnitsTested", {
        "TransactionId": "0b7d9a4e-5c1f-4e8a-b2d3-9f6e1a2c3d4b", "TestMethod": method, "Tester": OPERATOR,
        "RecipeName": recipe, "RecipeRevision": "C",
        "SamplingInformation": {"SamplingMethod": "NoSampling", "LotSize": None, "SampleSize": None},
        "TestedUnits": [{"UnitIdentifier": u, "UnitPositionNumber": i + 1, "OverallResult": r, "Tests": tests}
                        for i, (u, r, tests) in enumerate(units)]},
        source=HANDLE, when=WHEN, unique_id="6f1c2a7e-3b9d-4c55-9a0e-2d8f7b1e4c90")


def _units_inspected(method: str, unit: str, result: str, defects: list) -> dict[str, Any]:
    return envelope_doc("CFX.Production.TestAndInspection.UnitsInspected", {
        "TransactionId": "1c8e0b5f-6d2a-4f9b-a3e4-0a7f2b3c4d5e", "InspectionMethod": method,
        "SamplingInformation": None, "Inspector": None, "RecipeName": "PCB4711_TOP", "RecipeRevision": "B",
        "InspectedUnits": [{"UnitIdentifier": unit, "UnitPositionNumber": 1, "OverallResult": result,
                            "Inspections": [{"UniqueIdentifier": "b2f1d4e3-0000-4a2b-9c3d-000000000001",
                                             "InspectionName": f"{method}_FULL", "InspectionStartTime": None,
                                             "InspectionEndTime": None, "TestProcedure": None, "Comments": None,
                                             "Result": result, "Verification": "NotVerifiedYet",
                                             "VerificationDetail": None, "Error": None,
                                             "DefectsFound": defects, "Symptoms": [], "Measurements": [],
                                             "RefNo": None}],
                            "Verification": "NotVerifiedYet", "TotalInspectionCount": 1}],
        "InspectedPanel": None}, source="Acme.AOI9.SN777", when=WHEN,
        unique_id="7e2d3b8f-4c0a-4d66-8b1f-3e9a8c2f5d01")


def _defect(code: str, category: str, ref: str, description: str) -> dict[str, Any]:
    return {"UniqueIdentifier": "a1e0c3f2-6666-4a2b-9c3d-000000000006", "DefectCode": code,
            "DefectCategory": category, "Description": description, "Comments": None,
            "ComponentOfInterest": {"ReferenceDesignator": ref, "UnitPosition": None, "PartNumber": None},
            "RegionOfInterest": None, "DefectImages": [], "Priority": 1, "ConfidenceLevel": 80.0,
            "RelatedMeasurements": [], "RelatedSymptoms": [], "Verification": "NotVerifiedYet",
            "VerificationDetail": None}


def _fault(code: str, cause: str, severity: str, description: str) -> dict[str, Any]:
    return envelope_doc("CFX.ResourcePerformance.FaultOccurred", {"Fault": {
        "TransactionID": None, "Cause": cause, "Severity": severity, "FaultCode": code,
        "FaultOccurrenceId": "9d8c7b6a-5f4e-4d3c-8b2a-1908f7e6d5c4", "Lane": None,
        "Stage": {"StageSequence": 1, "StageName": "TEST", "StageType": "Work"}, "SideLocation": "Unknown",
        "AccessType": "Local", "Description": description, "DescriptionTranslations": {},
        "OccurredAt": "2026-11-23T09:39:59.8000000+01:00", "DueDateTime": None}},
        source=HANDLE, when=WHEN, unique_id="5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c")


def _work(name: str, body: dict[str, Any], uid: str) -> dict[str, Any]:
    return envelope_doc(f"CFX.Production.{name}", body, source=HANDLE, when=WHEN, unique_id=uid)


UNIT_POSITION = {"UnitIdentifier": "PNL000123", "PositionNumber": 1, "PositionName": "P1", "X": 0.0, "Y": 0.0,
                 "Z": None, "Rotation": 0.0, "FlipX": False, "FlipY": False, "Status": "Pass"}


def _materials(kind: str, items: list[dict]) -> dict[str, Any]:
    return envelope_doc("CFX.Production.Assembly.MaterialsInstalled", {
        "TransactionID": "3a4b5c6d-7e8f-4a0b-9c1d-2e3f4a5b6c7d", "InstalledMaterials": items},
        source=f"Acme.{kind}.SN5150", when=WHEN, unique_id="8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c4d")


SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "ict-units-tested": ("ICT: one panel position, a resistor in limits, a 3V3 rail failing with a symptom and a "
                         "defect, a boolean boot flag", _units_tested("ICT", "PCB4711_ICT", [("PNL000123", "Failed", [
                             _test("R12_RES", "Passed", [_numeric("R12_VALUE", 10020.0, "Ohm", 9900.0, 10100.0,
                                                                  10000.0, "Passed", 1)], seq=1),
                             _test("VCC_3V3", "Failed", [_numeric("VCC_3V3_VALUE", 3.05, "V", 3.2, 3.4, 3.3,
                                                                  "Failed", 2)],
                                   symptoms=[{"UniqueIdentifier": "a1e0c3f2-4444-4a2b-9c3d-000000000004",
                                              "SymptomCode": "VOUT_LOW", "SymptomCategory": "Electrical Tests",
                                              "Description": "3V3 rail below limit", "Comments": None,
                                              "Status": "NewlyDiscovered", "ComponentsOfInterest": [],
                                              "RegionOfInterest": None, "Priority": 1, "RelatedMeasurements": []}],
                                   defects=[_defect("OPEN_PIN", "Solder", "U7.3", "Suspected open on U7 pin 3")],
                                   seq=2),
                             _test("BOOT_OK", "Passed", [{"$type": "CFX.Structures.BooleanMeasurement, CFX",
                                                          "Value": True, "ExpectedValue": True,
                                                          "UniqueIdentifier": "a1e0c3f2-8888-4a2b-9c3d-000000000008",
                                                          "MeasurementName": "BOOT_FLAG", "TimeRecorded": None,
                                                          "Sequence": 3, "Result": "Passed", "CRDs": None}], seq=3)])])),
    "fct-units-tested": ("FCT: two boards of a panel, both passing, supply current and firmware version",
                         _units_tested("FCT", "PCB4711_FCT", [
                             ("SN2611230001", "Passed", [
                                 _test("I_SUPPLY", "Passed", [_numeric("I_SUPPLY", 0.182, "A", 0.1, 0.25, None,
                                                                       "Passed", 1)], seq=1),
                                 _test("FW_VERSION", "Passed", [{"$type": "CFX.Structures.TextMeasurement, CFX",
                                                                 "Value": "1.4.2", "ExpectedValue": "1.4.2",
                                                                 "UniqueIdentifier": "c0de0000-0000-4000-8000-0001",
                                                                 "MeasurementName": "FW", "TimeRecorded": None,
                                                                 "Sequence": 2, "Result": "Passed",
                                                                 "CRDs": None}], seq=2)]),
                             ("SN2611230002", "Passed", [
                                 _test("I_SUPPLY", "Passed", [_numeric("I_SUPPLY", 0.176, "A", 0.1, 0.25, None,
                                                                       "Passed", 3)], seq=3)])])),
    "aoi-units-inspected": ("AOI: a panel failing on a tombstoned capacitor",
                            _units_inspected("AOI", "PNL000123", "Failed",
                                             [_defect("TOMBSTONE", "Placement", "C14", "C14 tombstoned")])),
    "spi-units-inspected": ("SPI: solder paste inspection, passed",
                            _units_inspected("SPI", "PNL000124", "Passed", [])),
    "work-started": ("Work started on a panel (ICT), with its recipe and work order",
                     _work("WorkStarted", {"PrimaryIdentifier": "PNL000123", "HermesIdentifier": None,
                                           "TransactionID": "0b7d9a4e-5c1f-4e8a-b2d3-9f6e1a2c3d4b", "Lane": 1,
                                           "UnitCount": 1, "Units": [UNIT_POSITION], "RecipeName": "PCB4711_ICT",
                                           "Revision": "C", "RelevantSurface": "Unspecified",
                                           "WorkOrderIdentifier": {"WorkOrderId": "WO-2026-1123", "Batch": None}},
                           "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d")),
    "work-completed-pass": ("Work completed (the test passed or failed: pass/fail lives in UnitsTested)",
                            _work("WorkCompleted", {"TransactionID": "0b7d9a4e-5c1f-4e8a-b2d3-9f6e1a2c3d4b",
                                                    "Result": "Completed", "PrimaryIdentifier": "PNL000123",
                                                    "HermesIdentifier": None, "UnitCount": 0, "Units": [],
                                                    "PerformanceImpacts": None},
                                  "1b2c3d4e-5f6a-4b7c-8d9e-9f0a1b2c3d4e")),
    "work-completed-fail": ("Work failed (the station could not finish: no unit id known, only the transaction)",
                            _work("WorkCompleted", {"TransactionID": "0b7d9a4e-5c1f-4e8a-b2d3-9f6e1a2c3d4b",
                                                    "Result": "Failed", "PrimaryIdentifier": None,
                                                    "HermesIdentifier": None, "UnitCount": 0, "Units": [],
                                                    "PerformanceImpacts": [{"Cause": "MechanicalFailure"}]},
                                  "2c3d4e5f-6a7b-4c8d-9e0f-0a1b2c3d4e5f")),
    "smt-materials-installed": ("SMT: resistors placed from a reel (the reel is the lot)", _materials("SMT", [{
        "UnitIdentifier": "PNL000123", "UnitPositionNumber": 1, "QuantityInstalled": 2,
        "Material": {"UniqueIdentifier": "REEL-0042-7781", "InternalPartNumber": "RES-10K-0402"},
        "InstalledComponents": [{"ReferenceDesignator": "R1"}, {"ReferenceDesignator": "R2"}]}])),
    "th-materials-installed": ("TH/box build: a serialized power module built into the unit (a child unit)",
                               _materials("TH", [{"UnitIdentifier": "SN2611230001", "UnitPositionNumber": 1,
                                                  "QuantityInstalled": 1,
                                                  "Material": {"UniqueIdentifier": "PSU-0091-5523",
                                                               "InternalPartNumber": "PSU-24V-60W"},
                                                  "InstalledComponents": []}])),
    "temperature-fault": ("Fault: oven temperature out of range", _fault("E-TEMP-03", "ProcessError", "Alarm",
                                                                          "Chamber temperature 82 C over 80 C")),
    "feeder-fault": ("Fault: a feeder is empty", _fault("E-FEED-12", "Refill", "Warning",
                                                         "Feeder 12 empty (RES-10K-0402)")),
    "fault-cleared": ("The fault above cleared by an operator", envelope_doc(
        "CFX.ResourcePerformance.FaultCleared", {"FaultOccurrenceId": "9d8c7b6a-5f4e-4d3c-8b2a-1908f7e6d5c4",
                                                 "Operator": OPERATOR},
        source=HANDLE, when=WHEN, unique_id="4d3c2b1a-0f9e-4d8c-8b7a-6f5e4d3c2b1a")),
    "station-state-changed": ("Station went from regular work (1100) to repair (5300), as the SDK writes codes",
                              envelope_doc("CFX.ResourcePerformance.StationStateChanged",
                                           {"OldState": "1100", "OldStateDuration": "00:12:31", "NewState": "5300",
                                            "RelatedFault": None},
                                           source=HANDLE, when=WHEN, unique_id="3c9a1f52-7a1e-4f0b-8f77-1d2e3f4a5b6c")),
}
