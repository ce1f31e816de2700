"""Fuzzing MQTT ingest: every topic family's adapter, the site-mapping adapter, and the source's whole decode path
(size, route, rate limit, JSON, adapter, the counters' latest-wins) with arbitrary bytes.

The only outcomes are events that encode and validate, or ``AdapterError`` (the adapters) / ``BadMessage`` (the
source), which become dead letters. Anything else reaches the source's "internal error" branch: an ERROR with a
traceback per message, the defect the fuzzing looks for.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import parse_config
from agent.events import EventBus, Journal
from agent.events.model import Event, validate_payload
from agent.protocols.mqtt_adapters import ADAPTERS, DEFAULT_SUBSCRIPTIONS, AdapterError, Message, mapping
from agent.sources.mqtt import BadMessage, MqttSource

from .strategies import Tally, deeply_nested, fuzz_settings, json_objects, json_values, mutated, to_json

pytestmark = pytest.mark.fuzz
RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

_times = st.one_of(st.datetimes(timezones=st.sampled_from([None, timezone.utc])).map(lambda d: d.isoformat()),
                   st.sampled_from(["2026-01-26T08:00:00Z", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00",
                                    "2026-03-01T12:00:00Z", "now", ""]), json_values)
_counts = st.one_of(st.integers(-2, 5), st.integers(), st.integers(min_value=2**62, max_value=2**66),
                    st.sampled_from(["1523", "11", 1.5, True]), json_values)
_words = st.one_of(st.sampled_from(["running", "idle", "Offline", " error ", "dancing", "P", "Passed", "fail",
                                    "warning", "critical", "unit_entered", "exited", "?"]), st.text(max_size=8))
_step = st.fixed_dictionaries({"name": st.text(max_size=8)}, optional={
    "value": json_values, "low": json_values, "high": json_values, "unit": st.text(max_size=3),
    "status": _words, "result": _words})
#: documents shaped like each family's payload, so the fuzzer gets past the first missing key
_FAMILY = {
    "asset": st.fixed_dictionaries({}, optional={
        "status": _words, "state": _words, "running_count": _counts, "total_count": _counts, "timestamp": _times,
        "counters": st.one_of(st.fixed_dictionaries({"running_count": _counts, "total_count": _counts}), json_values),
        "environment": st.one_of(st.dictionaries(st.text(max_size=6), st.one_of(st.floats(), _counts), max_size=3),
                                 json_values),
        "units": json_values, "asset_id": json_values}),
    "asset_alert": st.fixed_dictionaries({}, optional={
        "code": json_values, "alert": st.text(max_size=6), "message": json_values, "severity": _words,
        "cleared": st.one_of(st.booleans(), json_values), "timestamp": _times, "asset_id": json_values}),
    "selftest": st.fixed_dictionaries({"result": st.one_of(_words, st.booleans(), json_values)}, optional={
        "steps": st.one_of(st.lists(_step, max_size=4), json_values), "duration_ms": st.one_of(st.floats(), _counts),
        "timestamp": _times, "serial_number": json_values, "test_type": json_values}),
    "measurements": st.fixed_dictionaries({}, optional={
        "measurements": st.one_of(st.lists(st.fixed_dictionaries(
            {"path": st.text(max_size=6), "value": st.one_of(st.floats(), _counts)},
            optional={"unit": json_values}), max_size=4), json_values),
        "serial_number": json_values, "timestamp": _times}),
    "software": st.fixed_dictionaries({}, optional={
        "software": st.one_of(st.lists(st.fixed_dictionaries({"name": json_values, "version": json_values}),
                                       max_size=3), json_values), "config_version": json_values,
        "timestamp": _times}),
    "unit": st.fixed_dictionaries({"serial_number": st.one_of(st.text(max_size=10), json_values)}, optional={
        "event": _words, "part_number": json_values, "operator": json_values, "timestamp": _times}),
}
_FAMILY["test_result"] = _FAMILY["selftest"]
_SITE = mapping("asset.counters", {"running_count": "c.run", "total_count": "c.total", "timestamp": "$received"},
                device_field="asset_id")

_tallies = {name: Tally(f"MQTT adapter {name}") for name in [*ADAPTERS, "mapping"]}


def _check(events: list[Event]) -> None:
    assert events and all(isinstance(e, Event) for e in events)
    for e in events:
        validate_payload(e)
        assert msgspec.json.decode(msgspec.json.encode(e), type=Event).event_type == e.event_type


def _topic_of(adapter: str) -> str:
    return next(t for t, a in DEFAULT_SUBSCRIPTIONS if a == adapter).replace("+", "DEV-1")


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@fuzz_settings(quick=100)
@given(data=st.data())
def test_any_document_on_any_topic_family_is_events_or_an_adapter_error(adapter, data):
    doc = data.draw(st.one_of(_FAMILY[adapter], _FAMILY[adapter], json_objects), label="doc")
    device = data.draw(st.one_of(st.just("DEV-1"), st.none(), st.text(max_size=6)), label="device")
    try:
        events = ADAPTERS[adapter](Message(_topic_of(adapter), device, doc, RECEIVED, "mqtt:mqtt"))
    except AdapterError as e:
        assert str(e).startswith(_topic_of(adapter)), e
        _tallies[adapter].refuse(str(e))
        return
    _check(events)
    _tallies[adapter].accept()


@fuzz_settings(quick=100)
@given(doc=st.one_of(st.fixed_dictionaries({"c": st.one_of(
    st.fixed_dictionaries({}, optional={"run": _counts, "total": _counts}), json_values)}), json_objects),
    device=st.one_of(st.just("PRESS-4"), st.none()))
def test_a_site_mapping_is_events_or_an_adapter_error(doc, device):
    try:
        events = _SITE(Message("plant/PRESS-4/cycles", device, doc, RECEIVED, "mqtt:mqtt"))
    except AdapterError as e:
        _tallies["mapping"].refuse(str(e))
        return
    _check(events)
    _tallies["mapping"].accept()


# ------------------------------------------------------------------------------------------------ the source
_DIR = tempfile.TemporaryDirectory(prefix="fuzz-mqtt-")
_JOURNAL = Journal(Path(_DIR.name) / "journal.db")
_SOURCE = MqttSource(parse_config('[agent]\nstation = "s"\n[sources.mqtt]\nmax_payload_bytes = "64KB"\n'
                                  "rate_limit = 1000000\nrate_burst = 1000000\n").sources.mqtt, "s")
_SOURCE.set_event_bus(EventBus(_JOURNAL))
_SOURCE.load_state()
_source_tally = Tally("MQTT source decode path")
_valid = st.one_of(*[_FAMILY[a].map(to_json) for a in ("asset", "selftest", "unit")])
_topics = st.one_of(st.sampled_from([t.replace("+", "DEV-1") for t, _ in DEFAULT_SUBSCRIPTIONS]),
                    st.sampled_from(["assets/FX-1/counters", "nowhere/x", "assets//counters", "assets/+/x"]),
                    st.text(min_size=1, max_size=20))


@fuzz_settings()
@given(payload=st.one_of(st.binary(max_size=300), json_values.map(to_json), _valid, _valid, mutated(_valid),
                         deeply_nested(), deeply_nested().map(lambda d: b'{"status":"idle","x":' + d + b"}"),
                         st.just(b"x" * 70_000)),
       topic=_topics)
def test_any_bytes_on_any_topic_are_events_or_a_bad_message(payload, topic):
    msg = mqtt.MQTTMessage(mid=1, topic=topic.encode("utf-8", "surrogatepass"))
    msg.payload = payload
    msg.qos = 1
    marks: dict[str, str] = {}
    try:
        events = _SOURCE.latest_wins(_SOURCE.adapt(msg, RECEIVED, len(payload)), RECEIVED, marks)
    except BadMessage as e:
        assert str(e) and "Traceback" not in str(e)
        _source_tally.refuse(str(e))
        return
    _check(events)
    _source_tally.accept()


def test_zz_report():
    for t in [*_tallies.values(), _source_tally]:
        print(t.report())
