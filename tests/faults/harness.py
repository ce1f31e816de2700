"""Fault injection across the whole agent: what users fear most, at once, with a fixed seed, then a reconciliation.

The agent runs as its own process with its real sources and sinks: a fixture controller on a pseudo-terminal (the
simulator, resending until acknowledged, with line noise), a test station publishing results to a real mosquitto,
other equipment publishing CFX WorkStarted to a real RabbitMQ (AMQP 1.0), the WATS uplink to the WATS stand-in,
telemetry to the same mosquitto, the CFX endpoint to RabbitMQ where an MES reads it. Meanwhile, at moments drawn
from the seed:

- the agent is killed with SIGKILL (``kills`` times) and started again;
- mosquitto is killed with SIGKILL and started again (its persistence file kept), and so is RabbitMQ (the node);
- WATS goes down, answers 429 and 503 bursts, is slow, resets connections after storing a report (the ambiguous
  failure), and always answers 400 for the poison units' reports;
- the journal's file system is filled for a few seconds (a tmpfs of its own, as root);
- a page of the journal is turned to garbage while the agent is down (``corruptions`` times);
- the agent's wall clock steps back and forward (libfaketime, ``clock_jumps`` times; monotonic untouched);
- the power is cut (``power_cuts`` times, as root with FUSE): the journal's file system is ``powercut_fs``, which
  loses at a cut every write not fsynced and every directory entry whose directory was not fsynced; one cut falls in
  the first second of the fresh journal, one in a salvage, some in a checkpoint, the rest at random moments;
- bad input arrives: MQTT payloads that are not JSON, garbled serial lines.

At the end every fault is healed, everything drains, and the run reconciles: every message the controller saw
acknowledged is in the journal exactly once; every result a station published is in the journal exactly once;
every CFX message the broker accepted is journaled exactly once; every test result in the journal is in WATS
exactly once by id, except the poison units', which are exactly the WATS dead letters; the counters in WATS equal
the fixture's; the bad MQTT payloads are exactly the ingest dead letters; every journaled event reached the
telemetry consumer, and every result, state change and fault the MES, at least once; every corrupted journal was
salvaged whole.

    .venv/bin/python -m tests.faults.harness --seed 7 --kills 200 --seconds 600 --results 3000   # the long form
    .venv/bin/python -m tests.faults.harness --seed 7 --power-cuts 40 ...   # with power cuts (docs/faults.md)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt

from agent.events.journal import Journal
from agent.simulator import JsonLinesController, PtyFixture
from tests.agent_process import dead_letters, events, source_status, status
from tests.faults.powercut_fs import PowerCutMount
from tests.conftest import ROOT, cli_cmd, free_port, wait_for
from tests.mosquitto import Mosquitto
from tests.rabbitmq import SERVER as RABBITMQ_SERVER, RabbitMQ, envelope_of, send as amqp_send
from tests.wats_standin import WatsStandIn

ASSET = "FX-SIM"
CFX_PUBLISHED = ("test.result", "asset.state_changed", "asset.fault")  # what the agent's CFX endpoint sends
#: libfaketime's multi-threaded build (the agent has threads)
LIBFAKETIME = next((p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                                "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
                                "/usr/lib/faketime/libfaketimeMT.so.1") if os.path.exists(p)), None)
STATION = "T1"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Figures:
    events: int = 0
    crashes_survived: int = 0
    broker_kills: int = 0
    rabbit_kills: int = 0
    disk_full: int = 0
    corruptions: int = 0
    clock_jumps: int = 0
    power_cuts: Counter = field(default_factory=Counter)  # by moment: random, first second, salvage, checkpoint
    unsynced_lost: int = 0  # bytes written but not fsynced when the power went (what a cut took)
    entries_lost: int = 0  # directory entries not yet durable when the power went
    died_by_itself: int = 0
    exit_codes: list = field(default_factory=list)  # of the deaths by itself (negative: the signal)
    wats_faults: Counter = field(default_factory=Counter)
    lost: int = 0
    duplicate_ids: int = 0
    resent_posts: int = 0


class FaultRun:
    def __init__(self, work: Path, *, seed: int, kills: int, seconds: float, results: int = 300,
                 serial_messages: int = 400, spread: float = 0.5, audit: bool = True, corruptions: int = 2,
                 clock_jumps: int = 8, cfx_messages: int = 200, power_cuts: int = 0, journal_sync: str = "full",
                 skip_dir_fsync: bool = False) -> None:
        """The load is spread over the first ``spread`` of the run (the rest drains under faults); ``audit``
        keeps every event in the journal for the reconciliation. ``power_cuts`` of the ``kills`` are power cuts
        (plus one in the first second); ``journal_sync = "normal"`` and ``skip_dir_fsync`` (the file system ignores
        the fsync of the data directory's parent, as if the agent skipped it) are there to show the check fails."""
        self.work, self.seed, self.kills, self.seconds = work, seed, kills, seconds
        self.rng = random.Random(seed)  # the fault schedule
        self.station_rng = random.Random(seed + 1)  # the station's bad payloads: its own, or threads reorder draws
        self.stopped_cleanly = False
        self.results, self.serial_messages, self.spread, self.audit = results, serial_messages, spread, audit
        self.corruptions, self.clock_jumps = min(corruptions, kills), clock_jumps
        self.journal_sync = journal_sync
        why_not = PowerCutMount.available() if power_cuts else "not asked"
        self.power_cuts = min(power_cuts, kills) if why_not is None else 0
        self.no_power_cuts = why_not if power_cuts else None  # said in the summary when asked for and impossible
        self.disk: PowerCutMount | None = None
        if self.power_cuts:  # the journal's directory is made by the agent, inside the cut-able file system
            self.disk = PowerCutMount(work / "disk-backing", work / "disk", work / "disk-state",
                                      ignore_dir_fsync=("/",) if skip_dir_fsync else ())
            self.data = work / "disk" / "data"
        else:
            self.data = work / "data"
        self.clock_file = work / "faketime"  # the agent's wall-clock offset (libfaketime reads it at every call)
        self._set_clock("+0")
        self.started_at = time.time()
        self.drained_ids: set[str] = set()  # the journal's events once everything had drained
        self.cfx = os.path.exists(RABBITMQ_SERVER) and cfx_messages > 0  # RabbitMQ is a root-installed package
        self.cfx_messages = cfx_messages
        self.cfx_accepted: Counter[str] = Counter()  # plant messages the broker accepted, by PrimaryIdentifier
        self.mes_ids: set[str] = set()  # UniqueIDs of what the agent's CFX endpoint published, as the MES got them
        self.rabbit: RabbitMQ | None = None
        self.rabbit_lock = threading.Lock()
        self.rabbit_kill: threading.Thread | None = None
        self.poison_units = {f"POISON-{i}" for i in range(0, results, 50)}
        self.bad_payloads = 0
        self.figures = Figures()
        self.agent: subprocess.Popen | None = None
        self.stop = threading.Event()
        self.published: Counter[str] = Counter()  # station results the broker acknowledged, by unit
        self.telemetry_ids: set[str] = set()
        self.pubacks: set[int] = set()  # the station's message ids the broker acknowledged
        self.agent_log = open(work / "agent.log", "ab")  # every run of the agent appends its log here
        self.tmpfs = False
        self.wats = self.broker = self.pty = self.consumer = None  # started in start(), stopped in finish()
        self.rabbit = None

    # ------------------------------------------------------------------------------------------------ parts
    def start(self) -> None:
        self.wats = WatsStandIn()
        self.wats.faults.poison_serials = set(self.poison_units)
        if self.cfx:
            self.rabbit = RabbitMQ(self.work / "rabbitmq").start()
        self.broker = Mosquitto(self.work / "broker", extra="autosave_on_changes true\n").start()
        self.pty = PtyFixture(self.work / "ttyFIXTURE", seed=self.seed)
        self.controller = JsonLinesController(self.pty, interval=self.seconds * self.spread / self.serial_messages,
                                              mangle_rate=0.01, resend_after=0.5, count=self.serial_messages)
        threading.Thread(target=self.controller.run, daemon=True).start()
        token = self.work / "wats.token"
        token.write_text(self.wats.token)
        token.chmod(0o600)
        self.cfg = self.work / "agent.toml"
        self.cfg.write_text(f"""
[agent]
station = "fault-station"
location = "Line 1"
purpose = "Fault injection"
data_dir = "{self.data}"
[journal]
max_bytes = "256MB"
sync = "{self.journal_sync}"
[metrics]
listen = "127.0.0.1:{free_port()}"
[[sources.serial]]
name = "fixture"
port = "{self.work / 'ttyFIXTURE'}"
driver = "jsonl"
asset_id = "{ASSET}"
[sources.mqtt]
port = {self.broker.port}
reconnect_min = "0.2s"
reconnect_max = "1s"
[sinks.wats]
url = "{self.wats.url}"
token_file = "{token}"
process_codes = {{ test = 50, selftest = 90 }}
default_part_number = "FX-PN"
requests_per_minute = 1000000
require_clock_sync = false
retry_max = "0.5s"
[sinks.mqtt]
port = {self.broker.port}
reconnect_min = "0.2s"
reconnect_max = "1s"
{self._cfx_config()}""")
        self.wats.register_asset(ASSET)
        # room for the journal, a salvage copy and every corrupt file kept aside (never deleted by the agent)
        if self.disk is not None:  # the tmpfs under the power-cut file system: full disks go through it
            self.tmpfs = self._mount_small_fs(self.disk.backing, 32 + 16 * self.corruptions)
            self.disk.start()
        else:
            self.tmpfs = self._mount_small_fs(self.data, 32 + 16 * self.corruptions)
        # the journal forgets what every subscriber has; an audit subscriber that never reads keeps it all for the
        # reconciliation (the agent leaves a subscriber it does not run alone: ``subscribers drop`` is for humans)
        if self.audit:
            with Journal(self.data / "journal.db") as j:
                j.register_subscriber("audit")
        self._start_telemetry_consumer()
        self._start_agent()
        if self.power_cuts:  # the first second of a fresh journal
            time.sleep(self.rng.uniform(0.1, 1.0))
            self._power_cut("first second")
        # the agent's session must exist before a station publishes: the broker queues only for known sessions
        assert wait_for(lambda: source_status(self.cfg, "mqtt:mqtt").get("online"), 30), \
            "the agent never subscribed: " + (self.work / "agent.log").read_text()[-2000:]
        threading.Thread(target=self._station, daemon=True).start()
        if self.cfx:
            assert wait_for(lambda: source_status(self.cfg, "cfx:cfx").get("online"), 30), "the CFX source never came"
            threading.Thread(target=self._plant, daemon=True).start()
            threading.Thread(target=self._mes, daemon=True).start()

    def _cfx_config(self) -> str:
        if not self.cfx:
            return ""
        return f"""[sources.cfx]
url = "{self.rabbit.url}"
address = "/amq/queue/agent-in"
reconnect_min = "0.2s"
reconnect_max = "1s"
[sinks.cfx]
url = "{self.rabbit.url}"
address = "/exchange/cfx"
handle = "Acme.Fixture.FAULTS"
listen = "127.0.0.1:{free_port()}"
reconnect_min = "0.2s"
reconnect_max = "1s"
"""

    def _plant(self) -> None:
        """Other equipment on the plant's CFX network: WorkStarted to the plant exchange, as the SDK sends it
        (durable, message-id = UniqueID). A send that fails is sent again with the same UniqueID, as the SDK's
        spool does; the broker may then hold it twice, and the agent must journal it once."""
        from agent.protocols import cfx
        from agent.protocols.cfx_samples import SAMPLES
        from proton.utils import BlockingConnection

        rng = random.Random(self.seed + 3)
        conn = snd = None
        base = json.loads(cfx.encode(SAMPLES["work-started"][1]))
        for i in range(self.cfx_messages):
            doc = json.loads(json.dumps(base))
            doc["UniqueID"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            doc["MessageBody"]["PrimaryIdentifier"] = unit = f"PNL-{self.seed}-{i:05d}"
            while not self.stop.is_set():
                try:
                    if snd is None:
                        conn = BlockingConnection(self.rabbit.url, allowed_mechs="ANONYMOUS", timeout=5)
                        snd = conn.create_sender("/exchange/plant")
                    amqp_send(snd, doc)  # returns once the broker accepted it
                    self.cfx_accepted[unit] += 1
                    break
                except Exception:  # noqa: BLE001 - the broker went away: reconnect and send the same again
                    _close_quietly(conn)
                    conn = snd = None
                    time.sleep(0.5)
            time.sleep(self.seconds * self.spread / self.cfx_messages)
        _close_quietly(conn)

    def _mes(self) -> None:
        """The MES reading what the agent's CFX endpoint publishes (queue ``mes``), reconnecting after a kill."""
        from proton import Timeout
        from proton.utils import BlockingConnection

        while not self.stop.is_set():
            conn = None
            try:
                conn = BlockingConnection(self.rabbit.url, allowed_mechs="ANONYMOUS", timeout=5)
                rcv = conn.create_receiver("/amq/queue/mes", credit=200)
                while not self.stop.is_set():
                    try:
                        m = rcv.receive(timeout=1.0)
                    except Timeout:
                        continue
                    self.mes_ids.add(envelope_of(m).unique_id)
                    rcv.accept()
            except Exception:  # noqa: BLE001 - the broker went away
                time.sleep(0.5)
            finally:
                _close_quietly(conn)

    @staticmethod
    def _mount_small_fs(where: Path, megabytes: int) -> bool:
        """The journal on a small tmpfs of its own (as root), so the harness can fill the file system under it."""
        where.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return False
        return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where)],
                              capture_output=True).returncode == 0

    def _start_agent(self) -> None:
        env = {**os.environ, **self._clock_env(), "PYTHONFAULTHANDLER": "1"}  # a crash of its own leaves a trace
        self.agent = subprocess.Popen(cli_cmd("run", "-c", str(self.cfg)), cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=self.agent_log, env=env)

    def _clock_env(self) -> dict[str, str]:
        """Only the agent's wall clock moves; its monotonic clock (timeouts, backoff) is left alone, as NTP does.
        A shim preloaded first sends monotonic sleeps to the kernel (``monotonic_sleep.c`` says why)."""
        if not (LIBFAKETIME and self.clock_jumps):
            return {}
        shim = self.work / "monotonic_sleep.so"
        if not shim.exists():
            subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(shim),
                            str(Path(__file__).with_name("monotonic_sleep.c")), "-ldl"], check=True)
        return {"LD_PRELOAD": f"{shim} {LIBFAKETIME}", "FAKETIME_TIMESTAMP_FILE": str(self.clock_file),
                "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def _station(self) -> None:
        """A test station: results on testers/T1/results (QoS 1, persistent session), now and then a bad one."""
        client = self._client("station-T1")
        for i in range(self.results):
            if self.stop.is_set():
                return
            unit = f"POISON-{i}" if f"POISON-{i}" in self.poison_units else f"SN-{self.seed}-{i:05d}"
            doc = {"serial_number": unit, "part_number": "PCBA-100", "result": "pass",
                   "steps": [{"name": "VCC", "value": 3.3, "unit": "V", "low": 3.2, "high": 3.4}]}
            self._publish(client, f"testers/{STATION}/results", json.dumps(doc).encode())
            self.published[unit] += 1
            if self.station_rng.random() < 0.05:
                self._publish(client, f"testers/{STATION}/results", b"{not json")
                self.bad_payloads += 1
            time.sleep(self.seconds * self.spread / self.results)
        client.loop_stop()

    def _publish(self, client: mqtt.Client, topic: str, payload: bytes) -> None:
        """Once, and wait for the broker's PUBACK: while the broker is away paho keeps it and sends it (again)
        after the reconnect, as a station's client does."""
        info = client.publish(topic, payload, qos=1)
        while info.mid not in self.pubacks and not self.stop.is_set():
            time.sleep(0.05)

    def _client(self, client_id: str, on_message=None) -> mqtt.Client:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.reconnect_delay_set(0.2, 1)
        c.on_publish = lambda cl, userdata, mid, *a: self.pubacks.add(mid)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        if on_message:
            c.on_message = on_message
            c.on_connect = lambda cl, *a: cl.subscribe("fixture-agent/fault-station/events/#", qos=1)
        c.connect("127.0.0.1", self.broker.port, clean_start=False, properties=props)
        c.loop_start()
        return c

    def _start_telemetry_consumer(self) -> None:
        def got(client, userdata, msg) -> None:
            try:
                self.telemetry_ids.add(json.loads(msg.payload)["id"])
            except (ValueError, KeyError, TypeError):
                pass

        self.consumer = self._client("telemetry-consumer", on_message=got)

    # ------------------------------------------------------------------------------------------------ faults
    def inject(self) -> None:
        """The schedule: ``kills`` agent kills spread over the run, a broker kill, a WATS fault or a full disk now
        and then, ``corruptions`` of the journal while the agent is down, and ``clock_jumps`` of its wall clock."""
        end = time.monotonic() + self.seconds
        kill_at = sorted(self.rng.uniform(0, self.seconds) for _ in range(self.kills))
        corrupt_after = set(self.rng.sample(range(self.kills), min(self.corruptions, self.kills)))
        # power cuts instead of some kills (a salvage is cut at a corruption, the first second is cut at start)
        cut_at = set(self.rng.sample(sorted(set(range(self.kills)) - corrupt_after), min(
            self.power_cuts, self.kills - len(corrupt_after)))) if self.power_cuts else set()
        checkpoint_cuts = set(self.rng.sample(sorted(cut_at), min(len(cut_at), max(2, len(cut_at) // 6))))
        if LIBFAKETIME and self.clock_jumps:
            threading.Thread(target=self._jump_clock, daemon=True).start()
        t0 = time.monotonic()
        owed = 0  # a corruption that could not be done at its kill (disk full) is done at the next one
        for n, at in enumerate(kill_at):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            owed += n in corrupt_after
            if n in cut_at:
                self._power_cut("checkpoint" if n in checkpoint_cuts else "random")
                corrupted = False
            else:
                corrupted = self._kill_agent(corrupt=owed > 0)
                owed -= corrupted
            if self.rng.random() < 0.08:
                self._kill_broker()
            if self.cfx and self.rng.random() < 0.06:
                self._kill_rabbit(self.rng.uniform(0.5, 3.0))
            if self.rng.random() < 0.3:
                self._wats_fault()
            if self.tmpfs and self.rng.random() < 0.06 and not corrupted:
                self._fill_disk()  # (not while a salvage needs room: the agent would rightly refuse to start)
        time.sleep(max(0.0, end - time.monotonic()))

    def _jump_clock(self) -> None:
        """The agent's wall clock steps as a Pi's does: behind (no RTC, fake-hwclock) then forward to the truth
        when NTP answers; a little ahead, then back. Ahead stays inside WATS's 5 minutes (a report further in the
        future is quarantined by WATS itself, which the agent cannot see from a clock the kernel calls synced)."""
        rng = random.Random(self.seed + 2)
        wrong = ["-3h", "-2d", "-10m", "-40d", "+150", "-90"]
        at = sorted(rng.uniform(0, self.seconds * 0.9) for _ in range(self.clock_jumps))
        t0 = time.monotonic()
        for n, when in enumerate(at):
            if self.stop.wait(max(0.0, t0 + when - time.monotonic())):
                break
            self._set_clock("+0" if n % 2 else rng.choice(wrong))
            self.figures.clock_jumps += 1
        self._set_clock("+0")

    def _set_clock(self, offset: str) -> None:
        """Atomically: libfaketime re-reads the file at every clock call and must never see it half written."""
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        os.replace(tmp, self.clock_file)

    def _died(self) -> None:
        """The agent had ended on its own: that fails the run (its exit code, negative for a signal, is shown)."""
        self.figures.died_by_itself += 1
        self.figures.exit_codes.append(self.agent.returncode)

    def _kill_agent(self, corrupt: bool = False) -> bool:
        if self.agent.poll() is not None:
            self._died()
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait(10)
        self.figures.crashes_survived += 1
        time.sleep(self.rng.uniform(0, 0.3))
        corrupted = corrupt and self._corrupt_journal()
        self._start_agent()
        if corrupted and self.power_cuts and self.figures.power_cuts["salvage"] == 0:
            self._power_cut("salvage")  # the agent salvages the corrupt journal now: cut it in the middle
        return corrupted

    def _power_cut(self, moment: str) -> None:
        """The power goes: the file system freezes (nothing more becomes durable, everything fails), the agent dies
        with it, the file system comes back with only what was durable, and the agent starts on it. ``moment``:
        ``random`` (now), ``first second`` (now, called then), ``checkpoint`` (at a write of the journal's main
        file, which in WAL mode only a checkpoint does: the one the agent runs as it stops, asked by SIGTERM),
        ``salvage`` (at an operation of the salvage the agent has just begun)."""
        assert self.disk is not None
        if self.agent.poll() is not None:
            self._died()
        if moment in ("checkpoint", "salvage"):
            self.disk.arm("db-write" if moment == "checkpoint" else "salvage", self.rng.randint(1, 5 if moment ==
                                                                                                 "checkpoint" else 40))
            if moment == "checkpoint":
                self.agent.send_signal(signal.SIGTERM)
            if not wait_for(lambda: self.disk.frozen or self.agent.poll() is not None, 15, interval=0.02) \
                    or not self.disk.frozen:
                moment += " (not reached: cut after it)"
        report = self.disk.cuts[-1] if self.disk.frozen else self.disk.freeze()
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait(10)
        if report.get("checkpoint_under_way") and moment == "random":
            moment = "random, in a checkpoint"
        self.figures.power_cuts[moment] += 1
        self.figures.unsynced_lost += sum(n for p, n in report.get("unsynced_bytes", {}).items() if "/journal.db" in p)
        self.figures.entries_lost += report.get("entries_not_durable", 0)
        self.disk.remount()
        time.sleep(self.rng.uniform(0, 0.3))
        self._start_agent()

    def _corrupt_journal(self) -> bool:
        """A page of the journal's id index turned to garbage, as an SD card returns a bad block: the agent must
        notice at start and salvage every row (the tables are intact). What a damaged *table* page costs is
        proven in tests/unit/test_salvage.py; here the reconciliation can then still demand "nothing lost"."""
        db = self.data / "journal.db"
        if (self.data / "filler").exists() or (self.data / "journal.db.salvaged").exists():
            return False  # no room for a salvaged copy, or a salvage still to be finished: at the next kill
        conn = sqlite3.connect(db)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the page must be read from the file, not the WAL
            pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'events_id'")]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            conn.close()
        with open(db, "r+b") as f:
            f.seek((self.rng.choice(pages) - 1) * page_size)
            f.write(self.rng.randbytes(page_size))
            f.flush()  # the fsync below made nothing durable without it (found by the power cuts)
            os.fsync(f.fileno())
        self.figures.corruptions += 1
        return True

    def _kill_broker(self) -> None:
        self.broker.proc.send_signal(signal.SIGKILL)
        self.broker.proc.wait(10)
        self.broker.proc = None
        time.sleep(self.rng.uniform(0.2, 2.0))
        self.broker.start()
        self.figures.broker_kills += 1

    def _kill_rabbit(self, down_for: float) -> None:
        """RabbitMQ SIGKILLed (the whole node) and started again in the background: it takes seconds to boot,
        and the agent's kills go on meanwhile."""
        if self.rabbit_kill is not None and self.rabbit_kill.is_alive():
            return

        def cycle() -> None:
            with self.rabbit_lock:
                self.rabbit.crash()
                time.sleep(down_for)
                self.rabbit.start()

        self.figures.rabbit_kills += 1
        self.rabbit_kill = threading.Thread(target=cycle, daemon=True)
        self.rabbit_kill.start()

    def _fill_disk(self) -> None:
        """The journal's file system full for a few seconds: sources must stop acknowledging, not lose."""
        filler = self.data / "filler"
        try:
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * (1 << 20))
        except OSError:
            pass  # ENOSPC: full
        self.figures.disk_full += 1
        threading.Timer(self.rng.uniform(8, 15), _unlink_quietly, (filler,)).start()

    def _wats_fault(self) -> None:
        f = self.wats.faults
        kind = self.rng.choice(["down", "429", "503", "slow", "reset"])
        self.figures.wats_faults[kind] += 1
        if kind == "down":
            self.wats.up = False
            threading.Timer(self.rng.uniform(1, 4), lambda: setattr(self.wats, "up", True)).start()
        elif kind == "429":
            f.rate_limit_next += self.rng.randint(3, 20)
        elif kind == "503":
            f.unavailable_next += self.rng.randint(3, 20)
        elif kind == "slow":
            f.slow_next, f.slow_delay = self.rng.randint(1, 5), self.rng.uniform(0.5, 3)
        else:
            f.reset_after_read_next += self.rng.randint(1, 5)

    # ------------------------------------------------------------------------------------------------ the end
    def heal_and_drain(self, timeout: float = 180) -> bool:
        _unlink_quietly(self.data / "filler")
        self.wats.up = True
        self.wats.faults.rate_limit_next = self.wats.faults.unavailable_next = 0
        self.wats.faults.slow_next = self.wats.faults.reset_after_read_next = 0
        if self.rabbit_kill is not None:
            self.rabbit_kill.join(120)
        if self.agent.poll() is not None:
            self._died()
            self._start_agent()

        def drained() -> bool:
            if not self.controller.all_acked or sum(self.published.values()) < self.results:
                return False
            if self.cfx and len(self.cfx_accepted) < self.cfx_messages:
                return False
            try:
                subs = status(self.cfg)["subscribers"]
            except AssertionError:  # the CLI could not read the journal at this instant
                return False
            if any(s["backlog"] for s in subs if s["name"] != "audit"):
                return False
            journal = events(self.cfg)  # and what is on its way from the broker, to the consumer
            station = sum(1 for e in journal if e["event_type"] == "test.result"
                          and e["payload"].get("fixture_id") == STATION)
            plant = sum(1 for e in journal if e["event_type"] == "production.work_started")
            to_mes = {e["metadata"]["event_id"] for e in journal if _to_mes(e)}
            done = station >= sum(self.published.values()) and \
                {e["metadata"]["event_id"] for e in journal} <= self.telemetry_ids and \
                (not self.cfx or (plant >= len(self.cfx_accepted) and to_mes <= self.mes_ids))
            if done:  # what the forwarding checks hold to: the fixture may still report (a state) after this
                self.drained_ids = {e["metadata"]["event_id"] for e in journal}
            return done

        return wait_for(drained, timeout, interval=1.0)

    def finish(self) -> None:
        self.stop.set()
        if self.agent and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.stopped_cleanly = self.agent.wait(30) == 0
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait(10)
        if self.rabbit_kill is not None:
            self.rabbit_kill.join(120)
        for part, stop in ((self.consumer, "loop_stop"), (self.pty, "close"), (self.broker, "stop"),
                           (self.wats, "close"), (self.rabbit, "stop")):
            if part is None:
                continue
            try:
                getattr(part, stop)()
            except Exception as e:  # noqa: BLE001 - stop the others all the same
                print(f"harness: stopping {type(part).__name__}: {e!r}", file=sys.stderr)
        self.agent_log.close()

    def unmount(self) -> None:
        if self.disk is not None:
            self.disk.stop()
        if self.tmpfs:
            where = self.disk.backing if self.disk is not None else self.data
            subprocess.run(["umount", "-l", str(where)], capture_output=True)

    def reconcile(self) -> list[Check]:
        journal = events(self.cfg)
        for e in journal:
            e["id"] = e["metadata"]["event_id"]
        self.figures.events = len(journal)
        by_type: dict[str, list[dict]] = {}
        for e in journal:
            by_type.setdefault(e["event_type"], []).append(e)
        checks = []

        # serial: every acknowledged controller message once (counters by total, self-tests by their time)
        sent = [m for seq, m in sorted(self.controller.sent.items()) if seq <= self.controller.acked]
        want = Counter(m["total_count"] for m in sent if m["type"] == "counters")
        got = Counter(e["payload"]["total_count"] for e in by_type.get("asset.counters", [])
                      if e["payload"]["asset_id"] == ASSET)
        checks.append(_same("serial counters messages journaled exactly once", want, got))
        fixture_tests = [e for e in by_type.get("test.result", []) if e["payload"].get("fixture_id") == ASSET]
        want_st = sum(1 for m in sent if m["type"] == "selftest")
        checks.append(Check("serial self-tests journaled exactly once", len(fixture_tests) == want_st,
                            f"{len(fixture_tests)} journaled, {want_st} acknowledged"))

        # MQTT: every result the broker acknowledged, once; the bad payloads are the ingest dead letters
        station = Counter(e["payload"]["unit_id"] for e in by_type.get("test.result", [])
                          if e["payload"].get("fixture_id") == STATION)
        checks.append(_same("station results journaled exactly once", self.published, station))
        dlq = dead_letters(self.cfg)
        ingest_dead = [d for d in dlq if d["subscriber"] is None and str(d["origin"]).startswith("mqtt")]
        checks.append(Check("bad MQTT payloads are exactly the ingest dead letters",
                            len(ingest_dead) == self.bad_payloads,
                            f"{len(ingest_dead)} dead letters, {self.bad_payloads} bad payloads sent"))

        # WATS: every test result once by id; the poison units' reports are exactly the uplink's dead letters
        results = by_type.get("test.result", [])
        poison = {e["id"] for e in results if e["payload"]["unit_id"] in self.poison_units}
        want_ids = {e["id"] for e in results} - poison
        with self.wats.lock:
            stored = set(self.wats.reports)
            posts = dict(self.wats.receive_count)
        missing = want_ids - stored
        self.figures.lost = len(missing) + sum(max(0, n - got.get(k, 0)) for k, n in want.items()) \
            + sum(max(0, n - station.get(k, 0)) for k, n in self.published.items())
        self.figures.resent_posts = sum(n - 1 for n in posts.values() if n > 1)
        self.figures.duplicate_ids = sum(n - 1 for n in Counter(e["id"] for e in journal).values() if n > 1)
        checks.append(Check("every test result is in WATS exactly once by id", not missing and stored <= want_ids,
                            f"{len(missing)} missing, {len(stored - want_ids)} unexpected of {len(want_ids)}"))
        wats_dead = {d["event_id"] for d in dlq if d.get("subscriber") == "wats"}
        checks.append(Check("the poison units' reports are exactly the WATS dead letters", wats_dead == poison,
                            f"{len(wats_dead)} dead letters, {len(poison)} poison reports"))

        # counters: WATS holds the fixture's
        asset = self.wats.assets[ASSET]
        checks.append(Check("counters in WATS equal the fixture's",
                            (asset["totalCount"], asset["runningCount"]) == (self.controller.total,
                                                                            self.controller.running),
                            f"WATS {asset['totalCount']}/{asset['runningCount']}, fixture "
                            f"{self.controller.total}/{self.controller.running}"))

        # forwarded at least once: what was journaled by the time everything had drained (all, if it never did)
        scope = self.drained_ids or {e["id"] for e in journal}

        # CFX: what the broker accepted from the plant, once; what the endpoint publishes reached the MES
        if self.cfx:
            plant = Counter(e["payload"]["unit_id"] for e in by_type.get("production.work_started", []))
            checks.append(_same("CFX messages the broker accepted journaled exactly once",
                                Counter(dict.fromkeys(self.cfx_accepted, 1)), plant))
            to_mes = {e["id"] for e in journal if _to_mes(e)} & scope
            checks.append(Check("every result, state change and fault reached the MES over CFX at least once",
                                to_mes <= self.mes_ids, f"{len(to_mes - self.mes_ids)} of {len(to_mes)} never arrived"))

        # the corrupted journals: noticed at start and salvaged whole (an index page: every row is still readable)
        log = (self.work / "agent.log").read_text(errors="replace")
        salvages = [line for line in log.splitlines() if "JOURNAL CORRUPT" in line]
        kept = [p for p in self.data.glob("journal.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
        checks.append(Check("every corrupted journal was noticed and salvaged with nothing unreadable",
                            self.figures.corruptions == self.corruptions and len(kept) == self.corruptions
                            and salvages and all("nothing unreadable" in line for line in salvages),
                            f"{self.figures.corruptions} of {self.corruptions} corrupted, {len(kept)} files kept "
                            f"aside, {len(salvages)} salvages logged: "
                            + "; ".join(line.split(". ")[1] if ". " in line else line for line in salvages)[:400]))

        # the clock jumps: the agent really ran on a wrong clock for a while (else the faults above proved less)
        if LIBFAKETIME and self.clock_jumps:
            behind = sum(1 for e in journal if datetime.fromisoformat(e["metadata"]["timestamp"]).timestamp()
                         < self.started_at - 60)
            checks.append(Check("the agent's wall clock was stepped under it", behind > 0 and
                                self.figures.clock_jumps > 0,
                                f"{self.figures.clock_jumps} steps, {behind} events stamped with a clock behind"))

        # telemetry: at least once
        not_seen = ({e["id"] for e in journal} & scope) - self.telemetry_ids
        checks.append(Check("every journaled event reached the telemetry consumer at least once", not not_seen,
                            f"{len(not_seen)} of {len(journal)} never arrived"))
        return checks

    def summary(self, checks: list[Check]) -> str:
        f = self.figures
        log = (self.work / "agent.log").read_text(errors="replace")
        refused = log.count("database or disk is full")
        passed = sum(c.ok for c in checks)
        faults = ", ".join(f"{k} {v}" for k, v in sorted(f.wats_faults.items())) or "none"
        return (f"{passed} passed, {len(checks) - passed} failed (seed {self.seed}): {f.events} events, "
                f"{f.crashes_survived} crashes survived, {f.broker_kills} mosquitto kills, "
                f"{f.rabbit_kills if self.cfx else 'no RabbitMQ: no'} RabbitMQ kills, {f.corruptions} journals "
                f"corrupted, {f.clock_jumps if LIBFAKETIME else 'no libfaketime: no'} clock steps, {f.disk_full} disk full "
                f"({f'{refused} writes refused' if self.tmpfs else 'not as root: not injected'}), WATS faults: {faults}; "
                f"lost {f.lost}, duplicate ids {f.duplicate_ids}, resent posts {f.resent_posts}"
                + self._power_summary())

    def _power_summary(self) -> str:
        if self.no_power_cuts:
            return f"; no power cuts: {self.no_power_cuts}"
        if not self.power_cuts:
            return ""
        f = self.figures
        moments = ", ".join(f"{k} {v}" for k, v in sorted(f.power_cuts.items()))
        return (f"; {sum(f.power_cuts.values())} power cuts ({moments}): {f.unsynced_lost / 1e3:.0f} KB of the journal's "
                f"files unsynced and {f.entries_lost} directory entries not yet durable when they came (journal.sync {self.journal_sync}"
                + (", the data directory's parent never fsynced" if self.disk.ignore_dir_fsync else "") + ")")


def _to_mes(e: dict) -> bool:
    """What the agent's CFX endpoint publishes: the fixture's own results, states and faults; not what the MQTT
    or CFX ingest journaled for other equipment (``cfx_mapping.is_own``; ``sinks.cfx.republish`` is off here)."""
    from agent.protocols.cfx_mapping import FOREIGN_SOURCES

    return e["event_type"] in CFX_PUBLISHED and e["metadata"]["source"].split(":", 1)[0] not in FOREIGN_SOURCES


def _unlink_quietly(path: Path) -> None:
    """The filler goes, whether or not a power cut took it first (or the file system is being remounted)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _close_quietly(conn) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a connection to a killed broker may not close cleanly
            pass


def _same(name: str, want: Counter, got: Counter) -> Check:
    lost = sum((want - got).values())
    twice = sum((got - want).values())
    return Check(name, lost == 0 and twice == 0, f"{sum(want.values())} expected, {lost} lost, {twice} extra")


def run(work: Path, *, seed: int, kills: int, seconds: float, **kw) -> tuple[list[Check], str]:
    r = FaultRun(work, seed=seed, kills=kills, seconds=seconds, **kw)
    try:
        try:
            r.start()
            r.inject()
            drained = r.heal_and_drain()
        finally:
            r.finish()
        checks = [Check("everything drained after the faults were healed", drained),
                  Check("the agent stopped cleanly on SIGTERM at the end", r.stopped_cleanly),
                  Check("the agent never died by itself", r.figures.died_by_itself == 0,
                        f"{r.figures.died_by_itself} times, exit codes {r.figures.exit_codes}")] + r.reconcile()
    finally:
        r.unmount()
    return checks, r.summary(checks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--results", type=int, default=300)
    ap.add_argument("--cfx-messages", type=int, default=200, help="CFX messages from the plant (0: no RabbitMQ)")
    ap.add_argument("--corruptions", type=int, default=2, help="journal corruptions (while the agent is down)")
    ap.add_argument("--clock-jumps", type=int, default=8, help="steps of the agent's wall clock (libfaketime)")
    ap.add_argument("--power-cuts", type=int, default=0,
                    help="power cuts among the kills (powercut_fs; as root with FUSE), plus one in the first second")
    ap.add_argument("--journal-sync", choices=("full", "normal"), default="full",
                    help='journal.sync; "normal" must make the power cuts lose events (the check can fail)')
    ap.add_argument("--skip-dir-fsync", action="store_true",
                    help="the file system ignores the fsync of the data directory's parent, as if the agent skipped "
                         "it (the check must find the loss)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (journal, logs) and print where")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fa-faults-"))
    checks, line = run(work, seed=args.seed, kills=args.kills, seconds=args.seconds, results=args.results,
                       serial_messages=args.results + 100, corruptions=args.corruptions,
                       clock_jumps=args.clock_jumps, cfx_messages=args.cfx_messages, power_cuts=args.power_cuts,
                       journal_sync=args.journal_sync, skip_dir_fsync=args.skip_dir_fsync)
    if args.keep:
        print(f"work dir: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    for c in checks:
        print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    print(line)
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
