"""The MicroPython examples' own files run under MicroPython's own interpreter (its WebAssembly port, under Node),
not only under CPython: what MicroPython lacks or does differently (a module attribute a port does not have, ticks
that wrap, its json, its exceptions, its file and os functions) fails here.

The board: the example's files and ``micropython_common`` on "flash" (the working directory, kept across a reset),
``/lib`` holding what ``mip`` would install (the real umqtt.simple) and the stand-ins for what the port has no
hardware for (``tests/firmware/wasm_board``: ``machine``, ``network``, and ``usocket`` whose other end is an MQTT
broker in memory). A reset is a new interpreter: RAM is lost, flash is not. What the firmware writes is read by the
agent's own code (its MQTT adapters, its serial JSON-lines parser), as in the tests under CPython.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent.config import parse_config
from agent.events import EventBus
from agent.protocols import jsonlines
from agent.sources.mqtt import MqttSource
from tests.conftest import ROOT
from tests.firmware.micropython_wasm import MicroPython, MicroPythonError, Unavailable, board_files
from tests.firmware.umqtt_package import umqtt_simple_dir

EXAMPLES = ROOT / "firmware_examples"
DEVICE, CONTROLLER = EXAMPLES / "esp32_micropython", EXAMPLES / "fixture_controller"
COMMON = EXAMPLES / "micropython_common"
STANDINS = Path(__file__).resolve().parent / "wasm_board"
WEEK_MS = 7 * 24 * 3600 * 1000


@pytest.fixture(scope="module")
def mp():
    """One Node process for the module; each test boots its own interpreter in it."""
    try:
        m = MicroPython()
    except Unavailable as e:
        pytest.skip(str(e))
    yield m
    m.close()


def flash(mp: MicroPython, example: Path, config: dict | None = None, *, keep: bool = False) -> None:
    """Power on a board flashed with ``example``: with ``keep`` what the last boot left on flash is still there."""
    files = {**board_files(example, COMMON, under="/flash"), **board_files(STANDINS, under="/lib"),
             "/lib/umqtt/simple.py": (umqtt_simple_dir() / "umqtt" / "simple.py").read_bytes()}
    if config is not None:
        files["/flash/config.json"] = json.dumps(config).encode()
    mp.boot(files, keep=("/flash",) if keep else ())


# --------------------------------------------------------------------------------------------- every module

@pytest.mark.parametrize("example", [DEVICE, CONTROLLER])
def test_every_module_compiles_and_imports_under_micropython(mp, example):
    flash(mp, example)
    names = sorted(p.stem for p in [*example.glob("*.py"), *COMMON.glob("*.py")] if p.stem != "main")
    out = mp.run(f"""
import sys
for name in {names!r}:
    compile(open(name + '.py').read(), name + '.py', 'exec')
    __import__(name)
print(sys.implementation.name, sorted(k for k in sys.modules if k in {names!r}))
""")
    assert out.split(None, 1) == ["micropython", f"{names}\n"]


# --------------------------------------------------------------------------------------------- the outbox

def test_outbox_is_bounded_survives_a_torn_write_and_reports_what_it_dropped(mp):
    flash(mp, DEVICE)
    out = mp.run("""
import os
from outbox import Outbox
os.mkdir('s')
box = Outbox('s', 5)
for i in range(8):
    box.append('assets/X/counters', '{"total_count": %d}' % i)
print(len(box), box.dropped, box.peek())
box.pop()
with open(box.path, 'a') as f:
    f.write('assets/X/counters\\t{"total_co')  # a power cut in the middle of an append
""")
    assert out == "5 3 ('assets/X/counters', '{\"total_count\": 3}')\n"
    flash(mp, DEVICE, keep=True)  # a reset: the outbox is what flash holds
    out = mp.run("""
import os
from outbox import Outbox
box = Outbox('s', 5)
print(len(box))
box.append('assets/X/counters', '{"total_count": 8}')
while box.peek() is not None:
    print(box.peek()[1])
    box.pop()
print(os.listdir('s'))
""")
    assert out.splitlines() == ["4"] + [f'{{"total_count": {i}}}' for i in (4, 5, 6, 7, 8)] + ["[]"]


def test_an_offset_left_behind_by_a_power_cut_is_not_applied_to_a_new_outbox(mp):
    flash(mp, DEVICE)
    out = mp.run("""
import os
from outbox import Outbox
os.mkdir('s')
open('s/outbox.pos', 'w').write('500')
open('s/outbox.txt', 'w').write('a/b\\t{"n": 1}\\na/b\\t{"n": 2}\\n')
box = Outbox('s', 5)
print(len(box), box.peek())
""")
    assert out == "2 ('a/b', '{\"n\": 1}')\n"


def test_the_outbox_micropython_writes_is_the_one_cpython_reads(mp, tmp_path, monkeypatch):
    """Same format whichever interpreter wrote it (and the Arduino example shares it): MicroPython's file offsets
    (``tell``/``seek`` on a text file) and its json (unicode kept as UTF-8) agree with CPython's."""
    flash(mp, DEVICE)
    mp.run("""
import json, os
from outbox import Outbox
os.mkdir('s')
box = Outbox('s', 10)
for doc in ({"n": 1, "note": "Prüfling ✓"}, {"n": 2, "tab": "a\\tb\\nc"}, {"n": 3}):
    box.append('assets/X/counters', json.dumps(doc))
box.pop()
""")
    for path, data in mp.read("/flash/s").items():
        (tmp_path / Path(path).name).write_bytes(data)
    monkeypatch.syspath_prepend(str(DEVICE))
    sys.modules.pop("outbox", None)
    from outbox import Outbox

    box = Outbox(str(tmp_path), 10)
    docs = []
    while (m := box.peek()) is not None:
        docs.append(json.loads(m[1]))
        box.pop()
    assert docs == [{"n": 2, "tab": "a\tb\nc"}, {"n": 3}]


# --------------------------------------------------------------------------------------------- the counter

def test_each_bouncing_press_counts_once_and_the_totals_survive_a_reset(mp):
    flash(mp, DEVICE)
    out = mp.run("""
import os, machine
from counter import Counter
os.mkdir('s')
c = Counter(4, 30, 's/counters.json')
machine.press(4, 7)  # each press: 3 falling edges on closing, 2 on opening
print(c.take(), c.running, c.total, c.take())
""")
    assert out == "True 7 7 False\n"
    flash(mp, DEVICE, keep=True)
    out = mp.run("""
import machine
from counter import Counter
open('s/counters.json.new', 'w').write('{"running": 9')  # a power cut while saving: the old file stands
c = Counter(4, 30, 's/counters.json')
machine.press(4, 2)
c.take()
print(c.running, c.total)
""")
    assert out == "9 9\n"


def test_the_first_press_after_a_week_of_quiet_is_counted(mp):
    """MicroPython's ticks wrap, and ``ticks_diff`` says a time 6.2 to 12.4 days ago is in the future: with the
    last edge a week old the first press looked like contact bounce and was lost (CPython's ticks never wrap)."""
    flash(mp, DEVICE)
    out = mp.run(f"""
import os, time, machine, clock
now = [time.ticks_ms()]
clock.ticks_ms = lambda: now[0]  # the firmware's clock, moved by the test: MicroPython's ticks_add and ticks_diff
from counter import Counter
os.mkdir('s')
c = Counter(4, 30, 's/counters.json')

def later(ms):
    while ms:
        step = min(ms, 3600 * 1000)
        now[0] = time.ticks_add(now[0], step)
        ms -= step
        c.take()  # the main loop folds the count in every few seconds; an hour apart is as good here

machine.drive(4, 0); later(60); machine.drive(4, 1)
later(1000)
print(c.total)
later({WEEK_MS})
machine.drive(4, 0); later(60); machine.drive(4, 1)
later(1000)
print(c.total)
""")
    assert out == "1\n2\n"


# --------------------------------------------------------------------------------------------- the clock

def test_the_schedule_runs_each_job_at_boot_then_every_period_across_the_ticks_wrap(mp):
    flash(mp, DEVICE)
    out = mp.run(f"""
import time, clock
now = [time.ticks_add(0, -150)]  # 150 ms before the ticks wrap
clock.ticks_ms = lambda: now[0]
s = clock.Schedule({{"fast": 100, "weekly": {WEEK_MS}}})
seen = []
for _ in range(40):  # 400 ms in steps of 10 across the wrap
    seen.append(sorted(s.due()))
    now[0] = time.ticks_add(now[0], 10)
print(seen[0], [i for i, d in enumerate(seen) if d == ["fast"]])
for _ in range(7 * 24):  # then a week, an hour a step
    now[0] = time.ticks_add(now[0], 3600 * 1000)
    if "weekly" in s.due():
        print("weekly after", _ + 1, "hours")
""")
    first, rest = out.splitlines()[0].split("] ", 1)
    assert first == "['fast', 'weekly'" and rest == "[10, 20, 30]"  # due at boot, then every 100 ms
    assert out.splitlines()[1:] == ["weekly after 168 hours"]


# --------------------------------------------------------------------------------------------- the device

GOOD = {34: 1_650_000, 35: 1_650_000}  # 3.30 V behind the 1:2 divider; the NTC at 25 °C


def device_config(**over) -> dict:
    return {"device_id": "ESP-12", "wifi_ssid": "fixture-lan", "wifi_password": "x", "broker_host": "192.168.50.1",
            "mqtt_user": "ESP-12", "mqtt_password": "ESP-12-secret", "counter_pin": 4, "debounce_ms": 30,
            "supply_adc_pin": 34, "ntc_adc_pin": 35, "selftest_every_s": 3600, "environment_every_s": 3600,
            "counters_every_s": 0.05, "reconnect_min_s": 0.02, "reconnect_max_s": 0.1, "buffer_messages": 200,
            **over}


BOOT_DEVICE = """
import json, time, machine, usocket
from device import Device, LOOP_MS
for pin, uv in {uv!r}.items():
    machine.set_uv(pin, uv)
usocket.BROKER.users = {{"ESP-12": "ESP-12-secret"}}
with open("config.json") as f:
    dev = Device(json.load(f))

def run(ms):
    t = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t) < ms:
        dev.step()
        time.sleep_ms(LOOP_MS)
"""


def adapt(published: list, journal) -> list:
    """What the agent's MQTT ingest makes of what the device published: (topic, [events])."""
    src = MqttSource(parse_config('[agent]\nstation = "s"\n[sources.mqtt]\n').sources.mqtt, "s")
    src.set_event_bus(EventBus(journal))
    out = []
    for topic, payload, _retain, _qos in published:
        msg = mqtt.MQTTMessage(mid=1, topic=topic.encode())
        msg.payload = payload.encode()
        out.append((topic, src.adapt(msg, datetime.now(timezone.utc))))
    return out


def test_what_the_device_publishes_under_micropython_the_agent_reads(mp, journal):
    flash(mp, DEVICE, device_config(selftest_every_s=0.3, environment_every_s=0.3))
    mp.run(BOOT_DEVICE.format(uv=GOOD))
    mp.run("run(200); machine.press(4, 3); run(150); machine.set_uv(34, 1500000); run(400)")
    published = mp.json("usocket.BROKER.published")
    connect = mp.json("[{k: (v.decode() if isinstance(v, bytes) else v) for k, v in c.items()} "
                      "for c in usocket.BROKER.connects]")
    assert connect[0]["will_topic"] == "assets/ESP-12/status" and connect[0]["will_retain"]
    assert json.loads(connect[0]["will_message"]) == {"status": "offline"} and connect[0]["will_qos"] == 1
    assert (connect[0]["user"], connect[0]["password"], connect[0]["keepalive"]) == ("ESP-12", "ESP-12-secret", 60)
    assert published[0][:3] == ["assets/ESP-12/status", '{"status": "online"}', True]
    assert all(qos == 1 for *_, qos in published)
    events = adapt(published, journal)
    by_kind: dict[str, list] = {}
    for topic, evs in events:
        assert len(evs) == 1, (topic, evs)
        by_kind.setdefault(topic.rsplit("/", 1)[1], []).append(evs[0])
    assert by_kind["status"][0].payload["new_state"] == "online"
    totals = [e.payload["total_count"] for e in by_kind["counters"]]
    assert totals == [0, 3] and all(e.payload["asset_id"] == "ESP-12" for e in by_kind["counters"])
    env = by_kind["environment"][0].payload
    assert env["readings"] == {"supply_voltage": 3.3, "temperature": pytest.approx(25.0, abs=0.1)}
    assert env["units"] == {"supply_voltage": "V", "temperature": "C"}
    first, *_, last = by_kind["selftest"]
    assert first.event_type == "test.result" and first.payload["result"] == "pass"
    assert [s["name"] for s in first.payload["steps"]] == ["vcc", "ntc_temperature", "counter_input_idle",
                                                          "flash_free_kb"]
    assert last.payload["result"] == "fail" and last.payload["steps"][0]["status"] == "fail"  # the rail sagged
    for topic, evs in events:  # MicroPython's clock is set here: every event keeps the time the device made it
        if not topic.endswith("/status"):
            made = datetime.fromisoformat(json.loads(dict((t, p) for t, p, *_ in published)[topic])["timestamp"])
            assert abs((datetime.now(timezone.utc) - made).total_seconds()) < 60, topic


def test_what_is_made_while_the_broker_is_down_arrives_in_order_across_a_power_cut(mp):
    flash(mp, DEVICE, device_config())
    mp.run(BOOT_DEVICE.format(uv=GOOD))
    mp.run("run(200); machine.press(4, 3); run(150); usocket.BROKER.stop()")
    for _ in range(5):  # one counters message per press, each its own absolute value
        mp.run("machine.press(4, 1); run(80)")
    assert mp.json("len(dev.outbox)") == 5
    assert mp.json("[t for t, *_ in usocket.BROKER.published].count('assets/ESP-12/counters')") == 2  # 0 and 3
    mp.run("machine.press(4, 1)")  # pressed, counted in the interrupt, not yet taken: lost with RAM at the cut
    flash(mp, DEVICE, device_config(), keep=True)  # the power cut: a new interpreter, flash as it was
    mp.run(BOOT_DEVICE.format(uv=GOOD) + "usocket.BROKER.stop()\nrun(150)\n")
    assert mp.json("len(dev.outbox)") == 5 + 3  # + the boot's counters, self-test and environment
    mp.run("machine.press(4, 2); run(150); usocket.BROKER.start(); run(400)")
    assert mp.json("len(dev.outbox)") == 0 and "outbox.txt" not in mp.run("print(__import__('os').listdir('state'))")
    published = mp.json("usocket.BROKER.published")
    assert published[0][0] == "assets/ESP-12/status"
    totals = [json.loads(p)["total_count"] for t, p, *_ in published if t.endswith("/counters")]
    assert totals == [4, 5, 6, 7, 8, 8, 10], totals  # kept from before the cut, the boot's own, the new presses
    topics = [t.rsplit("/", 1)[1] for t, *_ in published]
    assert topics == ["status"] + ["counters"] * 6 + ["selftest", "environment", "counters"], topics


def test_a_broker_that_stops_answering_costs_a_reconnect_not_a_message(mp):
    """A half-open connection (the access point lost power): umqtt.simple's publish waits for its PUBACK, and
    MicroPython's socket timeout (OSError ETIMEDOUT) is what ends the wait; the message stays in the outbox."""
    flash(mp, DEVICE, device_config())
    mp.run(BOOT_DEVICE.format(uv=GOOD))
    out = mp.run("run(150); usocket.BROKER.silent = True; machine.press(4, 1); run(100)")
    assert "publish: OSError(110" in out, out
    assert mp.json("len(dev.outbox)") >= 1
    mp.run("usocket.BROKER.start(); run(300)")
    assert mp.json("len(dev.outbox)") == 0
    totals = [json.loads(p)["total_count"] for t, p, *_ in mp.json("usocket.BROKER.published")
              if t.endswith("/counters")]
    assert totals[0] == 0 and totals[-1] == 1


@pytest.mark.parametrize("counters", [b"\xff\xfe{", b'{"running": 1e999, "total": 2}', b"[1, 2]", b"null"])
def test_damaged_state_on_flash_does_not_stop_the_device_at_boot(mp, counters):
    """MicroPython's text files raise UnicodeError on bytes that are not UTF-8: an outbox line torn inside a
    character (or damaged) stopped the device at every boot, and so did a counters file that parses to the wrong
    thing. The damaged line is dropped and reported (``dropped`` in the online status), the good ones are sent."""
    flash(mp, DEVICE, device_config())
    line = 'assets/ESP-12/counters\t{"running_count": %d, "total_count": %d}\n'
    outbox = ((line % (1, 1)).encode() + b'assets/ESP-12/counters\t{"note": "\xff\xfe"}\n' + (line % (2, 2)).encode()
              + 'devices/ESP-12/selftest\t{"note": "Prü'.encode()[:-1])  # the power cut came inside the ü
    mp.run(f"""
import os
os.mkdir('state')
open('state/counters.json', 'wb').write({counters!r})
open('state/outbox.txt', 'wb').write({outbox!r})
""")
    mp.run(BOOT_DEVICE.format(uv=GOOD) + "run(200)\n")
    published = mp.json("usocket.BROKER.published")
    assert json.loads(published[0][1]) == {"status": "online", "dropped": 1}
    totals = [json.loads(p)["total_count"] for t, p, *_ in published if t.endswith("/counters")]
    assert totals == [1, 2, 0]  # what was waiting, in order, then the boot's own (the damaged file counts from 0)


def test_a_weekly_self_test_does_not_stop_the_device_at_boot(mp):
    flash(mp, DEVICE, device_config(selftest_every_s=7 * 24 * 3600))
    mp.run(BOOT_DEVICE.format(uv=GOOD) + "run(150)\n")
    assert mp.json("[t for t, *_ in usocket.BROKER.published]")[:2] == ["assets/ESP-12/status",
                                                                        "assets/ESP-12/counters"]


def test_main_py_boots_and_runs_its_loop_until_the_power_cut(mp):
    flash(mp, DEVICE, device_config())
    with pytest.raises(MicroPythonError) as cut:
        mp.run(f"""
import machine, usocket
for pin, uv in {GOOD!r}.items():
    machine.set_uv(pin, uv)
usocket.BROKER.users = {{"ESP-12": "ESP-12-secret"}}
machine.at(300, lambda: machine.press(4, 2))
machine.at(700, machine.cut)
exec(open("main.py").read())
""")
    assert cut.value.type == "PowerCut" and "device: up, ESP-12" in cut.value.out
    totals = [json.loads(p)["total_count"] for t, p, *_ in mp.json("usocket.BROKER.published")
              if t.endswith("/counters")]
    assert totals == [0, 2]


# --------------------------------------------------------------------------------------------- the controller

WORLD = {26: 2_000_000, 27: 1_650_000}  # vacuum fine, 3.3 V rail behind a 1:2 divider

BOOT_CONTROLLER = """
import json, time, machine
from controller import Controller, LOOP_MS
for pin, uv in {uv!r}.items():
    machine.set_uv(pin, uv)
with open("config.json") as f:
    ctl = Controller(json.load(f))
uart = machine.UARTS[0]

def run(ms):
    t = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t) < ms:
        ctl.step()
        time.sleep_ms(LOOP_MS)

def sent():
    out, uart.sent = uart.sent, []
    return [line.decode() for line in out]
"""


def controller_config(**over) -> dict:
    return {"uart": 0, "counter_pin": 15, "debounce_ms": 30, "lid_pin": 14, "vacuum_adc_pin": 26,
            "supply_adc_pin": 27, "counters_every_s": 0.05, "resend_ms": 200, **over}


class Agent:
    """The agent's side of the serial line, with its own code: parse, the go-back-N verdict, events, acks."""

    def __init__(self) -> None:
        self.last: dict | None = None
        self.events: list = []
        self.gaps = 0

    def receive(self, lines: list[str]) -> bytes:
        acks = b""
        for line in lines:
            assert line.endswith("\n") and line.count("\n") == 1, line
            msg = jsonlines.parse(line.encode())
            verdict = jsonlines.sequence_verdict(msg.seq, msg.session, self.last, msg.oldest)
            if verdict.publish:
                self.events += jsonlines.to_events(msg, asset_id="FX-1", source="serial:fixture")
                self.last, self.gaps = {"session": msg.session, "seq": msg.seq}, self.gaps + verdict.gap
            if verdict.ack:
                acks += jsonlines.ack(self.last["seq"] if self.last else msg.seq)
        return acks

    def of(self, etype: str) -> list[dict]:
        return [e.payload for e in self.events if e.event_type == etype]


def exchange(mp: MicroPython, agent: Agent, code: str = "run(60)") -> list[str]:
    """Run the controller, hand what it wrote to the agent, and the agent's acks back onto its RX line."""
    mp.run(code)
    lines = mp.json("sent()")
    acks = agent.receive(lines)
    if acks:
        mp.run(f"uart.feed({acks!r})")
    return lines


def test_the_controllers_lines_are_what_the_agent_reads_and_acks_release_them(mp):
    flash(mp, CONTROLLER, controller_config())
    mp.run(BOOT_CONTROLLER.format(uv=WORLD))
    agent = Agent()
    lines = exchange(mp, agent, "run(60)")
    assert [json.loads(s)["type"] for s in lines] == ["hello", "counters", "selftest", "state"]
    session = json.loads(lines[0])["session"]
    assert len(session) == 8 and int(session, 16) >= 0  # a new one every boot
    exchange(mp, agent, "machine.press(15, 4); run(100)")
    exchange(mp, agent, "machine.drive(14, 0); machine.set_uv(26, 500000); run(60)")
    exchange(mp, agent, "machine.drive(14, 1); machine.set_uv(26, 2000000); run(60)")
    exchange(mp, agent)
    assert mp.json("len(ctl.link.kept)") == 0  # every message acknowledged, none kept
    hello = agent.of("asset.state_changed")[0]
    assert hello["new_state"] == "online"
    assert [c["total_count"] for c in agent.of("asset.counters")] == [0, 4]
    (selftest,) = agent.of("test.result")
    assert selftest["result"] == "pass" and [s["name"] for s in selftest["steps"]] == ["VCC", "Vacuum sensor"]
    assert [s["new_state"] for s in agent.of("asset.state_changed")][1:] == ["idle", "busy", "idle"]
    raised, cleared = agent.of("asset.fault")
    assert (raised["fault_code"], raised.get("cleared", False), cleared["cleared"]) == ("E17", False, True)
    flash(mp, CONTROLLER, controller_config(), keep=True)  # a reset: a new session, counts kept in flash
    mp.run(BOOT_CONTROLLER.format(uv=WORLD) + "run(60)\n")
    again = json.loads(mp.json("sent()")[1])
    assert again["session"] != session and (again["seq"], again["total_count"]) == (2, 4)


def test_unacknowledged_lines_are_resent_unchanged_and_line_noise_is_ignored(mp):
    flash(mp, CONTROLLER, controller_config())
    mp.run(BOOT_CONTROLLER.format(uv=WORLD) + "run(60)\n")
    first = mp.json("sent()")
    noise = (b"\xff\xfe garbage\n[1]\n\"ack\"\n{\"ack\": \"3\"}\n{\"ack\": 1.5}\n{\"nack\": 2}\n"
             + b"x" * 1500 + b"\n{\"ack\": 2, \"error\": \"refused\"}\n")
    mp.run(f"uart.feed({noise!r})")
    out = mp.run("run(300)")  # past resend_ms: what the ack did not cover is written again
    assert "agent refused message 2: refused" in out
    again = mp.json("sent()")
    assert again[:2] == first[2:4], again  # the kept ones, oldest first, exactly as before
    agent = Agent()
    agent.receive(first[:2])  # the agent had 1 and 2 already: the resends are new to it, nothing twice
    before = len(agent.events)
    mp.run(f"uart.feed({agent.receive(again)!r}); run(60)")
    assert mp.json("len(ctl.link.kept)") == 0
    assert [e.event_type for e in agent.events[before:]] == ["test.result", "asset.state_changed"]


def test_a_full_buffer_drops_the_oldest_and_says_so(mp):
    flash(mp, CONTROLLER, controller_config(buffer_messages=5))
    mp.run(BOOT_CONTROLLER.format(uv=WORLD) + "run(60)\n")
    agent = Agent()
    agent.receive(mp.json("sent()"))  # seq 1 … 4 reach the agent, its acks are lost
    for _ in range(8):  # seq 5 … 12: the buffer of 5 keeps 8 … 12
        mp.run("machine.press(15, 1); run(60)")
    mp.run("sent(); time.sleep_ms(250)")
    exchange(mp, agent, "run(30)")  # the resend: each line says which is the oldest it still has
    exchange(mp, agent)
    assert agent.gaps == 3 and mp.json("len(ctl.link.kept)") == 0  # 5, 6, 7 lost, and the agent knows it
    assert [c["total_count"] for c in agent.of("asset.counters")] == [0, 4, 5, 6, 7, 8]


def test_controller_main_py_boots_and_runs_its_loop_until_the_power_cut(mp):
    flash(mp, CONTROLLER, controller_config())
    with pytest.raises(MicroPythonError) as cut:
        mp.run(f"""
import machine
for pin, uv in {WORLD!r}.items():
    machine.set_uv(pin, uv)
machine.at(200, lambda: machine.press(15, 3))
machine.at(600, machine.cut)
exec(open("main.py").read())
""")
    assert cut.value.type == "PowerCut" and "controller: up, session" in cut.value.out
    lines = mp.json("[line.decode() for line in machine.UARTS[0].sent]")
    totals = [json.loads(s)["total_count"] for s in lines if '"counters"' in s]
    assert totals[0] == 0 and totals[-1] == 3
