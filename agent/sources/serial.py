"""Serial fixtures: a JSON-lines fixture controller, or a SCPI instrument, on a serial port (pyserial).

The port handling is shared: open, read lines through the framer (a line longer than ``max_line_bytes`` is bad
input, not a memory problem), and when the port disappears (USB unplugged) let ``ThreadedTransport`` reopen it
with backoff. The fixture going away and coming back is itself reported as ``asset.state_changed`` offline /
online. Bad input (garbled, oversized, non-UTF-8 lines, unparseable answers) is counted and kept, raw, in the
dead-letter table; it never ends the source.

* ``jsonl``: a fixture controller speaking ``docs/serial-protocol.md``. Every line already received is parsed,
  and their events are journaled in one transaction together with the last accepted ``seq``; only then are the
  acks written back. A resend after an agent crash is recognised and acknowledged again, not journaled twice.
* ``scpi``: an IEEE 488.2 instrument. ``*IDN?`` at connect (identity in status and in every event's metadata),
  ``*TST?`` as a ``test.result``, the configured queries polled and judged against their limits as a
  ``test.result``, and the ``SYST:ERR?`` queue drained into ``asset.fault`` events.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import msgspec

from .serial_plugin import SerialSourceSection
from ..events.journal import JournalError
from ..events.model import Event, EventType
from ..events.payloads import (
    AssetFaultEvent, AssetState, AssetStateChangedEvent, SeverityLevel, TestResultEvent, TestStep,
)
from ..events.transports import ThreadedTransport
from ..protocols import jsonlines as jl
from ..protocols import scpi
from ..protocols.lines import Line, LineFramer
from ..protocols.results import judged, overall
from .base import StatusRecord

if TYPE_CHECKING:
    import serial as pyserial

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SerialSource(ThreadedTransport):
    """What both drivers share: the port, lines, bad input, identity, online/offline."""

    def __init__(self, cfg: SerialSourceSection) -> None:
        super().__init__(f"serial:{cfg.name}", retry_min=cfg.reconnect_min, retry_max=cfg.reconnect_max)
        self.cfg = cfg
        self.identity: dict[str, str] = {}
        self._online = False
        self.lines_in = 0
        self.bad_lines = 0
        self.state_key = f"source:{self.name}"
        self.status = StatusRecord(self.name, lambda: self._bus.journal if self._bus is not None else None)

    # --------------------------------------------------------------------------------------------- the port
    def run(self, stop: threading.Event) -> None:
        import serial as pyserial

        try:
            port = pyserial.serial_for_url(self.cfg.port, baudrate=self.cfg.baud, timeout=0.1, exclusive=True)
        except (pyserial.SerialException, OSError) as e:
            raise ConnectionError(f"cannot open {self.cfg.port}: {e}") from None
        framer = LineFramer(self.cfg.max_line_bytes)
        try:
            self.mark_connected()
            self.session(port, framer, stop)
        except (pyserial.SerialException, OSError) as e:
            self._went_offline(f"port lost: {e}")
            raise ConnectionError(f"{self.cfg.port}: {e}") from None
        finally:
            try:
                port.close()
            except Exception:  # noqa: BLE001 - closing a vanished device may fail; it is gone either way
                pass

    def session(self, port: "pyserial.Serial", framer: LineFramer, stop: threading.Event) -> None:
        raise NotImplementedError

    def read_lines(self, port: "pyserial.Serial", framer: LineFramer) -> list[Line]:
        data = port.read(max(1, port.in_waiting))
        if not data:
            return []
        lines = framer.feed(data)
        self.lines_in += len(lines)
        return lines

    # --------------------------------------------------------------------------------------------- bookkeeping
    def bad_input(self, raw: bytes, reason: str) -> None:
        """Count it, keep it (raw) in the dead-letter table, and go on."""
        self.bad_lines += 1
        assert self._bus is not None
        self._bus.metrics.record_bad_input(self.name)
        log.warning("source %s: bad input (%s): %r", self.name, reason, raw[:80])
        try:
            self._bus.dead_letters.add_bad_input(f"{self.name} ({self.cfg.port})", raw, reason)
        except JournalError as e:  # at its bound, or the disk full: the line is counted and logged, not kept
            log.error("source %s: bad input not kept (%s)", self.name, e)

    def tag(self, events: list[Event]) -> list[Event]:
        """Identity of the device into each event's metadata (and the port as the source topic)."""
        if not self.identity:
            return events
        out = []
        for ev in events:
            md = msgspec.structs.replace(ev.metadata, source_topic=self.cfg.port,
                                         custom={**ev.metadata.custom, "device": self.identity})
            out.append(msgspec.structs.replace(ev, metadata=md))
        return out

    def record_status(self, **extra: Any) -> None:
        """What ``fixture-agent status`` shows for this source (in the journal's state table)."""
        assert self._bus is not None
        doc = {"port": self.cfg.port, "driver": self.cfg.driver, "asset_id": self.cfg.asset_id,
               "online": self._online, "identity": self.identity, "since": _now().isoformat(), **extra}
        self.status.put(self._bus.journal, self.state_key, doc)

    def state_event(self, state: AssetState, reason: str) -> Event:
        payload = AssetStateChangedEvent(asset_id=self.cfg.asset_id, new_state=state, timestamp=_now(),
                                         reason=reason, custom_data={"port": self.cfg.port})
        return Event.create(EventType.ASSET_STATE_CHANGED, payload, source=self.name)

    def went_online(self) -> None:
        if not self._online:
            self._online = True
            self.publish_event(self.tag([self.state_event(AssetState.ONLINE, "serial port connected")])[0])
            self.record_status()

    def _went_offline(self, reason: str) -> None:
        if self._online:
            self._online = False
            try:
                self.publish_event(self.state_event(AssetState.OFFLINE, reason))
                self.record_status(last_error=reason)
            except Exception:  # noqa: BLE001 - reporting the loss must not hide the loss itself
                log.exception("source %s: could not record going offline", self.name)


class JsonLinesSource(SerialSource):
    """A fixture controller speaking the JSON-lines protocol (``docs/serial-protocol.md``)."""

    @property
    def seq_key(self) -> str:
        return f"serial-seq:{self.cfg.name}"

    def session(self, port, framer, stop) -> None:
        assert self._bus is not None
        bus = self._bus
        last: dict[str, Any] | None = bus.journal.get_state(self.seq_key)
        self.went_online()
        while not stop.is_set():
            lines = self.read_lines(port, framer)
            if not lines:
                continue
            events: list[Event] = []
            acks: list[bytes] = []
            new_last = last
            identity_before = self.identity
            for line in lines:
                if line.oversized:
                    self.bad_input(line.data, f"line longer than {self.cfg.max_line_bytes} bytes")
                    continue
                try:
                    msg = jl.parse(line.data)
                    verdict = jl.sequence_verdict(msg.seq, msg.session, new_last, msg.oldest)
                    if verdict.gap:
                        self.bad_input(line.data, f"{verdict.gap} message(s) before seq {msg.seq} of this session "
                                                  "never reached this journal (dropped by the controller, or "
                                                  "delivered to an earlier journal)")
                    if verdict.publish:
                        if isinstance(msg, jl.Hello):
                            self.identity = {k: v for k, v in (("model", msg.model), ("serial", msg.serial),
                                                               ("firmware", msg.firmware)) if v}
                        events += self.tag(jl.to_events(msg, asset_id=self.cfg.asset_id, source=self.name,
                                                        received=_now()))
                except jl.ProtocolError as e:
                    self.bad_input(line.data, str(e))
                    if e.seq is None:
                        continue  # maybe a good line mangled on the wire: no ack, the controller resends
                    verdict = jl.sequence_verdict(e.seq, e.session, new_last)
                    if verdict.ack:
                        acks.append(jl.ack(e.seq, str(e)))  # kept as a dead letter: don't let it block the queue
                    if verdict.publish and e.session is not None:
                        new_last = {"session": e.session, "seq": e.seq}
                    continue
                if verdict.publish and msg.seq is not None and msg.session is not None:
                    new_last = {"session": msg.session, "seq": msg.seq}
                if verdict.ack:
                    acks.append(jl.ack(msg.seq))  # type: ignore[arg-type]
            if events or new_last != last:
                try:
                    # the events and the controller's position commit together: a resend is never journaled twice
                    bus.publish_many(events, state={self.seq_key: new_last})
                except JournalError as e:  # at its bound or the disk full: the controller keeps it until we can
                    log.error("source %s: %s; not acknowledging, the controller keeps its data", self.name, e)
                    stop.wait(1.0)
                    continue
                self._published += len(events)
                last = new_last
                if self.identity is not identity_before:
                    self.record_status()
            if acks:
                port.write(b"".join(acks))


class ScpiSource(SerialSource):
    """A SCPI instrument: identity, self-test, polled measurements, error queue."""

    def query(self, port, framer: LineFramer, command: str, timeout: float | None = None) -> bytes:
        port.reset_input_buffer()
        port.write(command.encode("ascii") + b"\n")
        deadline = time.monotonic() + (timeout or self.cfg.timeout)
        while time.monotonic() < deadline:
            for line in self.read_lines(port, framer):
                if line.oversized:
                    self.bad_input(line.data, f"answer to {command} longer than {self.cfg.max_line_bytes} bytes")
                    continue
                return line.data
        raise TimeoutError(f"no answer to {command} within {timeout or self.cfg.timeout:.1f}s")

    def session(self, port, framer, stop) -> None:
        assert self._bus is not None
        try:
            idn = scpi.parse_idn(self.query(port, framer, "*IDN?"))
        except scpi.ScpiError as e:
            raise ConnectionError(f"*IDN?: {e}") from None
        self.identity = idn.to_dict()
        self.went_online()
        self.record_status()
        if self.cfg.selftest_on_connect:
            self.publish_all([self.selftest(port, framer)])
        timeouts = 0
        next_poll = time.monotonic()
        while not stop.wait(max(0.0, next_poll - time.monotonic())):
            next_poll = time.monotonic() + self.cfg.poll_interval
            try:
                events = []
                if self.cfg.queries:
                    events.append(self.poll(port, framer))
                if self.cfg.drain_errors:
                    events += self.drain_errors(port, framer)
                timeouts = 0
            except TimeoutError as e:
                timeouts += 1
                log.warning("source %s: %s", self.name, e)
                if timeouts >= 3:
                    raise ConnectionError(f"{timeouts} queries in a row unanswered") from None
                continue
            self.publish_all(events)

    def publish_all(self, events: list[Event]) -> None:
        if events:
            self._bus.publish_many(self.tag(events))  # type: ignore[union-attr]
            self._published += len(events)

    def _answer(self, port, framer, command: str, parse, timeout: float | None = None):
        raw = self.query(port, framer, command, timeout)
        try:
            return parse(raw)
        except scpi.ScpiError as e:
            self.bad_input(raw, f"{command}: {e}")
            return None

    def selftest(self, port, framer) -> Event:
        started = _now()
        code = self._answer(port, framer, "*TST?", scpi.parse_int, self.cfg.selftest_timeout)
        m = judged("*TST? result code", None if code is None else float(code), "", 0.0, comp_op="EQ")
        step = TestStep(name="Instrument self-test (*TST?)", status=m.status, start_time=started, end_time=_now(),
                        measurements=[m], step_type="selftest",
                        message=None if code in (None, 0) else f"*TST? returned {code}")
        return self._result([step], started, "selftest")

    def poll(self, port, framer) -> Event:
        started = _now()
        steps = []
        for q in self.cfg.queries:
            value = self._answer(port, framer, q.command, scpi.parse_number)
            m = judged(q.name, value, q.unit, q.low, q.high, q.nominal, comp_op=q.comp_op)
            steps.append(TestStep(name=q.name, status=m.status, measurements=[m], step_type="numeric_limit",
                                  message=q.command))
        return self._result(steps, started, "poll")

    def _result(self, steps: list[TestStep], started: datetime, kind: str) -> Event:
        payload = TestResultEvent(unit_id=self.cfg.asset_id, result=overall([s.status for s in steps]),
                                  start_time=started, end_time=_now(), fixture_id=self.cfg.asset_id,
                                  part_number=self.identity.get("model") or None, steps=steps,
                                  custom_data={"test_type": kind})
        return Event.create(EventType.TEST_RESULT, payload, source=self.name)

    def drain_errors(self, port, framer) -> list[Event]:
        out = []
        for _ in range(32):  # an instrument's queue is bounded; never loop for ever on a stuck one
            err = self._answer(port, framer, "SYST:ERR?", scpi.parse_error)
            if err is None or err[0] == 0:
                break
            code, text = err
            payload = AssetFaultEvent(asset_id=self.cfg.asset_id, fault_code=str(code), fault_message=text,
                                      timestamp=_now(), severity=SeverityLevel.ERROR if code < 0 else SeverityLevel.WARNING,
                                      custom_data={"port": self.cfg.port})
            out.append(Event.create(EventType.ASSET_FAULT, payload, source=self.name))
        return out


def make_serial_source(cfg: SerialSourceSection) -> SerialSource:
    return JsonLinesSource(cfg) if cfg.driver == "jsonl" else ScpiSource(cfg)


__all__ = ["JsonLinesSource", "ScpiSource", "SerialSource", "make_serial_source"]


def build(section: SerialSourceSection, ctx) -> SerialSource:
    """The plugin's build (``serial_plugin.PLUGIN``). ``port = "simulator:jsonl"`` (or ``simulator:scpi``): a
    simulated fixture on a real pseudo-terminal, started with the agent and closed with it, so the demo runs the
    real serial path with nothing plugged in."""
    if section.port.startswith("simulator:"):
        section = _simulated_port(section, ctx)
    return make_serial_source(section)


def _simulated_port(s: SerialSourceSection, ctx) -> SerialSourceSection:
    from .. import simulator

    protocol = s.port.split(":", 1)[1] or "jsonl"
    if protocol not in ("jsonl", "scpi"):
        raise ValueError(f"sources.serial {s.name}: port {s.port!r}: use simulator:jsonl or simulator:scpi")
    link = ctx.data_dir / f"{s.name}.tty"
    kw = {"interval": 1.0, "asset_id": s.asset_id} if protocol == "jsonl" else {}
    pty, _device, _thread = simulator.start(protocol, link=link, garbage_rate=0.02, **kw)
    ctx.on_close(pty.close)
    log.info("sources.serial %s: simulated %s fixture on %s (%s)", s.name, protocol, pty.path, link)
    return msgspec.structs.replace(s, port=str(link))
