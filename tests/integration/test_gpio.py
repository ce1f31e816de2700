"""GPIO source against gpiozero's mock pin factory (gpiozero's own test device)."""

import time

import msgspec
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockConnectedPin, MockFactory

from agent.sources.gpio_plugin import GpioSourceSection
from agent.events import Event, EventBus, Journal
from agent.sources.gpio import GpioSource
from tests.conftest import run_cli, wait_for

COUNTER, LID, PASS_LAMP, FAIL_LAMP, LOOP_OUT, LOOP_IN = 17, 27, 22, 23, 5, 6


@pytest.fixture
def pins():
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = None


def gpio_cfg(**kw):
    base = dict(asset_id="FX-1", counter_pin=COUNTER, counter_bounce="20ms", lid_pin=LID, pass_lamp_pin=PASS_LAMP,
                fail_lamp_pin=FAIL_LAMP, lamp_hold="0.3s", loopback_out_pin=LOOP_OUT, loopback_in_pin=LOOP_IN,
                selftest_interval="0")
    base.update(kw)
    return msgspec.convert(base, GpioSourceSection)



class Rig:
    """A journal, a bus and the GPIO source, as the runtime builds them."""

    def __init__(self, path, cfg):
        self.journal = Journal(path)
        self.bus = EventBus(self.journal)
        self.source = GpioSource(cfg)
        self.bus.register_transport(self.source)
        self.bus.start()
        assert wait_for(lambda: self.source.is_connected)

    def events(self, etype):
        return [Event.from_dict(msgspec.json.decode(r.body)) for r in self.journal.read_after(0, 10000)
                if r.type == etype]

    def close(self):
        self.bus.stop()
        self.journal.close()


def press(pins, n, gap=0.05):
    p = pins.pin(COUNTER)
    for _ in range(n):
        p.drive_low()
        time.sleep(gap)
        p.drive_high()
        time.sleep(gap)


def test_counter_is_debounced_persistent_and_never_goes_backwards(pins, tmp_path, write_config):
    pins.pin(COUNTER).drive_high()  # pulled up: idle
    rig = Rig(tmp_path / "data" / "journal.db", gpio_cfg())
    press(pins, 3)
    # contact bounce: several edges within the bounce time count once
    p = pins.pin(COUNTER)
    p.drive_low(); p.drive_high(); p.drive_low(); time.sleep(0.05); p.drive_high(); time.sleep(0.05)
    assert wait_for(lambda: len(rig.events("asset.counters")) == 4)
    assert [e.payload["total_count"] for e in rig.events("asset.counters")] == [1, 2, 3, 4]
    assert rig.source.bounces == 1
    rig.close()

    rig = Rig(tmp_path / "data" / "journal.db", gpio_cfg())  # a restart
    press(pins, 2)
    assert wait_for(lambda: len(rig.events("asset.counters")) == 6)
    last = rig.events("asset.counters")[-1].payload
    assert (last["running_count"], last["total_count"]) == (6, 6)
    # a reset from the shell while the agent runs: audited, and the next press counts from it
    cfg = write_config()
    out = run_cli("counters", "reset", "-c", str(cfg), "--asset", "FX-1", "--by", "tech-7", check=True)
    assert "running count reset to 0 (total 6)" in out.stdout
    press(pins, 1)
    assert wait_for(lambda: len(rig.events("asset.counters")) == 8)
    reset, after = (e.payload for e in rig.events("asset.counters")[-2:])
    assert reset["running_count"] == 0 and reset["total_count"] == 6
    assert reset["custom_data"] == {"reset": True, "reset_by": "tech-7", "previous_running_count": 6}
    assert (after["running_count"], after["total_count"]) == (1, 7)
    shown = run_cli("counters", "show", "-c", str(cfg), "--json", check=True).stdout
    assert msgspec.json.decode(shown) == {"FX-1": {"running_count": 1, "total_count": 7}}
    rig.close()


def test_lid_switch_reports_state_changes(pins, tmp_path):
    pins.pin(LID).drive_high()  # open at start (closed pulls it low)
    rig = Rig(tmp_path / "j.db", gpio_cfg(counter_pin=None))
    pins.pin(LID).drive_low()
    time.sleep(0.05)
    pins.pin(LID).drive_high()
    assert wait_for(lambda: len(rig.events("asset.state_changed")) == 3)
    states = [(e.payload["new_state"], e.payload["reason"]) for e in rig.events("asset.state_changed")]
    assert states == [("idle", "lid open (at start)"), ("busy", "lid closed"), ("idle", "lid open")]
    rig.close()


def test_lamps_follow_test_results_and_go_dark(pins, tmp_path):
    rig = Rig(tmp_path / "j.db", gpio_cfg(counter_pin=None, lid_pin=None, loopback_out_pin=None,
                                          loopback_in_pin=None))
    ok, bad = pins.pin(PASS_LAMP), pins.pin(FAIL_LAMP)

    def result(r, fixture="FX-1"):
        rig.bus.publish(Event.create("test.result", {"unit_id": "U", "result": r, "fixture_id": fixture,
                                                     "start_time": "2026-01-01T00:00:00Z"}))

    result("fail")
    assert wait_for(lambda: bad.state and not ok.state)
    result("pass", fixture="OTHER-FIXTURE")  # not ours: lamps unchanged
    time.sleep(0.1)
    assert bad.state and not ok.state
    result("pass")
    assert wait_for(lambda: ok.state and not bad.state)
    assert wait_for(lambda: not ok.state and not bad.state, 2)  # lamp_hold elapsed
    rig.close()


def test_loopback_selftest_passes_when_wired_and_fails_when_not(pins, tmp_path):
    in_pin = pins.pin(LOOP_IN)
    pins.pin(LOOP_OUT, pin_class=MockConnectedPin, input_pin=in_pin)
    rig = Rig(tmp_path / "a.db", gpio_cfg(counter_pin=None, lid_pin=None))
    assert wait_for(lambda: rig.events("test.result"))
    [good] = rig.events("test.result")
    assert good.payload["result"] == "pass" and len(good.payload["steps"]) == 4
    rig.close()
    pins.reset()

    pins.pin(LOOP_IN)
    pins.pin(LOOP_OUT)  # a broken wire: the output drives nothing
    rig = Rig(tmp_path / "b.db", gpio_cfg(counter_pin=None, lid_pin=None))
    assert wait_for(lambda: rig.events("test.result"))
    [broken] = rig.events("test.result")
    assert broken.payload["result"] == "fail"
    assert broken.payload["custom_data"]["test_type"] == "gpio_loopback"
    rig.close()


def test_presses_refused_by_a_full_journal_are_kept_and_counted_later(pins, tmp_path, monkeypatch):
    from agent.events.journal import JournalFull

    rig = Rig(tmp_path / "j.db", gpio_cfg(lid_pin=None, loopback_out_pin=None, loopback_in_pin=None))
    real = rig.bus.publish_many
    full = {"on": True}

    def maybe_full(*a, **kw):
        if full["on"]:
            raise JournalFull("journal full (test)")
        return real(*a, **kw)

    monkeypatch.setattr(rig.bus, "publish_many", maybe_full)
    press(pins, 3)
    assert rig.events("asset.counters") == []
    full["on"] = False
    assert wait_for(lambda: rig.events("asset.counters"), 3)  # the run loop retries the pending presses
    assert rig.events("asset.counters")[-1].payload["total_count"] == 3
    rig.close()
