"""The conformance corpus (tests/wats_corpus.py) through each source's own parser and the WSJF mapping, checked by
the contract's validator and status audit (tests/wats_contract.py, written from reference/wats-api.md, not from
the agent). The quick form of tests/integration/test_wats_conformance.py, which sends the same corpus through a
running agent: this one runs in a second and names the first report that breaks the contract."""

import random
import re
from datetime import datetime, timezone

import pytest

from agent.cli import _parse_line
from agent.protocols import cfx, jsonlines
from agent.protocols.cfx_mapping import to_events
from agent.protocols import mqtt_adapters
from agent.protocols.wsjf import MappingError, ProductRule, Station, to_wsjf
from tests import wats_corpus
from tests.wats_contract import audit_report, check_report

STATION = Station(machine_name="corpus-pi", location="Line 9", purpose="Conformance", agent_version="test",
                  process_codes={"test": 50, "selftest": 90, "ict": 50, "inspection": 10, "functional": 50},
                  default_part_number="FIXTURE-9",
                  products=(ProductRule(match=f"{wats_corpus.RULE_RECIPE}*", part_number="PCBA-RULED", revision="R1"),
                            ProductRule(match=f"{wats_corpus.CFX_RECIPE}*", part_number="PCB-4711")))


def events_of_corpus(seed: int):
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    out, refused = [], []
    lines, exp_pub = wats_corpus.published(rng, 60, now)
    for i, line in enumerate(lines):
        out.append(_parse_line(line.encode(), f"line {i + 1}", "cli"))
    msgs, exp_mqtt = wats_corpus.mqtt_messages(rng, 20)
    for topic, doc in msgs:
        adapter = mqtt_adapters.selftest if topic.startswith("devices/") else mqtt_adapters.test_result
        try:
            out += adapter(mqtt_adapters.Message(topic, topic.split("/")[1], doc, now, "mqtt:mqtt"))
        except mqtt_adapters.AdapterError as e:
            refused.append(str(e))
    docs, exp_cfx = wats_corpus.cfx_messages(rng, 16)
    for doc in docs:
        out += to_events(cfx.decode(cfx.encode(doc))[0], "cfx:cfx")
    serial, exp_serial = wats_corpus.serial_lines(rng, 8)
    for line in serial:
        out += jsonlines.to_events(jsonlines.parse(line), asset_id="FX-9", source="serial:fixture")
    expected = exp_pub.reports + exp_mqtt.reports + exp_cfx.reports + exp_serial.reports
    refusals = exp_pub.refusals + exp_mqtt.refusals + exp_cfx.refusals
    return out, refused, expected, refusals


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_report_of_the_corpus_keeps_the_contract(seed):
    events, refused_at_source, expected, refusals = events_of_corpus(seed)
    reports, mapping_refusals = [], []
    for e in events:
        try:
            reports.append(to_wsjf(e, STATION))
        except MappingError as err:
            mapping_refusals.append(str(err))
    assert len(reports) == expected >= 100
    for r in reports:
        assert check_report(r, {50: "PCBA test", 90: "Burn In", 10: "SW Debug"}) == [], r["sn"]
        assert audit_report(r) == [], r["sn"]
    got = sorted(refused_at_source + mapping_refusals)
    assert len(got) == len(refusals)
    for reason in refusals:  # each designed refusal with its own reason
        hit = next((g for g in got if reason in g), None)
        assert hit is not None, (reason, got)
        got.remove(hit)
    # the corpus covers what the issue names
    ops = {m["compOp"] for r in reports for m in _all(r["root"], "numericMeas")}
    assert ops >= set(wats_corpus.NUMERIC_OPS)
    assert {m["compOp"] for r in reports for m in _all(r["root"], "stringMeas")} >= set(wats_corpus.STRING_OPS)
    kinds = {s["stepType"] for r in reports for s in _steps(r["root"])}
    assert kinds >= {"ET_NLT", "ET_MNLT", "ET_PFT", "ET_MPFT", "ET_SVT", "ET_MSVT", "SequenceCall", "Action"}
    values = [m["value"] for r in reports for m in _all(r["root"], "numericMeas")]
    assert {"NaN", "Infinity", "-Infinity"} & set(v for v in values if isinstance(v, str))
    assert any(r["subUnits"] for r in reports) and any(len(r["miscInfos"]) > 3 for r in reports)
    assert any(re.search(r"[^\x00-\x7f]", s["name"]) for r in reports for s in _steps(r["root"]))
    assert any(len(s.get("reportText", "")) > 4000 for r in reports for s in _steps(r["root"]))


def _steps(step):
    for s in step.get("steps", []):
        yield s
        yield from _steps(s)


def _all(root, key):
    for s in _steps(root):
        yield from s.get(key, [])


def test_the_wats_client_librarys_own_model_reads_every_report_and_judges_as_we_did():
    """The public peer: the WATS client library's report model (pywats-api, pydantic) validates every report of
    the corpus, and its own CompOp.evaluate agrees with every numeric status we sent for a finite value (for a
    non-finite one the library says nothing useful: NaN != 5 passes there; the contract says never a pass)."""
    pytest.importorskip("pywats")
    from pywats.domains.report.report_models.uut.uut_report import UUTReport
    from pywats.shared.enums import CompOp

    events, _, _, _ = events_of_corpus(4)
    checked = 0
    for e in events:
        try:
            report = to_wsjf(e, STATION)
        except MappingError:
            continue
        model = UUTReport.model_validate(report)
        assert str(model.id) == report["id"] and model.sn == report["sn"]
        for m in _all(report["root"], "numericMeas"):
            if isinstance(m["value"], str) or m["compOp"] in ("LOG", "EQT"):
                continue
            assert CompOp(m["compOp"]).evaluate(m["value"], m.get("lowLimit"), m.get("highLimit")) == \
                (m["status"] == "P"), m
            checked += 1
    assert checked > 100
