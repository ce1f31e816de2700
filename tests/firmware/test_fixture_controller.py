"""The fixture-controller example (MicroPython) against the agent's serial source over a pseudo-terminal: the
controller's UART is the pty's master side, the agent opens its slave side as it would /dev/ttyACM0. What the
fixture does becomes the expected events; messages made while the agent is dead are resent until acknowledged and
recorded once; a controller whose buffer overflowed says so, and the agent records the gap."""

from __future__ import annotations

import os
import re
import signal
import time
import tty

import pytest

from tests.agent_process import dead_letters, events, source_status, start_agent, stop_agent
from tests.conftest import ROOT, wait_for
from tests.firmware.board import Board

FIRMWARE = ROOT / "firmware_examples" / "fixture_controller"
COUNTER, LID, VACUUM, SUPPLY = 15, 14, 26, 27
WORLD = [f"uv {SUPPLY} 1650000", f"uv {VACUUM} 2000000"]  # 3.3 V rail behind a 1:2 divider, vacuum fine


@pytest.fixture
def pty_port():
    """(master fd for the controller, slave path for the agent). Raw mode is set here, before either end opens:
    a pty starts out echoing, and a controller would read its own lines back."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)
    yield master, path
    os.close(master)


@pytest.fixture
def agent_cfg(write_config, pty_port):
    return write_config(f"""
[[sources.serial]]
name = "fixture"
port = "{pty_port[1]}"
driver = "jsonl"
asset_id = "FX-1"
""")


def controller(tmp_path, pty_port, **over) -> Board:
    config = {"uart": 0, "counter_pin": COUNTER, "debounce_ms": 30, "lid_pin": LID, "vacuum_adc_pin": VACUUM,
              "supply_adc_pin": SUPPLY, "counters_every_s": 0.05, "resend_ms": 300, **over}
    return Board(FIRMWARE, tmp_path / "flash", config, uart_fds={0: pty_port[0]}, world=WORLD, umqtt=False)


def of(cfg, etype):
    return [e["payload"] for e in events(cfg, etype)]


def totals(cfg):
    return [c["total_count"] for c in of(cfg, "asset.counters")]


def online(cfg) -> bool:
    return bool(source_status(cfg, "serial:fixture").get("online"))


def test_counters_selftest_lid_and_vacuum_fault_become_events(tmp_path, pty_port, agent_cfg):
    agent = start_agent(agent_cfg)
    board = controller(tmp_path, pty_port)
    try:
        board.boot()
        assert wait_for(lambda: online(agent_cfg), 20), board.log()
        assert wait_for(lambda: of(agent_cfg, "test.result"), 20), board.log()
        (selftest,) = of(agent_cfg, "test.result")
        assert selftest["result"] == "pass" and selftest["unit_id"] == "FX-1"
        assert [s["name"] for s in selftest["steps"]] == ["VCC", "Vacuum sensor"]
        board.press(COUNTER, 5)
        assert wait_for(lambda: 5 in totals(agent_cfg), 20), board.log()
        board.set_level(LID, 0)
        assert wait_for(lambda: "busy" in [s["new_state"] for s in of(agent_cfg, "asset.state_changed")], 20)
        board.set_level(LID, 1)
        board.set_uv(VACUUM, 500_000)
        assert wait_for(lambda: of(agent_cfg, "asset.fault"), 20), board.log()
        board.set_uv(VACUUM, 2_000_000)
        assert wait_for(lambda: len(of(agent_cfg, "asset.fault")) == 2, 20), board.log()
        raised, cleared = of(agent_cfg, "asset.fault")
        assert (raised["fault_code"], raised.get("cleared", False), raised["severity"]) == ("E17", False, "warning")
        assert (cleared["fault_code"], cleared["cleared"]) == ("E17", True)
        states = [s["new_state"] for s in of(agent_cfg, "asset.state_changed") if s["asset_id"] == "FX-1"]
        assert states[0] == "online"  # the hello
        assert wait_for(lambda: [s["new_state"] for s in of(agent_cfg, "asset.state_changed")][-2:] == ["busy", "idle"])
        identity = source_status(agent_cfg, "serial:fixture")
        assert "1.0.0" in str(identity), identity  # hello's firmware version reached the agent's status
        assert not dead_letters(agent_cfg)
    finally:
        board.power_cut()
        stop_agent(agent)


def test_resent_until_acknowledged_across_an_agent_crash_and_recorded_once(tmp_path, pty_port, agent_cfg):
    agent = start_agent(agent_cfg)
    board = controller(tmp_path, pty_port)
    try:
        board.boot()
        assert wait_for(lambda: 0 in totals(agent_cfg), 20), board.log()
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        for _ in range(10):
            board.press(COUNTER, 1)  # counters messages, none acknowledged while the agent is dead
            time.sleep(0.08)
        board.set_level(LID, 0)
        agent = start_agent(agent_cfg)
        assert wait_for(lambda: 10 in totals(agent_cfg), 30), board.log()
        assert wait_for(lambda: "busy" in [s["new_state"] for s in of(agent_cfg, "asset.state_changed")], 10)
        time.sleep(1.0)  # a few more resend periods: nothing may arrive twice
        t = totals(agent_cfg)
        assert t[0] == 0 and t[-1] == 10 and t == sorted(set(t)), t  # none lost (absolute), none twice, in order
        assert [s["new_state"] for s in of(agent_cfg, "asset.state_changed")].count("busy") == 1
        assert not dead_letters(agent_cfg)
    finally:
        board.power_cut()
        stop_agent(agent)


def test_a_full_controller_buffer_drops_the_oldest_and_the_agent_records_the_gap(tmp_path, pty_port, agent_cfg):
    agent = start_agent(agent_cfg)
    board = controller(tmp_path, pty_port, buffer_messages=5)
    try:
        board.boot()
        # seq 1 … 4 at boot: hello, counters 0, self-test, state idle
        assert wait_for(lambda: "idle" in [s["new_state"] for s in of(agent_cfg, "asset.state_changed")], 20)
        stop_agent(agent)
        for _ in range(12):  # seq 5 …; with one counters message per press 12 … 16 are all the buffer keeps
            board.press(COUNTER, 1)
            time.sleep(0.2)
        agent = start_agent(agent_cfg)
        assert wait_for(lambda: 12 in totals(agent_cfg), 30), board.log()
        t = totals(agent_cfg)
        assert t[0] == 0 and t[-1] == 12 and len(t) <= 6 and t == sorted(set(t)), t  # the total is right anyway
        (gap,) = dead_letters(agent_cfg)
        lost, first = map(int, re.match(r"(\d+) message\(s\) before seq (\d+) of this session", gap["reason"]).groups())
        assert lost >= 1 and first == 4 + lost + 1, gap  # the agent had seq 1 … 4; the controller kept from there
    finally:
        board.power_cut()
        stop_agent(agent)
