"""Timestamps taken before NTP synced the clock are corrected from the monotonic clock before going to WATS."""

import time
from datetime import datetime, timedelta, timezone

import msgspec

from agent.events import Event
from agent.events.ids import BOOT_ID
from agent.protocols.clock import correct_timestamps

DAY = 86400.0


def stamped(wall: datetime, mono_ns: int, boot: str = BOOT_ID, start: datetime | None = None,
            unsynced: bool = True) -> Event:
    e = Event.create("test.result", {"unit_id": "SN1", "result": "pass", "start_time": start or wall - timedelta(seconds=5),
                                     "end_time": start or wall,
                                     "steps": [{"name": "s", "status": "pass", "start_time": wall - timedelta(seconds=2)}]})
    e = msgspec.json.decode(msgspec.json.encode(e), type=Event)  # as the journal hands it to the sink
    return msgspec.structs.replace(e, metadata=msgspec.structs.replace(e.metadata, timestamp=wall, monotonic_ns=mono_ns,
                                                                        boot_id=boot, clock_unsynced=unsynced))


def when(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def test_event_stamped_before_sync_in_this_boot_is_shifted_by_the_clock_step():
    now, mono = time.time(), time.monotonic_ns()
    # 10 s ago (monotonic), the clock read three days ago: fake-hwclock before NTP
    wall = datetime.fromtimestamp(now - 10 - 3 * DAY, timezone.utc)
    fixed, note = correct_timestamps(stamped(wall, mono - 10_000_000_000), now=now, now_mono_ns=mono)
    assert note and "+259200.0 s" in note
    assert abs(when(fixed.payload["start_time"]) - (now - 15)) < 0.01
    assert abs(when(fixed.payload["end_time"]) - (now - 10)) < 0.01
    assert abs(when(fixed.payload["steps"][0]["start_time"]) - (now - 12)) < 0.01


def test_a_synced_clock_and_small_slews_change_nothing():
    now, mono = time.time(), time.monotonic_ns()
    e = stamped(datetime.fromtimestamp(now - 10.5, timezone.utc), mono - 10_000_000_000)
    fixed, note = correct_timestamps(e, now=now, now_mono_ns=mono)
    assert note is None and fixed is e


def test_an_earlier_boot_cannot_be_corrected_but_is_never_future_dated():
    now, mono = time.time(), time.monotonic_ns()
    future = datetime.fromtimestamp(now + 3600, timezone.utc)
    e = stamped(future, mono + 5, boot="another-boot", start=future)
    fixed, note = correct_timestamps(e, now=now, now_mono_ns=mono)
    assert note and "in the future" in note
    assert abs(when(fixed.payload["start_time"]) - now) < 1
    past = stamped(datetime.fromtimestamp(now - DAY, timezone.utc), 5, boot="another-boot")
    assert correct_timestamps(past, now=now, now_mono_ns=mono) == (past, None)  # past is past: sent as stamped


def test_times_from_a_device_with_a_good_clock_are_left_alone():
    now, mono = time.time(), time.monotonic_ns()
    wall = datetime.fromtimestamp(now - 10 - 3 * DAY, timezone.utc)  # the Pi's clock was wrong
    device_start = datetime.fromtimestamp(now - 15, timezone.utc)  # the device's was right
    e = stamped(wall, mono - 10_000_000_000, start=device_start)
    fixed, note = correct_timestamps(e, now=now, now_mono_ns=mono)
    assert abs(when(fixed.payload["start_time"]) - (now - 15)) < 0.01  # not pushed three days into the future
    assert abs(when(fixed.payload["steps"][0]["start_time"]) - (now - 12)) < 0.01  # the Pi-stamped step is fixed
    assert note and "shifted" in note


def test_a_time_given_on_purpose_while_the_clock_was_synced_is_not_corrected():
    now, mono = time.time(), time.monotonic_ns()
    hour_ago = datetime.fromtimestamp(now - 3600, timezone.utc)  # publish --stdin with occurred_at
    e = stamped(hour_ago, mono, unsynced=False)
    assert correct_timestamps(e, now=now, now_mono_ns=mono) == (e, None)


def test_occurred_at_is_never_flagged_unsynced():
    e = Event.create("custom", {}, occurred_at=datetime.now(timezone.utc) - timedelta(hours=1))
    assert e.metadata.clock_unsynced is False


def test_an_attempt_in_doubt_is_timed_by_the_monotonic_clock_not_the_wall_clock():
    """An ambiguous WATS request waits ``in_doubt_grace`` before its effect is checked. Timed by the wall clock, a
    step back of three hours (NTP correcting a clock that ran ahead) held the uplink for three hours."""
    import time

    from agent.events.ids import BOOT_ID
    from agent.sinks.wats.attempts import now_stamp as _now_stamp, seconds_since as _seconds_since

    stamp = _now_stamp()
    assert 0 <= _seconds_since(stamp) < 5
    stepped_back = {**stamp, "at": time.time() + 3 * 3600}  # recorded before the clock went back 3 h
    assert _seconds_since(stepped_back) < 5
    earlier = {**stamp, "mono": time.monotonic() - 40}
    assert 39 < _seconds_since(earlier) < 45
    other_boot = {"at": time.time() + 3 * 3600, "mono": 1.0, "boot": "not-" + BOOT_ID}
    assert _seconds_since(other_boot) == float("inf")  # checked in WATS at once, not waited on for hours
    old_record = {"at": time.time() - 100}  # written by an agent before this change: wall clock only
    assert 99 < _seconds_since(old_record) < 105
