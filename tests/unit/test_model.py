from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from agent.events.ids import uuid7, uuid7_time_ms
from agent.events.model import Event, EventMetadata, EventType, EventValidationError, decode, encode
from agent.events.payloads import TestMeasurement, TestResult, TestResultEvent, TestStep

T0 = datetime(2026, 5, 14, 9, 30, tzinfo=timezone.utc)


def full_result() -> TestResultEvent:
    return TestResultEvent(
        unit_id="SN-1", result=TestResult.FAIL, start_time=T0, end_time=T0 + timedelta(seconds=3),
        part_number="PCBA-1", revision="B", station_id="st-1", operator_id="op", test_socket="1",
        batch_sn="B1", fixture_id="FX-1", custom_data={"k": [1, 2]},
        steps=[TestStep(name="Rails", status=TestResult.FAIL, start_time=T0, end_time=T0 + timedelta(seconds=1),
                        step_type="numeric_limit", message="VCC low",
                        measurements=[TestMeasurement(name="VCC", value=3.1, unit="V", status=TestResult.FAIL,
                                                      low_limit=3.2, high_limit=3.4, nominal=3.3, comp_op="GELE"),
                                      TestMeasurement(name="OK", status=TestResult.PASS, value=True, comp_op="LOG")])],
    )


def test_round_trip_is_exact_for_every_field():
    ev = Event.create(EventType.TEST_RESULT, full_result(), source="fixture", correlation_id="c-1",
                      occurred_at=T0, source_topic="testers/t1/results", custom={"line": 3})
    again = decode(encode(ev))
    assert again == ev
    assert encode(again) == encode(ev)
    typed = again.typed_payload()
    assert typed == full_result()
    assert typed.measurement_count == 2 and typed.duration_ms == 3000.0 and not typed.passed
    assert again.metadata.boot_id and again.metadata.monotonic_ns > 0
    assert again.timestamp == T0 and again.source == "fixture" and again.id == ev.metadata.event_id


def test_boot_id_survives_encoding_even_when_it_is_the_current_one():
    ev = Event.create("custom", {"a": 1})
    assert b'"boot_id"' in encode(ev)


def test_non_utc_timestamps_are_normalised_and_naive_ones_refused():
    plus2 = timezone(timedelta(hours=2))
    ev = Event.create("custom", {}, occurred_at=datetime(2026, 1, 1, 12, tzinfo=plus2))
    assert ev.timestamp == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    assert decode(encode(ev)) == ev
    with pytest.raises(EventValidationError, match="timezone-aware"):
        Event.create("custom", {}, occurred_at=datetime(2026, 1, 1))


@pytest.mark.parametrize("payload,field", [
    ({"result": "pass", "start_time": "2026-01-01T00:00:00Z"}, "unit_id"),
    ({"unit_id": "X", "result": "Passed", "start_time": "2026-01-01T00:00:00Z"}, "$.result"),
    ({"unit_id": "X", "result": "pass", "start_time": "yesterday"}, "$.start_time"),
    ({"unit_id": "X", "result": "pass", "start_time": "2026-01-01T00:00:00Z",
      "steps": [{"name": "s", "status": "pass", "measurements": [{"name": "m", "low_limit": "low"}]}]},
     "$.steps[0].measurements[0].low_limit"),
    ({"unit_id": "X", "result": "pass", "start_time": "2026-01-01T00:00:00Z", "unit_idd": "typo"}, "unit_idd"),
])
def test_invalid_payload_names_the_field(payload, field):
    with pytest.raises(EventValidationError) as err:
        Event.create(EventType.TEST_RESULT, payload)
    assert field in str(err.value)
    assert "test.result" in str(err.value)


def test_counters_must_be_consistent():
    with pytest.raises(EventValidationError, match="running_count must not exceed total_count"):
        Event.create("asset.counters", {"asset_id": "A", "running_count": 5, "total_count": 4,
                                        "timestamp": "2026-01-01T00:00:00Z"})


def test_untyped_events_carry_any_json_object():
    ev = Event.create("site.custom_thing", {"x": [1, {"y": None}]})
    assert decode(encode(ev)).typed_payload() == {"x": [1, {"y": None}]}
    with pytest.raises(EventValidationError, match="JSON object"):
        Event.create("custom", [1, 2])  # type: ignore[arg-type]


def test_uuid7_is_time_ordered_and_monotonic_within_a_millisecond():
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(i[14] == "7" for i in ids)  # version nibble
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    assert abs(uuid7_time_ms(ids[-1]) - now_ms) < 5000


def test_derive_and_retry_keep_lineage():
    parent = Event.create("test.started", {"unit_id": "A"}, source="s", correlation_id="batch-9")
    child = parent.derive("custom", {"n": 1})
    assert child.metadata.causation_id == parent.id
    assert child.metadata.correlation_id == "batch-9"
    assert parent.with_retry().with_retry().metadata.retry_count == 2
    md = EventMetadata.from_dict(child.metadata.to_dict())
    assert md == child.metadata
    assert Event.from_dict(child.to_dict()) == child


def test_event_type_helpers():
    assert EventType.from_string("asset.counters") is EventType.ASSET_COUNTERS
    with pytest.raises(ValueError, match="unknown event type"):
        EventType.from_string("nope")
    assert EventType.TEST_RESULT in EventType.test_events()
    assert {EventType.ASSET_COUNTERS, EventType.ASSET_TELEMETRY, EventType.DEVICE_SOFTWARE} <= set(EventType.asset_events())
    assert all(t.value.startswith("production.") for t in EventType.production_events())
    assert Event(event_type=EventType.CUSTOM).event_type == "custom"


def test_measurement_limits():
    P = TestResult.PASS
    assert TestMeasurement(name="v", status=P, value=3.3, low_limit=3.2, high_limit=3.4).is_within_limits()
    assert not TestMeasurement(name="v", status=P, value=3.5, low_limit=3.2, high_limit=3.4).is_within_limits()
    assert not TestMeasurement(name="v", status=P, value=3.1, low_limit=3.2).is_within_limits()
    # a measurement always carries its verdict on the wire, even the default-looking "pass"
    ev = Event.create("test.result", full_result())
    assert b'"status":"pass"' in encode(ev)
    with pytest.raises(EventValidationError, match="status"):
        Event.create("test.result", {"unit_id": "U", "result": "pass", "start_time": "2026-01-01T00:00:00Z",
                                     "steps": [{"name": "s", "status": "pass", "measurements": [{"name": "m"}]}]})
    assert msgspec.to_builtins(TestResult.PASS) == "pass"


def test_package_exports_resolve_lazily_and_submodules_still_import():
    import importlib
    import subprocess
    import sys

    code = ("import agent, sys; assert 'agent.events' not in sys.modules; from agent import simulator; "
            "from agent import EventBus; import agent.cli; print(EventBus.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "EventBus"
    import agent

    with __import__("pytest").raises(AttributeError):
        agent.no_such_thing
    assert importlib.import_module("agent.simulator")
