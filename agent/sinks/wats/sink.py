"""``WatsSink``: the durable subscriber ``wats``, one WATS call per event type (``DISPATCH``).

The sink decides what each event becomes (``routes.ROUTES``) and what must hold around it: a counters or state
value older than one WATS already has is never sent over it (``LATEST_WINS``), a stale counters event is kept as a
dead letter, a total that goes down is flagged. How a request is sent and what WATS' answer means is the client's
(``client.py``); reports are ``reports.py``'s, asset log entries ``assets.py``'s, increments for old servers the
ledger's (``ledger.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Hashable

from ...events.handlers import BaseHandler
from ...events.ids import clock_synchronized
from ...events.model import Event, EventType
from ...events.policies import CircuitBreaker, PermanentError, RetryPolicy
from ...protocols.wsjf import MappingError, product_of, test_type_of
from ..wats_plugin import WatsSinkSection
from .assets import AssetLog
from .attempts import InFlight, StateStore
from .client import WatsClient
from .ledger import IncrementLedger
from .reports import Components, Processes, Reports, station_for
from .routes import LATEST_WINS, SENT_TYPES
from .status import waiting_for_part_number

if TYPE_CHECKING:
    from ...events.journal import Journal

log = logging.getLogger("agent.sinks.wats")

#: WATS asset states (§4.1) for our AssetState values.
ASSET_STATE = {"online": 1, "idle": 1, "busy": 1, "offline": 5, "error": 3, "maintenance": 3}


class WatsSink(BaseHandler):
    """Register on the bus as the durable subscriber ``wats``. ``journal`` holds the small state that must survive
    a crash with the events (the increment ledger, the log entry in flight); without one (a bare handler in a
    test) those fall back to memory."""

    event_types = SENT_TYPES
    coalesce_types = (EventType.ASSET_COUNTERS.value,)

    def __init__(self, cfg: WatsSinkSection, *, station: str, location: str, purpose: str, data_dir: Path,
                 journal: "Journal | None" = None, clock_check: Callable[[], bool] = clock_synchronized) -> None:
        self._name = "wats"
        self.cfg = cfg
        self.client = WatsClient(cfg)
        self.station = station_for(cfg, station=station, location=location, purpose=purpose)
        self.retry_policy = RetryPolicy(max_retries=None, initial_delay=min(1.0, cfg.retry_max),
                                        max_delay=cfg.retry_max)
        self.circuit_breaker = CircuitBreaker(failure_threshold=5, reset_timeout=min(30.0, cfg.retry_max))
        self._journal = journal
        self.state = StateStore(journal)
        inflight = InFlight(cfg)
        self.assets = AssetLog(self.client, self.state, inflight)
        self.ledger = IncrementLedger(self.client, self.state, inflight)
        self.components = Components(self.state)
        self.reports = Reports(self.client, cfg, self.station, Processes(self.client, cfg,
                                                                         data_dir / "wats-processes.json"),
                               self.components, clock_check)
        if journal is not None:
            self.requeue_resolved()

    def requeue_resolved(self) -> list[int]:
        """Hand back the results that were dead-lettered for want of a part number and that the rules as now
        configured resolve (a ``[[sinks.wats.products]]`` rule or a default added since): adding the rule and
        restarting is all a site has to do. Marked for retry like ``fixture-agent dlq retry``."""
        assert self._journal is not None
        ready = []
        for dl, event in waiting_for_part_number(self._journal.reader()):
            if event is None:
                continue
            try:
                product_of(event.payload, test_type_of(event), self.station)
            except MappingError:
                continue
            ready.append(dl)
        for i in range(0, len(ready), 500):  # one statement per 500: within every SQLite's variable limit
            self._journal.request_retry(ready[i:i + 500])
        if ready:
            log.info("wats: %d result(s) that waited for a part-number rule now have one; sending them", len(ready))
        return ready

    def interrupt(self) -> None:
        """Called by the subscription when the agent stops: a wait for the rate budget ends at once."""
        self.client.interrupt()

    def resume(self) -> None:
        """Called by the subscription when it starts (again)."""
        self.client.resume()

    def close(self) -> None:
        self.client.close()

    # --------------------------------------------------------------------------------------------- handler
    def coalesce_key(self, event: Event) -> Hashable | None:
        # Counters are absolute: while a backlog drains only the newest per asset needs sending (in increment
        # mode too: the ledger turns the newest absolute value into the deltas WATS has not seen). A stale one
        # (older by the device's own time than one journaled before it) supersedes nothing.
        if event.event_type != EventType.ASSET_COUNTERS.value or _stale_counters(event):
            return None
        return event.payload.get("asset_id")

    def handle(self, event: Event) -> None:
        t = event.event_type
        send = self.DISPATCH.get(t)
        if send is None:
            return  # the subscriber's type filter keeps other types away; nothing to send
        if t in LATEST_WINS and self.replaying is not None and self._stale(event, self.replaying):
            return  # an older value than WATS already has (a dead letter replayed late): sending it would undo
        send(self, event)
        if t in LATEST_WINS:
            self._record_latest(event)

    # --------------------------------------------------------------------------------------------- one per type
    def _send_report(self, event: Event) -> None:
        self.reports.send(event)

    def _send_counters(self, event: Event) -> None:
        p = event.payload
        stale = _stale_counters(event)
        if stale:  # kept where it can be seen (dlq list, status), never sent over the newer values
            raise PermanentError(f"counters for {p['asset_id']} not sent: {stale}")
        if self.cfg.counters_api == "absolute":
            self._check_total(event)
            # WATS >= 25.3: absolute setters, so a resend sets the same value again (idempotent)
            self.client.request("PUT", "/api/Asset/SetTotalCount",
                                params={"serialNumber": p["asset_id"], "totalCount": p["total_count"]})
            self.client.request("PUT", "/api/Asset/SetRunningCount",
                                params={"serialNumber": p["asset_id"], "runningCount": p["running_count"]})
        else:
            self.ledger.apply(p["asset_id"], p["running_count"], p["total_count"])

    def _send_state(self, event: Event) -> None:
        p = event.payload
        self.client.request("PUT", "/api/Asset/State",
                            params={"serialNumber": p["asset_id"], "state": ASSET_STATE.get(p["new_state"], 0)})

    def _send_fault(self, event: Event) -> None:
        p = event.payload
        state = "cleared" if p.get("cleared") else p.get("severity", "error")
        asset_id = self.assets.asset_id(p["asset_id"])
        self.assets.log_once(event, p["asset_id"], "/api/Asset/Message", lambda tag: {"json": {
            "assetId": asset_id, "user": self.cfg.operator,
            "comment": f"Fault {p['fault_code']} ({state}): {p['fault_message']} {tag}"}})

    def _send_maintenance(self, event: Event) -> None:
        """Maintenance and calibration: the same entry, in the log WATS keeps for each."""
        p = event.payload
        path = ("/api/Asset/Maintenance" if event.event_type == EventType.ASSET_MAINTENANCE.value
                else "/api/Asset/Calibration")
        by = f" by {p['performed_by']}" if p.get("performed_by") else ""
        self.assets.log_once(event, p["asset_id"], path, lambda tag: {"params": {
            "serialNumber": p["asset_id"], "dateTime": p["timestamp"],
            "comment": f"{p['maintenance_type']}: {p['description']}{by} {tag}"}})

    def _add_children(self, event: Event) -> None:
        """``material.installed`` with serialized components → ``AddChildUnit`` per component (a relation: setting
        it again is harmless). Components without a serial (reels, lots) are not units and are not sent."""
        p = event.payload
        children = [c for c in p.get("components", []) if c.get("serial_number")]
        if not children:
            return
        self.components.remember(p["unit_id"], children)
        parent_pn = (p.get("custom_data") or {}).get("part_number")
        if not parent_pn:
            raise PermanentError(f"material.installed for unit {p['unit_id']!r} has no custom_data.part_number; "
                                 "WATS' AddChildUnit needs the parent's part number")
        for c in children:  # all checked before any is sent
            if not c.get("part_number"):
                raise PermanentError(f"component {c['reference_designator']} ({c['serial_number']}) has no "
                                     "part_number; WATS' AddChildUnit needs it")
        for c in children:
            self.client.request("POST", "/api/Production/AddChildUnit", params={
                "parentSerialNumber": p["unit_id"], "parentPartNumber": parent_pn,
                "childSerialNumber": c["serial_number"], "childPartNumber": c["part_number"]})

    #: event type → what sends it; its keys are ``routes.ROUTES``' (a test holds them equal)
    DISPATCH: ClassVar[dict[str, Callable[["WatsSink", Event], None]]] = {
        EventType.TEST_RESULT.value: _send_report,
        EventType.INSPECTION_RESULT.value: _send_report,
        EventType.ASSET_COUNTERS.value: _send_counters,
        EventType.ASSET_STATE_CHANGED.value: _send_state,
        EventType.ASSET_FAULT.value: _send_fault,
        EventType.ASSET_MAINTENANCE.value: _send_maintenance,
        EventType.ASSET_CALIBRATION.value: _send_maintenance,
        EventType.MATERIAL_INSTALLED.value: _add_children,
    }

    # --------------------------------------------------------------------------------------------- latest wins
    def _record_latest(self, event: Event) -> None:
        p = event.payload
        latest: dict[str, Any] = {"id": event.id, "dead_letters_max": self._last_dead_letter_id()}
        if event.event_type == EventType.ASSET_COUNTERS.value:
            latest["total"] = p["total_count"]  # what the next absolute total is compared with
        self.state.put(f"wats:latest:{event.event_type}:{p['asset_id']}", latest)

    def _stale(self, event: Event, dead_letter_id: int) -> bool:
        """For a replayed dead letter: was a value for this asset sent after it was dead-lettered? A subscriber
        goes through the journal in order, so anything sent after the dead letter was written came later in the
        journal: it is newer, whatever the clocks said (a Pi restarted with its clock behind stamps newer values
        with older times). Recorded as the highest dead-letter id at the moment of sending."""
        last = self.state.get(f"wats:latest:{event.event_type}:{event.payload['asset_id']}")
        if isinstance(last, dict) and isinstance(last.get("dead_letters_max"), int):
            return last["dead_letters_max"] >= dead_letter_id
        last_id = last.get("id") if isinstance(last, dict) else last
        return isinstance(last_id, str) and event.id < last_id  # recorded by an earlier version: the id's time

    def _last_dead_letter_id(self) -> int:
        return self._journal.last_dead_letter_id() if self._journal is not None else 0

    def _check_total(self, event: Event) -> None:
        """A total is a lifetime count: one lower than the last sent (a replaced or wiped counter, a device
        reporting another asset's id) is sent, as the newest value, but never silently: a warning and
        ``fixture_agent_flagged_total{kind="total_went_down"}``. (Increment mode has its own answer: the ledger
        counts the new counter from zero.)"""
        p = event.payload
        last = self.state.get(f"wats:latest:{EventType.ASSET_COUNTERS.value}:{p['asset_id']}")
        before = last.get("total") if isinstance(last, dict) else None
        if isinstance(before, int) and p["total_count"] < before:
            log.warning("WATS: asset %s: total count goes down from %d to %d (event %s; counter replaced or "
                        "wiped?); setting it as the newest value", p["asset_id"], before, p["total_count"], event.id)
            if self.metrics is not None:
                self.metrics.record_flagged(self.name, "total_went_down")


def _stale_counters(event: Event) -> str | None:
    """Why a counters event is stale (the MQTT source marks one older by the device's own time than a value it
    journaled before), None if it is not."""
    reason = event.metadata.custom.get("stale")
    return reason if isinstance(reason, str) and reason else None


def build(section: WatsSinkSection, ctx: Any) -> WatsSink:
    """The plugin's build (``wats_plugin.PLUGIN``)."""
    agent = ctx.config.agent
    return WatsSink(section, station=agent.station, location=agent.location, purpose=agent.purpose,
                    data_dir=ctx.data_dir, journal=ctx.journal)
