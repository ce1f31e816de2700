"""What a report is filed under and what it carries, through the uplink to the strict stand-in (issue 15 items 5,
6, 9, 10): part-number rules from config, results that wait for one, sub units from material.installed, misc
infos, clock corrections that fit WATS' lengths, identifiers WATS refuses."""

from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from agent.cli import main as cli_main
from agent.sinks.wats_plugin import WatsSinkSection
from agent.events import Event, EventBus, Journal
from agent.protocols import cfx
from agent.protocols.cfx_mapping import to_events
from agent.protocols.cfx_samples import SAMPLES
from agent.sinks.wats import WatsSink
from tests.conftest import wait_for
from tests.wats_standin import WatsStandIn


@pytest.fixture
def wats():
    s = WatsStandIn()
    yield s
    s.close()


def cfg_for(wats, tmp_path, **kw) -> WatsSinkSection:
    token = tmp_path / "wats.token"
    token.write_text(wats.token)
    token.chmod(0o600)
    base = {"url": wats.url, "token_file": str(token), "process_codes": {"test": 50, "ict": 50, "aoi": 50,
                                                                          "spi": 50, "functional": 50, "inspection": 10},
            "requests_per_minute": 1_000_000, "require_clock_sync": False, "retry_max": "0.5s", "timeout": "2s"}
    base.update(kw)
    return msgspec.convert(base, WatsSinkSection)


class Uplink:
    def __init__(self, tmp_path, cfg):
        self.journal = Journal(tmp_path / "journal.db", max_bytes=1 << 30)
        self.bus = EventBus(self.journal)
        self.sink = WatsSink(cfg, station="st-1", location="Line 1", purpose="Production", data_dir=tmp_path,
                             journal=self.journal)
        self.sub = self.bus.register_handler(self.sink)
        self.bus.start()

    def close(self):
        self.bus.stop()
        self.sink.close()
        self.journal.close()


def cfx_results(name: str) -> list[Event]:
    return [e for e in to_events(cfx.decode(cfx.encode(SAMPLES[name][1]))[0], "cfx:plant")
            if e.event_type in ("test.result", "inspection.result")]


def test_cfx_results_wait_for_a_rule_then_go_when_one_is_added(wats, tmp_path):
    """Every CFX result was dead-lettered 'part_number is required' although it carried a RecipeName; now they
    wait, status names the recipe, and a rule added and a restart send them under the rule's part number."""
    events = cfx_results("ict-units-tested") + cfx_results("fct-units-tested")
    up = Uplink(tmp_path, cfg_for(wats, tmp_path))
    up.bus.publish_many(events)
    assert wait_for(lambda: len(up.journal.dead_letters()) == len(events), 10)
    assert all("waiting for a part-number rule" in d.reason for d in up.journal.dead_letters())
    assert wats.unique_reports == 0
    up.close()

    (tmp_path / "agent.toml").write_text(f"""
[agent]
station = "st-1"
location = "Line 1"
purpose = "Production"
data_dir = "{tmp_path}"
[journal]
path = "{tmp_path / 'journal.db'}"
[sinks.wats]
url = "{wats.url}"
token_file = "{tmp_path / 'wats.token'}"
process_codes = {{ test = 50 }}
""")
    import contextlib
    import io
    import json

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["status", "-c", str(tmp_path / "agent.toml"), "--json"]) == 0
    waiting = json.loads(out.getvalue())["wats"]["waiting_for_part_number"]
    assert waiting == {"PCB4711_ICT": 1, "PCB4711_FCT": 2}

    rules = [{"match": "PCB4711_ICT", "part_number": "PCB-4711", "revision": "C"},
             {"match": "PCB4711_*", "part_number": "PCB-4711-FCT", "process_code": 90}]
    up = Uplink(tmp_path, cfg_for(wats, tmp_path, products=rules))
    assert wait_for(lambda: wats.unique_reports == len(events), 10), wats.rejected
    assert wait_for(lambda: up.journal.dead_letters() == [], 5)
    up.close()
    filed = {(r["sn"], r["pn"], r["rev"], r["processCode"]) for r in wats.reports.values()}
    assert {f[1:] for f in filed if f[1] == "PCB-4711"} == {("PCB-4711", "C", 50)}  # the first rule matches ICT
    assert {f[1:] for f in filed if f[1] != "PCB-4711"} == {("PCB-4711-FCT", "1", 90)}  # FCT: the second one
    assert len(filed) == 3
    assert wats.audit == []
    misc = {m["description"]: m.get("text") for r in wats.reports.values() for m in r["miscInfos"]}
    assert misc["Recipe"] in ("PCB4711_ICT", "PCB4711_FCT")


def test_the_fixtures_default_part_number_is_not_a_products(wats, tmp_path):
    """default_part_number is for the fixture's own self-tests: CFX results were all filed under it."""
    up = Uplink(tmp_path, cfg_for(wats, tmp_path, default_part_number="FIXTURE-ICT-3"))
    own = Event.create("test.result", {"unit_id": "FX-1", "result": "pass", "custom_data": {"test_type": "test"},
                                       "start_time": datetime.now(timezone.utc) - timedelta(seconds=1)})
    up.bus.publish_many([*cfx_results("ict-units-tested"), own])
    assert wait_for(lambda: wats.unique_reports == 1 and len(up.journal.dead_letters()) == 1, 10), wats.rejected
    reason = up.journal.dead_letters()[0].reason
    up.close()
    assert wats.reports[own.id]["pn"] == "FIXTURE-ICT-3"
    assert "recipe 'PCB4711_ICT' matches no [[sinks.wats.products]] rule" in reason


def test_recipe_as_part_number(wats, tmp_path):
    up = Uplink(tmp_path, cfg_for(wats, tmp_path, recipe_as_part_number=True))
    up.bus.publish_many(cfx_results("aoi-units-inspected"))
    assert wait_for(lambda: wats.unique_reports == 1, 10), wats.rejected
    up.close()
    report = next(iter(wats.reports.values()))
    assert (report["pn"], report["rev"]) == ("PCB4711_TOP", "B")
    # a failed AOI report shows what failed: the inspection, and under it the defect with component and code
    aoi = report["root"]["steps"][0]
    assert aoi["status"] == "F" and aoi["stepType"] == "SequenceCall"
    defect = aoi["steps"][0]
    assert defect["name"] == "C14 TOMBSTONE" and defect["status"] == "F"
    assert "category: Placement" in defect["reportText"]
    assert wats.audit == []


def test_a_false_call_does_not_fail_the_board(wats, tmp_path):
    """An AOI defect rejected at verification (a false call) is shown but does not fail the report."""
    import json as _json

    doc = _json.loads(cfx.encode(SAMPLES["aoi-units-inspected"][1]))
    unit = doc["MessageBody"]["InspectedUnits"][0]
    unit["OverallResult"] = "Passed"
    unit["Inspections"][0]["Result"] = "Passed"
    unit["Inspections"][0]["DefectsFound"][0]["Verification"] = "DefectRejected"
    (ev,) = to_events(cfx.decode(_json.dumps(doc).encode())[0], "cfx:plant")
    up = Uplink(tmp_path, cfg_for(wats, tmp_path, recipe_as_part_number=True))
    up.bus.publish(ev)
    assert wait_for(lambda: wats.unique_reports == 1, 10), wats.rejected
    up.close()
    report = wats.reports[ev.id]
    assert report["result"] == "P"
    defect = report["root"]["steps"][0]["steps"][0]
    assert defect["status"] == "P" and "verification: DefectRejected" in defect["reportText"]


def test_one_report_the_agent_cannot_build_never_holds_the_others(wats, tmp_path, monkeypatch):
    """A defect of ours on one event (here: a report builder that raises something unexpected) dead-letters that
    event; before, anything but a PermanentError was retried for ever and nothing behind it reached WATS."""
    from agent.sinks.wats import reports as wats_module

    real = wats_module.to_wsjf

    def flaky(event, station):
        if event.payload["unit_id"] == "POISON":
            raise OverflowError("int too large to convert to float")
        return real(event, station)

    monkeypatch.setattr(wats_module, "to_wsjf", flaky)
    now = datetime.now(timezone.utc) - timedelta(seconds=1)
    evs = [Event.create("test.result", {"unit_id": u, "part_number": "PN", "result": "pass", "start_time": now})
           for u in ("POISON", "GOOD1", "GOOD2")]
    up = Uplink(tmp_path, cfg_for(wats, tmp_path))
    up.bus.publish_many(evs)
    assert wait_for(lambda: wats.unique_reports == 2, 10), wats.rejected
    reasons = [d.reason for d in up.journal.dead_letters()]
    up.close()
    assert len(reasons) == 1 and "an agent bug" in reasons[0] and "OverflowError" in reasons[0]


def test_material_installed_becomes_the_units_sub_units(wats, tmp_path):
    now = datetime.now(timezone.utc)
    material = Event.create("material.installed", {
        "unit_id": "BOX-1", "timestamp": now - timedelta(seconds=5),
        "components": [{"reference_designator": "PCBA1", "part_number": "PCBA-100", "serial_number": "P-77"},
                       {"reference_designator": "R1", "part_number": "RES-10K", "lot_number": "L5"}],
        "custom_data": {"part_number": "BOX-PN"}})
    result = Event.create("test.result", {
        "unit_id": "BOX-1", "part_number": "BOX-PN", "result": "pass", "start_time": now - timedelta(seconds=2),
        "sub_units": [{"part_number": "PSU-9", "serial_number": "PSU-1", "revision": "B", "part_type": "PSU"}],
        "custom_data": {"firmware": "1.4.2", "temperature_c": 23.5, "fixture": {"slot": 3, "name": "nest A"},
                        "note": "ü" * 300}})
    up = Uplink(tmp_path, cfg_for(wats, tmp_path))
    up.bus.publish_many([material, result])
    assert wait_for(lambda: wats.unique_reports == 1, 10), wats.rejected
    up.close()
    report = wats.reports[result.id]
    assert report["subUnits"] == [
        {"partType": "PSU", "pn": "PSU-9", "sn": "PSU-1", "rev": "B"},
        {"partType": "PCBA1", "pn": "PCBA-100", "sn": "P-77", "rev": "1"}]  # the reel R1 has no serial: no unit
    misc = {m["description"]: m for m in report["miscInfos"]}
    assert misc["firmware"] == {"description": "firmware", "text": "1.4.2"}
    assert misc["temperature_c"] == {"description": "temperature_c", "numeric": 23.5}
    assert misc["fixture.slot"]["numeric"] == 3 and misc["fixture.name"]["text"] == "nest A"
    assert len(misc["note"]["text"]) == 100 and misc["note"]["text"].endswith("…")
    assert ("BOX-1", "BOX-PN", "P-77", "PCBA-100") in wats.children


def test_a_clock_corrected_report_fits_wats_lengths(wats, tmp_path):
    """The ClockCorrection misc info was 129-143 characters: every clock-corrected report was refused."""
    future = datetime.now(timezone.utc) + timedelta(hours=3)
    ev = Event.create("test.result", {"unit_id": "SN1", "part_number": "PN", "result": "pass",
                                      "start_time": future, "end_time": future + timedelta(seconds=1)})
    up = Uplink(tmp_path, cfg_for(wats, tmp_path))
    up.bus.publish(ev)
    assert wait_for(lambda: wats.unique_reports == 1, 10), wats.rejected
    up.close()
    report = wats.reports[ev.id]
    note = next(m for m in report["miscInfos"] if m["description"] == "ClockCorrection")
    assert len(note["text"]) <= 100 and "in the future" in note["text"]
    assert "in the future" in report["uut"]["comment"] and len(report["uut"]["comment"]) > len(note["text"])


@pytest.mark.parametrize("policy,outcome", [("refuse", "dead letter"), ("replace", "SN_1_A")])
def test_identifiers_with_characters_wats_refuses(wats, tmp_path, policy, outcome):
    ev = Event.create("test.result", {"unit_id": "SN/1*A", "part_number": "PN", "result": "pass",
                                      "start_time": datetime.now(timezone.utc) - timedelta(seconds=1)})
    up = Uplink(tmp_path, cfg_for(wats, tmp_path, identifier_chars=policy))
    up.bus.publish(ev)
    if outcome == "dead letter":
        assert wait_for(lambda: up.journal.dead_letters(), 10)
        reason = up.journal.dead_letters()[0].reason
        assert "unit_id (serial number) 'SN/1*A' contains * /" in reason and "identifier_chars" in reason
        assert wats.unique_reports == 0
    else:
        assert wait_for(lambda: wats.unique_reports == 1, 10), wats.rejected
        assert wats.reports[ev.id]["sn"] == outcome
    up.close()
