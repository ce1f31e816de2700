"""Absolute counters are latest-wins by the device's own time (issue 16.5): a stale one is journaled and shown, never
sent over newer values; a total that goes down in absolute mode is sent, but flagged (warning and metric).

End to end with a real mosquitto, the agent as its own process and the WATS stand-in; the uplink's own rules with
the uplink in-process against the stand-in.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from agent.events import Event
from tests.agent_process import dead_letters, start_agent, status, stop_agent
from tests.conftest import run_cli, wait_for
from tests.integration.test_mqtt import broker, client, online, send  # noqa: F401 - the broker fixture
from tests.integration.test_wats_uplink import Uplink, sink_cfg, token_file, wats  # noqa: F401 - the wats fixture


def counters(asset, running, total, when=None, stale=None):
    e = Event.create("asset.counters", {"asset_id": asset, "running_count": running, "total_count": total,
                                        "timestamp": when or datetime.now(timezone.utc)}, source="mqtt:mqtt")
    if stale:
        e = msgspec.structs.replace(e, metadata=msgspec.structs.replace(e.metadata, custom={"stale": stale}))
    return e


def test_an_old_counters_message_does_not_set_wats_back(write_config, broker, wats, tmp_path):
    """The issue's case: values from today, then a message stamped 2026-01-26 (from a device's outbox)."""
    wats.register_asset("FX-7")
    cfg = write_config(f"""
[sources.mqtt]
port = {broker.port}
reconnect_min = "0.2s"
[sinks.wats]
url = "{wats.url}"
token_file = "{token_file(tmp_path, wats.token)}"
process_codes = {{ test = 50 }}
require_clock_sync = false
retry_max = "1s"
""")
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: online(cfg), 15)
        dev = client(broker.port, "esp32-fx7")
        now = datetime.now(timezone.utc)
        send(dev, "assets/FX-7/counters", {"running_count": 40, "total_count": 1523, "timestamp": now.isoformat()})
        assert wait_for(lambda: wats.assets["FX-7"]["totalCount"] == 1523, 15)
        send(dev, "assets/FX-7/counters", {"running_count": 11, "total_count": 102,
                                           "timestamp": "2026-01-26T08:00:00+00:00"})
        send(dev, "assets/FX-2/counters", {"running_count": 1, "total_count": 5})  # behind it, then drained
        assert wait_for(lambda: wats.assets["FX-2"]["totalCount"] == 5, 15)
        assert wait_for(lambda: status(cfg)["sources"]["mqtt:mqtt"].get("stale_counters") == 1, 10)
    finally:
        log = stop_agent(agent)
    assert wats.assets["FX-7"]["totalCount"] == 1523 and wats.assets["FX-7"]["runningCount"] == 40
    [dl] = dead_letters(cfg)  # journaled, and kept where it is seen, with the reason
    assert dl["subscriber"] == "wats" and "2026-01-26" in dl["reason"] and "not sent" in dl["reason"]
    assert "102" in run_cli("dlq", "list", str(dl["id"]), "--body", "-c", str(cfg), check=True).stdout  # whole
    assert "stale" in log and "Traceback" not in log


def test_a_stale_counters_event_is_not_sent_and_supersedes_nothing(wats, tmp_path):
    wats.register_asset("FX-1")
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    try:
        up.bus.publish_many([counters("FX-1", 5, 500), counters("FX-1", 1, 100, stale="stale: device time …")])
        assert wait_for(lambda: up.sub.cursor == up.journal.last_seq, 10)
        dls = up.journal.dead_letters()
    finally:
        up.close()
    # the newer value reached WATS though the stale one came after it in the same page (coalescing)
    assert wats.assets["FX-1"]["totalCount"] == 500 and wats.assets["FX-1"]["runningCount"] == 5
    assert len(dls) == 1 and "not sent: stale" in dls[0].reason
    assert up.sub.policy.circuit_breaker.is_closed


def test_a_total_that_goes_down_is_sent_but_flagged(wats, tmp_path, caplog):
    wats.register_asset("FX-1")
    up = Uplink(tmp_path, sink_cfg(wats, tmp_path))
    caplog.set_level(logging.WARNING)
    try:
        up.bus.publish(counters("FX-1", 5, 500))
        assert wait_for(lambda: wats.assets["FX-1"]["totalCount"] == 500, 10)
        up.bus.publish(counters("FX-1", 3, 30))  # the counter was replaced
        assert wait_for(lambda: wats.assets["FX-1"]["totalCount"] == 30, 10)
        up.bus.publish(counters("FX-1", 4, 31))  # going up again: nothing to say
        assert wait_for(lambda: wats.assets["FX-1"]["totalCount"] == 31, 10)
        metrics = up.bus.metrics.flagged
    finally:
        up.close()
    assert metrics[("wats", "total_went_down")] == 1
    warned = [r.getMessage() for r in caplog.records if "goes down" in r.getMessage()]
    assert len(warned) == 1 and "500" in warned[0] and "30" in warned[0]
