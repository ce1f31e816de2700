"""Test and inspection results as WSJF reports, and what must hold before one is sent.

Before sending a report: its ``processCode`` must be a test operation on the server (the list is fetched from
``GET /api/App/Processes``, cached on disk for offline starts, refreshed when online), and the clock must be
synchronized (a Pi has no RTC; WATS quarantines future-dated reports), otherwise reports are held; times stamped
before the sync are corrected from the monotonic clock (``protocols.clock``). A result's unit gets the serialized
components a ``material.installed`` recorded for it as sub units. Reports are idempotent: the report id is the
event id, so a resend overwrites.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import msgspec

from ... import __version__
from ...events.model import Event, EventType
from ...events.policies import PermanentError, TransientError
from ...protocols.clock import correct_timestamps
from ...protocols.wsjf import (
    LONG_TEXT_MAX, NAME_MAX, MappingError, NoPartNumber, ProductRule, Station, shorten, test_type_of, to_wsjf,
)
from ..wats_plugin import WatsSinkSection
from .attempts import StateStore
from .client import WatsClient
from .errors import ClockNotSynchronized
from .status import NO_PART_NUMBER

log = logging.getLogger("agent.sinks.wats")

JSON = {"Content-Type": "application/json"}
#: serialized components per unit from material.installed, for the unit's next report's subUnits
COMPONENTS_KEY = "wats:components"
COMPONENTS_KEPT = 200


def station_for(cfg: WatsSinkSection, *, station: str, location: str, purpose: str) -> Station:
    """The reporting station and its part-number and process-code rules, from ``[sinks.wats]`` (the uplink and
    ``cfx samples --config`` map results the same way)."""
    return Station(
        machine_name=station, location=location, purpose=purpose, process_codes=dict(cfg.process_codes),
        default_process_code=cfg.default_process_code, default_part_number=cfg.default_part_number,
        default_revision=cfg.default_revision, operator=cfg.operator, agent_version=__version__,
        products=tuple(ProductRule(match=r.match, part_number=r.part_number, revision=r.revision,
                                   process_code=r.process_code) for r in cfg.products),
        recipe_as_part_number=cfg.recipe_as_part_number, identifier_chars=cfg.identifier_chars,
        identifier_replacement=cfg.identifier_replacement,
    )


def test_codes(doc: Any) -> set[int]:
    """The test operation codes in a ``GET /api/App/Processes`` answer (a list, or an OData-style ``value``
    wrapper); raises ValueError, KeyError, TypeError or AttributeError on a shape it cannot read. Shared with
    ``fixture-agent doctor``."""
    if isinstance(doc, dict):
        doc = doc.get("value", doc)
    return {int(p["code"]) for p in doc if p.get("isTestOperation")}


class Processes:
    """The server's test operation codes: fetched once per run and every ``processes_refresh``, kept on disk
    (``wats-processes.json``) so an offline start still knows them."""

    def __init__(self, client: WatsClient, cfg: WatsSinkSection, cache: Path) -> None:
        self.client = client
        self.cfg = cfg
        self.cache = cache
        self.codes: set[int] | None = None
        self.fetched_at: float | None = None  # monotonic time of the last fetch; None: never fetched (cache)
        try:
            doc = json.loads(cache.read_text())
            self.codes = set(doc["test_codes"])
        except (OSError, ValueError, KeyError, TypeError):
            self.codes = None

    def refresh(self, force: bool = False) -> None:
        """Fetch the test operations when never fetched in this run (the disk cache is only for offline starts),
        when older than ``processes_refresh``, or when forced (before calling a code unknown)."""
        fresh = self.fetched_at is not None and time.monotonic() - self.fetched_at < self.cfg.processes_refresh
        if self.codes is not None and fresh and not force:
            return
        try:
            resp = self.client.request("GET", "/api/App/Processes")
            codes = test_codes(resp.json())
        except TransientError:
            if self.codes is not None and not force:
                return  # offline: the cached list will do (but it cannot prove a code unknown: that waits)
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TransientError(f"WATS sent an unreadable process list: {e}") from None
        if not codes:
            raise TransientError("WATS lists no test operations (GET /api/App/Processes); holding reports")
        self.codes = codes
        self.fetched_at = time.monotonic()
        tmp = self.cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"test_codes": sorted(codes), "fetched_at": datetime.now(timezone.utc).isoformat()}))
        os.replace(tmp, self.cache)

    def check(self, code: int, event: Event) -> None:
        """A PermanentError if WATS does not list ``code`` as a test operation (asked once more first, unless it
        was asked within the minute); nothing if it does, or if the list is not known yet."""
        self.refresh()
        if self.codes is not None and code not in self.codes:
            if self.fetched_at is None or time.monotonic() - self.fetched_at > 60.0:
                self.refresh(force=True)  # ask WATS once more before calling the code unknown
        if self.codes is not None and code not in self.codes:
            raise PermanentError(f"processCode {code} (test type {test_type_of(event)!r}) is not a "
                                 f"test operation on this WATS server; known: {sorted(self.codes)}")


class Components:
    """The serialized components a ``material.installed`` put into a unit, kept for its next report."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    def remember(self, unit: str, components: list[dict[str, Any]]) -> None:
        """Keep a unit's serialized components so its next report lists them as ``subUnits`` (WATS shows what was
        built into the unit beside its test). Bounded: the last ``COMPONENTS_KEPT`` units."""
        known = self.state.get(COMPONENTS_KEY) or {}
        known.pop(unit, None)
        known[unit] = [{"part_number": c.get("part_number"), "serial_number": c["serial_number"],
                        "part_type": c.get("reference_designator")} for c in components if c.get("part_number")]
        while len(known) > COMPONENTS_KEPT:
            known.pop(next(iter(known)))
        self.state.put(COMPONENTS_KEY, known)

    def added_to(self, event: Event) -> Event:
        """The result with the components a ``material.installed`` recorded for its unit among its sub units."""
        if event.event_type != EventType.TEST_RESULT.value:
            return event
        known = (self.state.get(COMPONENTS_KEY) or {}).get(event.payload.get("unit_id"))
        if not known:
            return event
        have = {(u.get("part_number"), u.get("serial_number")) for u in event.payload.get("sub_units", [])}
        extra = [{k: v for k, v in c.items() if v is not None} for c in known
                 if (c["part_number"], c["serial_number"]) not in have]
        if not extra:
            return event
        payload = {**event.payload, "sub_units": [*event.payload.get("sub_units", []), *extra]}
        return msgspec.structs.replace(event, payload=payload)


class Reports:
    """Sends one result as a WSJF report (``send``), or raises what it waits for or why it never can."""

    def __init__(self, client: WatsClient, cfg: WatsSinkSection, station: Station, processes: Processes,
                 components: Components, clock_check: Callable[[], bool]) -> None:
        self.client = client
        self.cfg = cfg
        self.station = station
        self.processes = processes
        self.components = components
        self.clock_check = clock_check

    def send(self, event: Event) -> None:
        if self.cfg.require_clock_sync and not self.clock_check():
            raise ClockNotSynchronized("the clock is not synchronized (no NTP yet); holding reports so WATS does "
                                       "not quarantine them as future-dated")
        event, note = correct_timestamps(self.components.added_to(event))
        try:
            report = to_wsjf(event, self.station)
        except NoPartNumber as e:
            raise PermanentError(f"{NO_PART_NUMBER}{e}") from None
        except MappingError as e:
            raise PermanentError(f"cannot build a WSJF report: {e}") from None
        except Exception as e:  # noqa: BLE001 - a defect of ours on this one event must not hold every other
            log.error("wats: building the report for event %s failed", event.id, exc_info=True)
            raise PermanentError(f"cannot build a WSJF report (an agent bug, please report it): "
                                 f"{type(e).__name__}: {e}") from None
        if note:  # the gist where WATS lists misc infos (100 characters at most), the whole story in the comment
            report["miscInfos"].append({"description": "ClockCorrection", "text": shorten(note, NAME_MAX)})
            report["uut"]["comment"] = shorten(note, LONG_TEXT_MAX)
        self.processes.check(report["processCode"], event)
        self.client.request("POST", "/api/Report/WSJF", content=msgspec.json.encode(report), headers=JSON)
