"""Reload without restart (SIGHUP), the agent as a real process.

Under load: the simulated station and the MQTT source busy (a paho client publishing results and counters to a
mosquitto started here) while the WATS section changes three times against the strict WATS stand-in: the rate
limit (and the reports really slow down to it), the timeout with the limit lifted again, and a products rule (and
results published after it are filed under its part number); then the station is switched off (that source alone
stops, so the count settles). Every journaled result is in WATS exactly once by id, and only what changed was
restarted: the MQTT source kept its one broker connection and its counters, the journal and the simulated station
ran on through the WATS changes. A config that does not validate, one preflight refuses and a change to
[journal] are each refused with one log line naming the key, and the agent keeps delivering; a serial entry is
restarted alone, by its name, and reordering the entries restarts nothing.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.agent_process import agent_log, dead_letters, events, source_status, start_agent, status, stop_agent
from tests.conftest import free_port, run_cli, wait_for
from tests.mosquitto import Mosquitto
from tests.wats_standin import WatsStandIn

TOKEN = "dGVzdDp0ZXN0"
INGEST_ID = "reload-ingest"


class TimedStandIn(WatsStandIn):
    """The strict stand-in, also noting when each report arrived (to see a rate limit take effect)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.report_times: list[float] = []

    def _report(self, h, body: bytes) -> None:
        super()._report(h, body)
        with self.lock:
            self.report_times.append(time.monotonic())

    def reports_between(self, t0: float, t1: float) -> int:
        with self.lock:
            return sum(1 for t in self.report_times if t0 <= t < t1)


@pytest.fixture
def wats():
    w = TimedStandIn(token=TOKEN)
    yield w
    w.close()


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def token_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "wats.token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    return path


def wats_section(wats: WatsStandIn, tmp_path: Path, *, rpm: int = 100000, timeout: str = "2s", rules: str = "",
                 extra: str = "") -> str:
    return f"""
        [sinks.wats]
        url = "{wats.url}"
        token_file = "{tmp_path / 'wats.token'}"
        process_codes = {{ test = 50 }}
        default_process_code = 50
        default_part_number = "PN-1"
        require_clock_sync = false
        requests_per_minute = {rpm}
        retry_max = "500ms"
        timeout = "{timeout}"
        {extra}
        {rules}
    """


OLD_RULE = '[[sinks.wats.products]]\nmatch = "R-OLD"\npart_number = "PN-OLD"'
NEW_RULE = '[[sinks.wats.products]]\nmatch = "R-NEW"\npart_number = "PN-NEW"\nrevision = "B"'


def published(metrics_port: int, event_type: str) -> int:
    """How many events of ``event_type`` this agent process has journaled (``/metrics``): the journal itself keeps
    an event only until every subscriber has it."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    m = re.search(r'events_published_total\{type="' + re.escape(event_type) + r'"\} (\d+)', text)
    return int(m.group(1)) if m else 0


def mqtt_section(port: int) -> str:
    return f"""
        [sources.mqtt]
        port = {port}
        client_id = "{INGEST_ID}"
        rate_limit = 100000
        rate_burst = 100000
        reconnect_min = "0.2s"
        reconnect_max = "1s"
    """


def reload_and_wait(agent, cfg: Path, n: int) -> dict:
    """SIGHUP, then the agent's record of its ``n``-th reload (``status --json``'s ``config``). ``cfg``: a valid
    config of the same data directory (``status`` reads the agent's file only to see whether it changed)."""
    agent.send_signal(signal.SIGHUP)

    def recorded() -> dict | None:
        doc = status(cfg).get("config") or {}
        return doc if doc.get("reloads", 0) >= n else None

    assert wait_for(recorded, 30, 0.2), agent_log(agent)[-3000:]
    assert agent.poll() is None, agent_log(agent)[-3000:]
    return recorded()["last_reload"]


def backlog(cfg: Path, name: str = "wats") -> int:
    return next((s["backlog"] for s in status(cfg)["subscribers"] if s["name"] == name), -1)


class Publisher(threading.Thread):
    """A tester and a counter on the broker, publishing as fast as a fixture line would (QoS 1)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tester-1", protocol=mqtt.MQTTv5)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.recipe, self.prefix = "R-OLD", "MQ"
        self.sent: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stopped.is_set():
            sn = f"{self.prefix}-{i:05d}"
            info = self.c.publish("testers/T-1/results", json.dumps(
                {"serial_number": sn, "result": "pass" if i % 5 else "fail", "recipe": self.recipe}), qos=1)
            self.c.publish("assets/FX-1/counters", json.dumps({"running_count": i, "total_count": i}), qos=1)
            info.wait_for_publish(10)
            self.sent.append(sn)
            i += 1
            time.sleep(0.02)

    def close(self) -> None:
        self.stopped.set()
        self.join(10)
        self.c.loop_stop()
        self.c.disconnect()


def test_wats_section_changed_three_times_under_load_loses_nothing_and_restarts_only_wats(
        write_config, tmp_path, wats, broker):
    token_file(tmp_path)
    metrics_port = free_port()
    write = lambda rules=OLD_RULE, station=True, **kw: write_config(  # noqa: E731
        mqtt_section(broker.port) + wats_section(wats, tmp_path, rules=rules, **kw)
        + ("" if station else "[sources.simulated]\nenabled = false\n"), simulated=station, metrics_port=metrics_port)
    cfg = write()
    agent = start_agent(cfg)
    publisher = None
    try:
        assert wait_for(lambda: source_status(cfg, "mqtt:mqtt").get("online"), 20), agent_log(agent)
        publisher = Publisher(broker.port)
        publisher.start()
        assert wait_for(lambda: wats.unique_reports > 50, 30)
        received = [source_status(cfg, "mqtt:mqtt")["received"]]

        # 1: the rate limit. The new sink holds to it: at most 30 requests in a minute, reports among them
        write(rpm=30)
        t_hup = time.monotonic()
        last = reload_and_wait(agent, cfg, 1)
        assert (last["result"], last["restarted"]) == ("applied", ["sinks.wats"]), last
        t0 = time.monotonic()
        time.sleep(4.0)
        t1 = time.monotonic()
        throttled, since_hup, held = wats.reports_between(t0, t1), wats.reports_between(t_hup, t1), backlog(cfg)
        assert throttled <= 30, throttled  # all the new sink's
        assert since_hup <= 30 + 10, since_hup  # and the old one's last few before it stopped
        assert held > 50, held  # the load outruns 30 a minute: the limit is what holds the reports back
        received.append(source_status(cfg, "mqtt:mqtt")["received"])

        # 2: the timeout, with the limit lifted: the backlog drains
        write(rpm=100000, timeout="5s")
        last = reload_and_wait(agent, cfg, 2)
        assert (last["result"], last["restarted"]) == ("applied", ["sinks.wats"]), last
        assert wait_for(lambda: backlog(cfg) < 50, 60, 0.5), backlog(cfg)
        received.append(source_status(cfg, "mqtt:mqtt")["received"])

        # 3: a products rule; results published once it runs are filed under its part number
        write(rpm=100000, timeout="5s", rules=OLD_RULE + "\n" + NEW_RULE)
        last = reload_and_wait(agent, cfg, 3)
        assert (last["result"], last["restarted"]) == ("applied", ["sinks.wats"]), last
        publisher.recipe, publisher.prefix = "R-NEW", "NEW"
        time.sleep(3.0)
        publisher.close()
        n_sent = len(publisher.sent)
        # every result the tester published was acknowledged, so journaled
        assert published(metrics_port, "test.result") > n_sent
        # 4: the station switched off (so the count can settle): that source alone stops
        write(rpm=100000, timeout="5s", rules=OLD_RULE + "\n" + NEW_RULE, station=False)
        last = reload_and_wait(agent, cfg, 4)
        assert (last["result"], last["restarted"]) == ("applied", ["sources.simulated"]), last
        assert wait_for(lambda: backlog(cfg) == 0, 60, 0.5), backlog(cfg)
        received.append(source_status(cfg, "mqtt:mqtt")["received"])
        doc = status(cfg)["config"]
        journaled = published(metrics_port, "test.result") + published(metrics_port, "inspection.result")
    finally:
        if publisher is not None and not publisher.stopped.is_set():
            publisher.close()
        log = stop_agent(agent)

    # nothing lost, nothing twice: every journaled result is in WATS exactly once, by its id
    # (by count from the agent's own counter, since the journal lets go of what every subscriber has; by id below)
    assert wats.unique_reports == journaled, (wats.unique_reports, journaled)
    assert wats.duplicates() == {}
    assert wats.refusals() == []
    assert dead_letters(cfg) == []
    sent_serials = {r["sn"] for r in wats.reports.values()}
    assert set(publisher.sent) <= sent_serials, sorted(set(publisher.sent) - sent_serials)[:5]
    # the rule took effect: what was published after the third reload is filed under it
    new = [r for r in wats.reports.values() if r["sn"].startswith("NEW-")]
    assert new and all((r["pn"], r["rev"]) == ("PN-NEW", "B") for r in new), {(r["pn"], r["rev"]) for r in new}
    assert {r["pn"] for r in wats.reports.values() if r["sn"].startswith("MQ-")} == {"PN-OLD"}

    # only the WATS sink was restarted, three times; the sources, the journal and the rest ran on
    assert log.count("restarting sinks.wats; everything else keeps running") == 3, log
    assert log.count("restarting ") == 4 and "restarting sources.simulated;" in log, log
    assert "reload refused" not in log
    connects = [ln for ln in broker.log.read_text().splitlines() if f" as {INGEST_ID} " in ln]
    assert len(connects) == 1, connects  # the MQTT source never reconnected
    assert received == sorted(received) and received[0] > 0, received  # its counters never went back to 0
    assert doc["reloads"] == 4 and doc["file_changed"] is False


def test_a_bad_config_a_preflight_problem_and_a_journal_change_are_refused_by_key(write_config, tmp_path, wats):
    token_file(tmp_path)
    good = wats_section(wats, tmp_path)
    cfg = write_config(good, simulated=True)
    reader = write_config(good, simulated=True, name="reader.toml")  # what status -c reads while cfg is bad
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: wats.unique_reports > 5, 30), agent_log(agent)
        refusals = []

        def refused(text: str, n: int, key: str) -> str:
            cfg.write_text(text)
            last = reload_and_wait(agent, reader, n)
            assert (last["result"], last["key"]) == ("refused", key), last
            before = wats.unique_reports
            assert wait_for(lambda: wats.unique_reports > before + 5, 20)  # still delivering, as configured before
            refusals.append(key)
            return last["reason"]

        base = cfg.read_text()
        # fails validation
        reason = refused(base.replace("requests_per_minute = 100000", "requests_per_minute = 0"), 1,
                         "sinks.wats.requests_per_minute")
        assert "requests_per_minute = 0" in reason and "must be more than 0" in reason
        # validates, but preflight refuses it (a token others can read)
        (tmp_path / "wats.token").chmod(0o644)
        reason = refused(base.replace('timeout = "2s"', 'timeout = "3s"'), 2, "sinks.wats.token_file")
        assert "wats.token" in reason
        (tmp_path / "wats.token").chmod(0o600)
        # [journal] cannot change while the agent runs
        reason = refused(base.replace('max_bytes = "64MB"', 'max_bytes = "32MB"'), 3, "journal.max_bytes")
        assert "restart" in reason
        shown = status(reader)  # the running agent's record, and its file no longer the one it runs
        text = run_cli("status", "-c", str(reader), check=True).stdout
        assert shown["config"]["file_changed"] is True
        assert "REFUSED" in text and "journal.max_bytes changed" in text and "the config file changed" in text

        # fixed: applied, and status says so
        cfg.write_text(base.replace('timeout = "2s"', 'timeout = "3s"'))
        last = reload_and_wait(agent, reader, 4)
        assert (last["result"], last["restarted"]) == ("applied", ["sinks.wats"]), last
        assert status(reader)["config"]["file_changed"] is False
        assert agent.poll() is None
    finally:
        log = stop_agent(agent)
    lines = [ln for ln in log.splitlines() if "reload refused" in ln]
    assert len(lines) == 3, lines  # one line each, naming the key
    for line, key in zip(lines, refusals):
        assert key in line and "the running config is kept" in line, line
    assert wats.duplicates() == {}


def test_serial_entries_are_restarted_by_name_and_reordering_them_restarts_nothing(write_config, tmp_path):
    def serial(name: str, asset: str) -> str:
        return f"""
            [[sources.serial]]
            name = "{name}"
            port = "simulator:jsonl"
            driver = "jsonl"
            asset_id = "{asset}"
        """

    cfg = write_config(serial("fx1", "A-1") + serial("fx2", "A-2"))
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: source_status(cfg, "serial:fx1").get("online")
                        and source_status(cfg, "serial:fx2").get("online"), 30), agent_log(agent)
        write_config(serial("fx2", "A-2") + serial("fx1", "A-1"))
        last = reload_and_wait(agent, cfg, 1)
        assert last["result"] == "unchanged", last
        write_config(serial("fx2", "A-22") + serial("fx1", "A-1"))
        last = reload_and_wait(agent, cfg, 2)
        assert (last["result"], last["restarted"]) == ("applied", ["sources.serial[name=fx2]"]), last
        # the restarted entry runs its new section on a fresh simulator
        assert wait_for(lambda: any(e["payload"].get("asset_id") == "A-22" for e in events(cfg)), 30)
        assert source_status(cfg, "serial:fx1").get("online")
    finally:
        log = stop_agent(agent)
    assert "restarting sources.serial[name=fx2]; everything" in log
