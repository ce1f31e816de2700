"""The WATS uplink against the stand-in server: backlog drain, poison, auth, Retry-After, clock, kill -9."""

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from agent.config import ConfigError
from agent.sinks.wats_plugin import WatsSinkSection
from agent.events import Event, EventBus, Journal
from agent.sinks.wats import WatsSink, retry_after_seconds
from tests.conftest import ROOT, cli_cmd, run_cli, wait_for
from tests.wats_standin import WatsStandIn


@pytest.fixture
def wats():
    s = WatsStandIn()
    yield s
    s.close()


def token_file(tmp_path, token, mode=0o600):
    p = tmp_path / "wats.token"
    p.write_text(token + "\n")
    p.chmod(mode)
    return p


def sink_cfg(wats, tmp_path, **kw):
    base = {"url": wats.url, "token_file": str(token_file(tmp_path, wats.token)), "process_codes": {"test": 50},
            "default_part_number": "PN-1", "requests_per_minute": 1_000_000, "require_clock_sync": False,
            "retry_max": "0.5s", "timeout": "2s"}
    base.update(kw)
    return msgspec.convert(base, WatsSinkSection)


def result(i=0, **custom):
    start = datetime.now(timezone.utc) - timedelta(seconds=2)
    return Event.create("test.result", {"unit_id": f"SN{i:06d}", "result": "pass", "start_time": start,
                                        "steps": [{"name": "V", "status": "pass", "measurements": [
                                            {"name": "V", "status": "pass", "value": 3.3, "low_limit": 3.2,
                                             "high_limit": 3.4, "comp_op": "GELE"}]}],
                                        "custom_data": custom})


class Uplink:
    def __init__(self, tmp_path, cfg, **kw):
        self.journal = Journal(tmp_path / "journal.db", max_bytes=1 << 32)
        self.bus = EventBus(self.journal)
        self.sink = WatsSink(cfg, station="st-1", location="Line 1", purpose="Production", data_dir=tmp_path,
                             journal=self.journal, **kw)
        self.sub = self.bus.register_handler(self.sink)
        self.bus.start()

    def close(self):
        self.bus.stop()
        self.sink.close()
        self.journal.close()



def test_backlog_built_while_wats_is_down_drains_exactly_once(wats, tmp_path):
    wats.up = False  # every request is reset before it is read: nothing stored
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    events = [result(i) for i in range(10_000)]
    for k in range(0, len(events), 1000):
        up.bus.publish_many(events[k:k + 1000])
    assert wait_for(lambda: up.sub.state in ("retrying", "circuit_open"), 10)
    assert wats.unique_reports == 0
    wats.up = True
    assert wait_for(lambda: wats.unique_reports == 10_000, 120), wats.unique_reports
    assert up.journal.dead_letters() == []
    up.close()
    assert set(wats.reports) == {e.id for e in events}
    assert wats.duplicates() == {}


def test_poison_reports_are_dead_lettered_and_the_rest_flow(wats, tmp_path):
    events = [result(i) for i in range(20)]
    wats.faults.poison_ids = {events[3].id, events[11].id}
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    up.bus.publish_many(events)
    assert wait_for(lambda: wats.unique_reports == 18 and len(up.journal.dead_letters()) == 2)
    dl = up.journal.dead_letters()
    up.close()
    assert {d.event_id for d in dl} == wats.faults.poison_ids
    assert all("WATS refused it (400)" in d.reason and "poison" in d.reason for d in dl)


def test_unknown_process_code_is_a_dead_letter_not_a_retry_loop(wats, tmp_path):
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, process_codes={"test": 50, "selftest": 77}))
    up.bus.publish_many([result(1, test_type="selftest"), result(2)])
    assert wait_for(lambda: wats.unique_reports == 1 and up.journal.dead_letters())
    [dl] = up.journal.dead_letters()
    up.close()
    assert "processCode 77" in dl.reason and "not a test operation" in dl.reason
    assert json.loads((tmp_path / "wats-processes.json").read_text())["test_codes"] == [10, 50, 90]


def test_rejected_token_pauses_and_resumes_when_the_file_is_fixed(wats, tmp_path):
    cfg = sink_cfg(wats, tmp_path)
    token_file(tmp_path, "d3Jvbmc6dG9rZW4=")  # a wrong token
    up = Uplink(tmp_path, cfg)
    up.bus.publish(result(1))
    assert wait_for(lambda: up.sub.state == "paused" and "rejects the token" in (up.sub.last_error or ""))
    def status():
        return json.loads(run_cli("status", "-c", str(write_status_cfg(tmp_path)), "--json", check=True).stdout)

    assert wait_for(lambda: "rejects the token" in (status()["subscribers"][0]["last_error"] or ""), 10)
    doc = status()
    assert doc["subscribers"][0]["backlog"] == 1 and doc["subscribers"][0]["state"] == "paused"
    assert "d3Jvbmc6" not in json.dumps(doc) and wats.token not in json.dumps(doc)  # never shown
    assert wats.unique_reports == 0 and up.journal.dead_letters() == []  # nothing dropped
    token_file(tmp_path, wats.token)
    assert wait_for(lambda: wats.unique_reports == 1, 10)
    up.close()


def write_status_cfg(tmp_path):
    p = tmp_path / "status.toml"
    p.write_text(f'[agent]\ndata_dir = "{tmp_path}"\n')
    return p


def test_token_file_readable_by_others_is_refused(wats, tmp_path):
    cfg = sink_cfg(wats, tmp_path)
    token_file(tmp_path, wats.token, mode=0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        WatsSink(cfg, station="s", location="l", purpose="p", data_dir=tmp_path)


def test_token_from_a_systemd_credential(wats, tmp_path, monkeypatch):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "wats-token").write_text(wats.token)
    (creds / "wats-token").chmod(0o400)  # as systemd's LoadCredential= leaves it
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, token_file=None))
    up.bus.publish(result(1))
    assert wait_for(lambda: wats.unique_reports == 1, 10)
    up.close()


def test_retry_after_is_honoured_and_ambiguous_resets_resend_the_same_id(wats, tmp_path):
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None
    wats.faults.rate_limit_next = 1
    wats.faults.retry_after = "2"
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, retry_max="5s"))
    t0 = time.monotonic()
    ev = up.bus.publish(result(1))
    assert wait_for(lambda: wats.unique_reports == 1, 10)
    assert time.monotonic() - t0 >= 1.9  # waited as told, not our 0.x s backoff
    wats.faults.reset_after_read_next = 1  # stored, but the answer never arrives
    ev2 = up.bus.publish(result(2))
    assert wait_for(lambda: wats.receive_count[ev2.id] == 2, 10)
    up.close()
    assert wats.unique_reports == 2 and wats.receive_count[ev.id] == 1


def test_503_bursts_slow_answers_and_dated_retry_after_lose_and_duplicate_nothing(wats, tmp_path):
    from email.utils import format_datetime

    in3 = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=3), usegmt=True)
    assert 1.5 < retry_after_seconds(in3) <= 3.0
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, timeout="0.3s", retry_max="0.5s"))
    wats.faults.unavailable_next = 6
    events = [result(i) for i in range(50)]
    up.bus.publish_many(events[:25])
    assert wait_for(lambda: wats.requests["POST /api/report/wsjf"] >= 6, 20)
    wats.faults.slow_next = 2  # answers after the client's timeout: stored, but the agent never hears
    wats.faults.slow_delay = 0.6
    wats.faults.rate_limit_next = 1
    wats.faults.retry_after = "date"
    up.bus.publish_many(events[25:])
    assert wait_for(lambda: wats.unique_reports == 50, 30), wats.unique_reports
    dl = up.journal.dead_letters()
    up.close()
    assert dl == [] and set(wats.reports) == {e.id for e in events}
    assert up.sub.failed >= 7  # 503s, timeouts and a 429: all retried
    # the slow requests were stored after the agent gave up on them: only those were sent twice, by the same id
    assert 1 <= sum(wats.receive_count.values()) - 50 <= 2


def test_reports_are_held_until_the_clock_is_synchronized(wats, tmp_path):
    synced = {"ok": False}
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, require_clock_sync=True), clock_check=lambda: synced["ok"])
    up.bus.publish(result(1))
    assert wait_for(lambda: "clock is not synchronized" in (up.sub.last_error or "") and up.sub.state == "holding")
    assert wats.unique_reports == 0
    synced["ok"] = True
    assert wait_for(lambda: wats.unique_reports == 1, 10)
    up.close()


def test_counters_and_state_are_sent_absolute_and_other_types_skipped(wats, tmp_path):
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    now = datetime.now(timezone.utc)
    up.bus.publish_many([
        Event.create("asset.counters", {"asset_id": "FX-1", "running_count": 7, "total_count": 900, "timestamp": now}),
        Event.create("asset.counters", {"asset_id": "FX-1", "running_count": 8, "total_count": 901, "timestamp": now}),
        Event.create("asset.state_changed", {"asset_id": "FX-1", "new_state": "maintenance", "timestamp": now}),
        Event.create("asset.telemetry", {"asset_id": "FX-1", "timestamp": now, "readings": {"t": 30.0}}),
    ])
    assert up.bus.wait_idle(10)
    up.close()
    assert wats.assets["FX-1"]["runningCount"] == 8 and wats.assets["FX-1"]["totalCount"] == 901
    assert wats.assets["FX-1"]["state"] == 3
    assert wats.requests["PUT /api/asset/count"] == 0  # never the non-idempotent increment


def test_kill9_while_draining_loses_nothing_and_duplicates_no_id(wats, tmp_path, write_config):
    tok = token_file(tmp_path, wats.token)
    cfg = write_config(f"""
[sinks.wats]
url = "{wats.url}"
token_file = "{tok}"
process_codes = {{ test = 50 }}
default_part_number = "PN-1"
requests_per_minute = 1000000
require_clock_sync = false
retry_max = "0.5s"
""")
    wats.faults.delay = 0.002  # a little latency so the kills land mid-drain
    start = (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat()
    lines = "".join(json.dumps({"type": "test.result", "payload": {"unit_id": f"SN{i}", "result": "pass",
                                                                   "start_time": start}}) + "\n" for i in range(3000))
    ids = run_cli("publish", "-c", str(cfg), "--stdin", input=lines, check=True).stdout.split()
    assert len(ids) == 3000
    for k in range(4):
        agent = subprocess.Popen(cli_cmd("run", "-c", str(cfg)), cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        before = wats.unique_reports
        assert wait_for(lambda: wats.unique_reports > before + 100, 30)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
    assert wats.unique_reports < 3000, "the kills should land before the drain is done"
    agent = subprocess.Popen(cli_cmd("run", "-c", str(cfg)), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: wats.unique_reports == 3000, 90), wats.unique_reports
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(15)
    assert set(wats.reports) == set(ids)  # every report, under its event id: resends overwrite, never add


def counters(asset, running, total):
    return Event.create("asset.counters", {"asset_id": asset, "running_count": running, "total_count": total,
                                           "timestamp": datetime.now(timezone.utc)})


def test_superseded_counters_are_coalesced_while_a_backlog_drains(wats, tmp_path):
    wats.up = False
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    events = [counters(f"FX-{i % 2}", i // 2 + 1, i // 2 + 1) for i in range(400)]
    events.insert(100, result(1))  # a report in between is not coalesced away
    up.bus.publish_many(events)
    time.sleep(0.5)
    wats.up = True
    assert up.bus.wait_idle(20)
    up.close()
    assert wats.assets["FX-0"]["totalCount"] == 200 and wats.assets["FX-1"]["runningCount"] == 200
    assert wats.unique_reports == 1
    # 400 counter events in two pages of 256: at most one per asset per page is sent, never all 400
    assert wats.requests["PUT /api/asset/settotalcount"] <= 4
    assert sum(up.bus.metrics.coalesced.values()) >= 396


def test_increment_mode_reaches_exact_counts_across_resets(wats, tmp_path):
    wats.register_asset("FX-1", total=1000, running=40)  # WATS' counts from before this agent
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, counters_api="increment"))
    up.bus.publish_many([counters("FX-1", 1, 1), counters("FX-1", 2, 2), counters("FX-1", 3, 3)])
    assert up.bus.wait_idle(10)
    assert (wats.assets["FX-1"]["totalCount"], wats.assets["FX-1"]["runningCount"]) == (1003, 43)
    # a reset on the fixture, then more presses, all in one backlog (the reset event itself is coalesced away)
    up.bus.publish_many([counters("FX-1", 5, 5), counters("FX-1", 0, 5), counters("FX-1", 1, 6),
                         counters("FX-1", 2, 7)])
    assert up.bus.wait_idle(10)
    up.close()
    assert (wats.assets["FX-1"]["totalCount"], wats.assets["FX-1"]["runningCount"]) == (1007, 2)
    assert wats.requests["PUT /api/asset/setrunningcount"] == 0
    assert [n for _, n in wats.increments][-2:] == [2, 2]  # up to the reset point, then after it


def test_an_increment_in_doubt_is_verified_not_resent(wats, tmp_path):
    wats.register_asset("FX-1")
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, counters_api="increment", in_doubt_grace="1s"))
    wats.faults.reset_after_read_next = 1  # WATS counts it, the agent never hears
    up.bus.publish(counters("FX-1", 10, 10))
    assert up.bus.wait_idle(10)
    assert wats.assets["FX-1"]["totalCount"] == 10 and wats.increments == [("FX-1", 10)]
    assert up.sink.ledger.verified == 1
    # an increment that did not land (the server was down) is sent once more after the check
    wats.up = False
    up.bus.publish(counters("FX-1", 12, 12))
    assert wait_for(lambda: up.sub.state in ("retrying", "circuit_open"))
    wats.up = True
    assert up.bus.wait_idle(10)
    up.close()
    assert wats.assets["FX-1"]["totalCount"] == 12 and wats.increments == [("FX-1", 10), ("FX-1", 2)]


def test_an_increment_applied_after_the_agent_gave_up_waiting_is_not_counted_twice(wats, tmp_path):
    wats.register_asset("FX-1")
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, counters_api="increment", timeout="0.3s", in_doubt_grace="2s"))
    wats.faults.slow_next = 1  # processed a second after the agent's timeout
    wats.faults.slow_delay = 1.0
    up.bus.publish(counters("FX-1", 10, 10))
    assert wait_for(lambda: up.sub.delivered == 1, 15)
    up.close()
    assert wats.increments == [("FX-1", 10)] and wats.assets["FX-1"]["totalCount"] == 10


def test_a_crash_between_increment_and_acknowledgement_does_not_double_count(wats, tmp_path):
    from agent.sinks.wats.ledger import ledger_key

    wats.register_asset("FX-1", total=8, running=8)  # the increment of 3 landed before the crash
    j = Journal(tmp_path / "journal.db")
    j.set_state(ledger_key("FX-1"), {"sent_total": 5, "sent_running": 5, "server_total": 5,
                                     "pending": {"by": 3, "expect_total": 8}})
    j.close()
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, counters_api="increment"))
    up.bus.publish(counters("FX-1", 8, 8))  # redelivered after the restart
    assert up.bus.wait_idle(10)
    assert wats.increments == [] and wats.assets["FX-1"]["totalCount"] == 8
    up.bus.publish(counters("FX-1", 9, 9))
    assert up.bus.wait_idle(10)
    up.close()
    assert wats.increments == [("FX-1", 1)] and wats.assets["FX-1"]["totalCount"] == 9


def test_faults_maintenance_and_calibration_become_asset_log_entries_once(wats, tmp_path):
    wats.register_asset("FX-1")
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, in_doubt_grace="1s"))
    now = datetime.now(timezone.utc)
    fault = Event.create("asset.fault", {"asset_id": "FX-1", "fault_code": "E42", "fault_message": "pogo pin open",
                                         "timestamp": now})
    wats.faults.reset_after_read_next = 1  # the message is logged, the answer lost: must not be logged twice
    up.bus.publish(fault)
    assert up.bus.wait_idle(10)
    up.bus.publish_many([
        Event.create("asset.maintenance", {"asset_id": "FX-1", "maintenance_type": "preventive",
                                           "description": "pins replaced", "timestamp": now, "performed_by": "kim"}),
        Event.create("asset.calibration", {"asset_id": "FX-1", "maintenance_type": "calibration",
                                           "description": "DMM verified", "timestamp": now}),
        Event.create("asset.fault", {"asset_id": "NOT-IN-WATS", "fault_code": "E1", "fault_message": "x",
                                     "timestamp": now}),
    ])
    assert up.bus.wait_idle(10)
    dl = up.journal.dead_letters()
    up.close()
    log = wats.log_of("FX-1")
    assert [e["type"] for e in log] == [0, 5, 4]
    assert "E42" in log[0]["comment"] and f"[event {fault.id}]" in log[0]["comment"]
    assert "pins replaced by kim" in log[1]["comment"]
    assert len(dl) == 1 and "NOT-IN-WATS" in dl[0].reason and "not known to WATS" in dl[0].reason


def test_installed_serialized_material_becomes_child_units(wats, tmp_path):
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    now = datetime.now(timezone.utc)
    up.bus.publish_many([
        Event.create("material.installed", {"unit_id": "SN1", "timestamp": now, "custom_data": {"part_number": "PCBA"},
                                            "components": [
                                                {"reference_designator": "U1", "part_number": "MOD-A", "serial_number": "M1"},
                                                {"reference_designator": "R1", "part_number": "RES", "lot_number": "L7"}]}),
        Event.create("material.installed", {"unit_id": "SN2", "timestamp": now, "components": [
            {"reference_designator": "U1", "part_number": "MOD-A", "serial_number": "M2"}]}),
    ])
    assert up.bus.wait_idle(10)
    dl = up.journal.dead_letters()
    up.close()
    assert wats.children == {("SN1", "PCBA", "M1", "MOD-A")}
    assert len(dl) == 1 and "SN2" in dl[0].reason and "part_number" in dl[0].reason


def test_a_report_stamped_with_a_wrong_clock_is_corrected_not_quarantined(wats, tmp_path):
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    e = result(1)
    ahead = datetime.now(timezone.utc) + timedelta(hours=2)  # stamped in an earlier boot by a clock running ahead
    e = msgspec.structs.replace(e, payload={**msgspec.to_builtins(e.payload), "start_time": ahead.isoformat()},
                                metadata=msgspec.structs.replace(e.metadata, boot_id="earlier-boot", timestamp=ahead))
    up.bus.publish(e)
    assert up.bus.wait_idle(10)
    dl = up.journal.dead_letters()
    up.close()
    assert dl == []
    report = wats.reports[e.id]  # accepted: the stand-in refuses future-dated reports with 400
    assert any(m["description"] == "ClockCorrection" and "in the future" in m["text"] for m in report["miscInfos"])


def test_a_wrapped_token_is_refused_without_being_quoted(wats, tmp_path):
    cfg = sink_cfg(wats, tmp_path)
    (tmp_path / "wats.token").write_text("c2VjcmV0LXBhcnQt\nb25lLWFuZC10d28=\n")
    with pytest.raises(ConfigError) as err:
        WatsSink(cfg, station="s", location="l", purpose="p", data_dir=tmp_path)
    assert "one line" in str(err.value) and "c2VjcmV0" not in str(err.value)


def test_an_older_counter_replayed_late_never_sets_wats_back(wats, tmp_path):
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    older, newer = counters("FX-1", 50, 1000), counters("FX-1", 80, 1030)
    dl = up.journal.dead_letter(reason="503 long ago", event=older, subscriber=up.sub.name)  # failed back then
    up.bus.publish(newer)
    assert up.bus.wait_idle(10)
    up.journal.request_retry([dl])  # `fixture-agent dlq retry`: the subscriber's real replay path
    assert wait_for(lambda: not up.journal.dead_letters(), 20), up.journal.dead_letters()
    up.close()
    assert (wats.assets["FX-1"]["totalCount"], wats.assets["FX-1"]["runningCount"]) == (1030, 80)
    assert wats.requests["PUT /api/asset/settotalcount"] == 1


def test_counters_after_the_wall_clock_stepped_back_are_sent(wats, tmp_path, monkeypatch):
    """NTP steps back a clock that ran ahead, or a Pi without RTC restarts with a clock behind the last value
    sent: the new counters carry ids from an earlier time. They were judged out of date and never sent (found by
    the fault harness's clock steps); the journal's order decides, not the clock."""
    import agent.events.ids as ids

    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    up.bus.publish(counters("FX-1", 50, 1000))
    assert up.bus.wait_idle(10)
    real = time.time_ns
    monkeypatch.setattr(ids, "_last_ms", 0)  # as after a restart: the id generator's memory is gone
    monkeypatch.setattr(ids.time, "time_ns", lambda: real() - 3 * 3600 * 10**9)
    later = counters("FX-1", 51, 1001)
    monkeypatch.undo()
    # and from the next boot (a Pi restarted without RTC): the monotonic clock cannot order the two either
    later = msgspec.structs.replace(later, metadata=msgspec.structs.replace(later.metadata, boot_id="next-boot",
                                                                              monotonic_ns=1))
    assert later.id < wats_last_id(up)
    up.bus.publish(later)
    assert up.bus.wait_idle(10)
    up.close()
    assert (wats.assets["FX-1"]["totalCount"], wats.assets["FX-1"]["runningCount"]) == (1001, 51)


@pytest.mark.parametrize("api", ["absolute", "increment"])
def test_an_old_counter_replayed_after_a_restart_with_the_clock_behind_is_declined(wats, tmp_path, monkeypatch,
                                                                                 api):
    """Boot A: a counter fails and is dead-lettered. Boot B, clock 3 h behind (no RTC): newer counters are sent
    with ids from an earlier time. `dlq retry` of boot A's counter must not set WATS back (by the ids' time it
    looked newer: absolute mode went back to 1000, increment mode took the drop for a replaced counter and
    ended at 2030; found by review)."""
    import agent.events.ids as ids

    wats.register_asset("FX-1")
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, counters_api=api))
    older = msgspec.structs.replace(counters("FX-1", 50, 1000), metadata=msgspec.structs.replace(
        counters("FX-1", 0, 0).metadata, boot_id="boot-A"))
    dl = up.journal.dead_letter(reason="503 long ago", event=older, subscriber=up.sub.name)  # when it failed
    real = time.time_ns
    monkeypatch.setattr(ids, "_last_ms", 0)
    monkeypatch.setattr(ids.time, "time_ns", lambda: real() - 3 * 3600 * 10**9)
    newer = counters("FX-1", 80, 1030)
    monkeypatch.undo()
    assert newer.id < older.id
    up.bus.publish(newer)
    assert up.bus.wait_idle(10)
    up.journal.request_retry([dl])
    assert wait_for(lambda: not up.journal.dead_letters(), 20), up.journal.dead_letters()
    up.close()
    assert (wats.assets["FX-1"]["totalCount"], wats.assets["FX-1"]["runningCount"]) == (1030, 80)


def wats_last_id(up) -> str:
    return up.journal.get_state("wats:latest:asset.counters:FX-1")["id"]


def test_stopping_is_not_held_up_by_the_rate_budget(wats, tmp_path):
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path, requests_per_minute=2))
    up.bus.publish_many([result(i) for i in range(4)])
    assert wait_for(lambda: wats.unique_reports == 1, 10)  # the process list and one report used the budget
    t0 = time.monotonic()
    up.close()
    assert time.monotonic() - t0 < 3.0
    assert wats.unique_reports == 1  # the rest wait in the journal


def test_a_cached_process_list_is_refreshed_before_a_code_is_called_unknown(wats, tmp_path):
    (tmp_path / "wats-processes.json").write_text(json.dumps({"test_codes": [10]}))  # from before code 50 existed
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    up.bus.publish(result(1))
    assert wait_for(lambda: wats.unique_reports == 1, 10)
    dl = up.journal.dead_letters()
    up.close()
    assert dl == [] and wats.requests["GET /api/app/processes"] >= 1


def test_an_offline_cache_never_calls_a_code_unknown(wats, tmp_path):
    (tmp_path / "wats-processes.json").write_text(json.dumps({"test_codes": [10]}))  # from before code 50 existed
    wats.up = False
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    up.bus.publish(result(1))
    assert wait_for(lambda: up.sub.failed >= 2, 10)
    assert up.journal.dead_letters() == []  # WATS could not be asked: held, not dead-lettered
    wats.up = True
    assert wait_for(lambda: wats.unique_reports == 1, 15)
    up.close()
