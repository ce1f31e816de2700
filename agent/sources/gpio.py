"""Fixture pins through gpiozero: actuation counter, lid switch, pass/fail lamps, loopback self-test.

* Counter: a debounced input (a lockout of ``counter_bounce`` after each counted press); each press goes through the ``CounterLedger`` (persistent, absolute, atomic with
  its ``asset.counters`` event). A press the journal refuses (full) is kept pending in memory and counted with
  the next one, never dropped.
* Lid/door switch: ``asset.state_changed`` on each change (closed → ``busy`` by default, open → ``idle``), and the
  state at start.
* Lamps: an ephemeral subscriber to ``test.result`` lights the pass or the fail lamp for ``lamp_hold`` seconds.
  Ephemeral on purpose: after a restart, replaying old results onto a lamp would only mislead the operator.
* Loopback self-test: drive an output high and low and read it back on an input wired to it; the result is a
  ``test.result`` (a broken wire or a dead pin fails it), at start and every ``selftest_interval``.

Tests use gpiozero's own mock pin factory (``pin_factory = "mock"``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any

from .gpio_plugin import GpioSourceSection
from ..events.handlers import FilteringHandler
from ..events.journal import JournalError
from ..events.model import Event, EventType
from ..events.payloads import AssetState, AssetStateChangedEvent, TestResult, TestResultEvent, TestStep
from ..events.transports import ThreadedTransport
from ..protocols.results import judged, overall
from ..events.counters import CounterLedger

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class GpioSource(ThreadedTransport):
    def __init__(self, cfg: GpioSourceSection) -> None:
        super().__init__("gpio")
        self.cfg = cfg
        self.presses = 0
        self.bounces = 0
        self._last_press = float("-inf")
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._devices: list[Any] = []
        self._lamp_timer: threading.Timer | None = None
        self._lamps: dict[str, Any] = {}
        self.ledger: CounterLedger | None = None
        self._handler_name = f"gpio-lamps:{cfg.asset_id}"

    # --------------------------------------------------------------------------------------------- lifecycle
    def run(self, stop: threading.Event) -> None:
        if self.cfg.pin_factory and not os.environ.get("GPIOZERO_PIN_FACTORY"):
            os.environ["GPIOZERO_PIN_FACTORY"] = self.cfg.pin_factory
        from gpiozero import LED, Button, DigitalInputDevice, DigitalOutputDevice

        assert self._bus is not None
        cfg = self.cfg
        self.ledger = CounterLedger(self._bus, cfg.asset_id, self.name)
        try:
            if cfg.counter_pin is not None:
                # Debounced here (a lockout after each counted press), not by the pin backend: gpiozero leaves
                # bounce handling to each backend, so doing it ourselves behaves the same on every Pi and in tests.
                counter = Button(cfg.counter_pin, pull_up=cfg.counter_active_low)
                counter.when_pressed = self._on_press
                self._devices.append(counter)
            if cfg.lid_pin is not None:
                lid = Button(cfg.lid_pin, pull_up=cfg.lid_closed_when_low)  # "pressed" = closed
                lid.when_pressed = lambda: self._lid(True)
                lid.when_released = lambda: self._lid(False)
                self._devices.append(lid)
                self._lid(lid.is_pressed, initial=True)
            for kind, pin in (("pass", cfg.pass_lamp_pin), ("fail", cfg.fail_lamp_pin)):
                if pin is not None:
                    self._lamps[kind] = LED(pin)
                    self._devices.append(self._lamps[kind])
            if self._lamps:
                self._bus.register_handler(_Lamps(self), durable=False)
            loop_out = loop_in = None
            if cfg.loopback_out_pin is not None and cfg.loopback_in_pin is not None:
                loop_out = DigitalOutputDevice(cfg.loopback_out_pin)
                loop_in = DigitalInputDevice(cfg.loopback_in_pin, pull_up=False)
                self._devices += [loop_out, loop_in]
            self.mark_connected()
            next_selftest = time.monotonic()
            while not stop.is_set():
                if loop_out is not None and time.monotonic() >= next_selftest:
                    self.publish_event(self.loopback_selftest(loop_out, loop_in))
                    next_selftest = (time.monotonic() + cfg.selftest_interval if cfg.selftest_interval
                                     else float("inf"))
                self._flush_presses()  # presses the journal refused earlier
                stop.wait(min(1.0, max(0.05, next_selftest - time.monotonic())))
        finally:
            self._close()

    def _close(self) -> None:
        if self._lamps and self._bus is not None:
            self._bus.unregister_handler(self._handler_name, timeout=2.0)
        if self._lamp_timer is not None:
            self._lamp_timer.cancel()
        for d in reversed(self._devices):
            try:
                d.close()
            except Exception:  # noqa: BLE001 - closing must go on for the rest
                log.exception("gpio: closing %r failed", d)
        self._devices.clear()
        self._lamps.clear()

    # --------------------------------------------------------------------------------------------- counter
    def _on_press(self) -> None:
        now = time.monotonic()
        with self._pending_lock:
            if now - self._last_press < self.cfg.counter_bounce:
                self.bounces += 1
                return
            self._last_press = now
            self._pending += 1
            self.presses += 1
        self._flush_presses()

    def _flush_presses(self) -> None:
        with self._pending_lock:
            n = self._pending
            if not n or self.ledger is None:
                return
            try:
                self.ledger.increment(n)
                self._pending -= n
                self._published += 1
            except JournalError as e:  # at its bound or the disk full
                log.error("gpio: %s; %d press(es) kept pending", e, self._pending)

    # --------------------------------------------------------------------------------------------- lid
    def _lid(self, closed: bool, initial: bool = False) -> None:
        state = AssetState(self.cfg.lid_closed_state if closed else self.cfg.lid_open_state)
        reason = ("lid closed" if closed else "lid open") + (" (at start)" if initial else "")
        payload = AssetStateChangedEvent(asset_id=self.cfg.asset_id, new_state=state, timestamp=_now(), reason=reason)
        try:
            self.publish_event(Event.create(EventType.ASSET_STATE_CHANGED, payload, source=self.name))
        except JournalError as e:  # at its bound or the disk full
            log.error("gpio: lid change not recorded: %s", e)

    # --------------------------------------------------------------------------------------------- lamps
    def _show_result(self, event: Event) -> None:
        passed = event.payload.get("result") == TestResult.PASS.value
        for kind, led in self._lamps.items():
            led.on() if (kind == "pass") == passed else led.off()
        if self._lamp_timer is not None:
            self._lamp_timer.cancel()
        if self.cfg.lamp_hold:
            self._lamp_timer = threading.Timer(self.cfg.lamp_hold, self._lamps_off)
            self._lamp_timer.daemon = True
            self._lamp_timer.start()

    def _lamps_off(self) -> None:
        for led in list(self._lamps.values()):
            try:
                led.off()
            except Exception:  # noqa: BLE001 - the device may be closing
                pass

    # --------------------------------------------------------------------------------------------- self-test
    def loopback_selftest(self, out_dev: Any, in_dev: Any) -> Event:
        started = _now()
        steps = []
        for level in (True, False, True, False):
            out_dev.value = level
            time.sleep(0.005)  # let the level settle on a real wire
            m = judged(f"read back {'high' if level else 'low'}", bool(in_dev.value), expected=level)
            steps.append(TestStep(name=f"Drive GPIO{self.cfg.loopback_out_pin} {'high' if level else 'low'}, "
                                       f"read GPIO{self.cfg.loopback_in_pin}",
                                  status=m.status, measurements=[m], step_type="pass_fail"))
        out_dev.off()
        payload = TestResultEvent(unit_id=self.cfg.asset_id, result=overall([s.status for s in steps]),
                                  start_time=started, end_time=_now(), fixture_id=self.cfg.asset_id, steps=steps,
                                  custom_data={"test_type": "gpio_loopback"})
        return Event.create(EventType.TEST_RESULT, payload, source=self.name)


class _Lamps(FilteringHandler):
    """The pass and fail lamps: an ephemeral subscriber to test results, this fixture's own or those naming no
    fixture (another fixture's result on the same bus leaves the lamps alone)."""

    event_types = (EventType.TEST_RESULT,)

    def __init__(self, source: GpioSource) -> None:
        super().__init__()
        self._name = source._handler_name
        self._show = source._show_result
        asset_id = source.cfg.asset_id
        self.add_filter(lambda event: event.payload.get("fixture_id") in (None, asset_id))

    def handle(self, event: Event) -> None:
        self._show(event)


def build(section: GpioSourceSection, ctx) -> GpioSource:
    """The plugin's build (``gpio_plugin.PLUGIN``)."""
    return GpioSource(section)
