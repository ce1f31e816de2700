"""A simulated fixture, so the demo runs on any machine: test results, absolute counters and telemetry.

It behaves like a real fixture source in the ways that matter to the rest of the agent: the actuation counter is
kept in the journal's state table and written in the same transaction as the ``asset.counters`` event that reports
it, so after a crash the counter and the last reported value agree and never go backwards; measurements are judged
against their limits by the agent, not trusted from the device.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import datetime, timedelta, timezone

from .simulated_plugin import SimulatedSourceSection
from ..events.model import Event, EventType
from ..events.payloads import (
    AssetState, AssetStateChangedEvent, AssetTelemetryEvent, TestResult, TestResultEvent, TestStep,
)
from ..events.transports import ThreadedTransport
from ..protocols.results import judged, overall
from ..events.counters import CounterLedger

log = logging.getLogger(__name__)

#: (step name, measurement name, unit, low, high, nominal, spread)
_PLAN = [
    ("Power rails", "VCC_3V3", "V", 3.20, 3.40, 3.30, 0.05),
    ("Power rails", "VCC_5V0", "V", 4.85, 5.15, 5.00, 0.07),
    ("Current draw", "I_IDLE", "mA", 10.0, 45.0, 28.0, 6.0),
    ("Oscillator", "F_XTAL", "MHz", 15.999, 16.001, 16.000, 0.0003),
]


class SimulatedFixture(ThreadedTransport):
    def __init__(self, cfg: SimulatedSourceSection, station: str) -> None:
        super().__init__("simulated")
        self.cfg = cfg
        self.station = station
        self._rng = random.Random(cfg.seed)
        self._cycle = 0

    def run(self, stop: threading.Event) -> None:
        bus = self._bus
        assert bus is not None
        ledger = CounterLedger(bus, self.cfg.asset_id, self.name)
        self.mark_connected()
        self._publish_state(AssetState.ONLINE, "agent started")
        try:
            while not stop.wait(self.cfg.interval):
                self._cycle += 1
                now = datetime.now(timezone.utc)
                events = [self._test_result(now)]
                if self.cfg.telemetry_every and self._cycle % self.cfg.telemetry_every == 0:
                    events.append(self._telemetry(now))
                # The count and the events reporting it commit together: both or neither survive a power cut.
                ledger.increment(with_events=events)
                self._published += len(events) + 1
        finally:
            if not bus.journal._closed:
                self._publish_state(AssetState.OFFLINE, "agent stopping")

    def _publish_state(self, state: AssetState, reason: str) -> None:
        payload = AssetStateChangedEvent(asset_id=self.cfg.asset_id, new_state=state,
                                         timestamp=datetime.now(timezone.utc), reason=reason)
        self.publish_event(Event.create(EventType.ASSET_STATE_CHANGED, payload, source=self.name))

    def _test_result(self, now: datetime) -> Event:
        rng = self._rng
        failing = rng.random() < self.cfg.fail_rate
        bad_index = rng.randrange(len(_PLAN)) if failing else -1
        start = now - timedelta(seconds=min(self.cfg.interval, 1.5))
        steps: dict[str, TestStep] = {}
        for i, (step, name, unit, lo, hi, nominal, spread) in enumerate(_PLAN):
            value = rng.gauss(nominal, spread / 3)
            if i == bad_index:
                value = hi + spread if rng.random() < 0.5 else lo - spread
            m = judged(name, round(value, 6), unit, lo, hi, nominal)
            st = steps.setdefault(step, TestStep(name=step, status=TestResult.PASS, step_type="numeric_limit"))
            st.measurements.append(m)
            st.status = overall([st.status, m.status])
        result = overall([s.status for s in steps.values()])
        serial = f"SN{now:%y%m%d}{self._rng.randrange(10**6):06d}"
        payload = TestResultEvent(
            unit_id=serial, result=result, start_time=start, end_time=now, part_number=self.cfg.part_number,
            revision=self.cfg.revision, station_id=self.station, fixture_id=self.cfg.asset_id,
            steps=list(steps.values()),
        )
        return Event.create(EventType.TEST_RESULT, payload, source=self.name)

    def _telemetry(self, now: datetime) -> Event:
        rng = self._rng
        payload = AssetTelemetryEvent(
            asset_id=self.cfg.asset_id, timestamp=now,
            readings={"temperature_c": round(rng.gauss(31.0, 0.8), 2), "humidity_pct": round(rng.gauss(41.0, 2.0), 1)},
            units={"temperature_c": "degC", "humidity_pct": "%"},
        )
        return Event.create(EventType.ASSET_TELEMETRY, payload, source=self.name)


def build(section: SimulatedSourceSection, ctx) -> SimulatedFixture:
    """The plugin's build (``simulated_plugin.PLUGIN``)."""
    return SimulatedFixture(section, ctx.station)
