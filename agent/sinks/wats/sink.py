"""The WATS uplink: a durable subscriber that forwards results and asset data over REST (httpx).

Delivery is the bus's: events arrive in journal order, at least once, and are acknowledged only when WATS
answered 2xx. What this module decides is what each answer means (``reference/wats-api.md`` §6 and §10):

* 2xx: done.
* 400 and other 4xx: permanent. The event goes to the dead-letter table with the server's text and the queue
  moves on: retrying can never fix a report WATS refuses.
* 401/403: WATS rejects the token. Nothing is dropped: the subscriber is paused (retrying slowly), re-reading the
  token each time, so fixing the file resumes delivery without a restart; ``status`` says why it waits.
* 408, 429, 5xx, connection errors, timeouts: transient. Exponential backoff with jitter and no attempt limit;
  ``Retry-After`` (seconds or HTTP date) is honoured.

At least once must never become "twice" on the server. Reports are idempotent because the report id is the event
id (a resend overwrites). Counters are absolute (``SetRunningCount``/``SetTotalCount``), or, for servers older
than 25.3, increments from a ledger that verifies an in-doubt increment instead of resending it
(``wats_ledger.py``). Asset log entries (faults, maintenance, calibration) carry the event id and the log is
searched before an in-doubt resend. The full mapping is in ``docs/wats-uplink.md``.

Before sending a report: its ``processCode`` must be a test operation on the server (the list is fetched from
``GET /api/App/Processes``, cached on disk for offline starts, refreshed when online), and the clock must be
synchronized (a Pi has no RTC; WATS quarantines future-dated reports), otherwise reports are held; times stamped
before the sync are corrected from the monotonic clock (``correct_timestamps``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
import msgspec
from typing import TYPE_CHECKING, Any, Callable, Hashable
from urllib.parse import quote

from .. import __version__
from ..config_base import ConfigError
from .wats_plugin import WatsSinkSection
from .. import secrets
from ..events.handlers import BaseHandler
from ..events.ids import BOOT_ID, clock_synchronized
from ..events.model import Event, EventType, decode
from ..events.policies import CircuitBreaker, NotDelivered, PermanentError, RetryPolicy, TransientError
from ..protocols.wsjf import (
    LONG_TEXT_MAX, NAME_MAX, MappingError, NoPartNumber, ProductRule, Station, product_of, recipe_of, shorten,
    test_type_of, to_wsjf,
)
from .wats_ledger import IncrementLedger

if TYPE_CHECKING:
    import sqlite3

    from ..events.journal import Journal

log = logging.getLogger(__name__)

REPORT_TYPES = (EventType.TEST_RESULT.value, EventType.INSPECTION_RESULT.value)
#: What the uplink sends; every other type stays out of its way (the subscriber never even decodes them).
SENT_TYPES = (*REPORT_TYPES, EventType.ASSET_COUNTERS.value, EventType.ASSET_STATE_CHANGED.value,
              EventType.ASSET_FAULT.value, EventType.ASSET_MAINTENANCE.value, EventType.ASSET_CALIBRATION.value,
              EventType.MATERIAL_INSTALLED.value)
#: What the uplink does with each event type it sends (docs/wats-uplink.md): ``cfx samples`` and ``status`` say it,
#: and a test holds its keys equal to SENT_TYPES and to what ``handle`` dispatches.
ROUTES = {
    "test.result": "POST /api/Report/WSJF", "inspection.result": "POST /api/Report/WSJF",
    "asset.counters": "PUT /api/Asset/SetRunningCount + SetTotalCount", "asset.state_changed": "PUT /api/Asset/State",
    "asset.fault": "POST /api/Asset/Message", "asset.maintenance": "POST /api/Asset/Maintenance",
    "asset.calibration": "POST /api/Asset/Calibration",
    "material.installed": "POST /api/Production/AddChildUnit (components with a serial number)",
}
INFLIGHT_KEY = "wats:log-entry-in-flight"
#: Absolute values: a later event replaces an earlier one, so an earlier one must never be sent after it.
LATEST_WINS = (EventType.ASSET_COUNTERS.value, EventType.ASSET_STATE_CHANGED.value)
JSON = {"Content-Type": "application/json"}
#: how a dead letter for a result without a part number begins: ``status`` groups them by recipe, and the uplink
#: hands them back once a new ``[[sinks.wats.products]]`` rule (or a default) gives them one
NO_PART_NUMBER = "waiting for a part-number rule: "
#: how versions before the part-number rules said it: their dead letters are handed back too
LEGACY_NO_PART_NUMBER = "cannot build a WSJF report: part_number is required"
#: serialized components per unit from material.installed, for the unit's next report's subUnits
COMPONENTS_KEY = "wats:components"
COMPONENTS_KEPT = 200
#: WATS asset states (§4.1) for our AssetState values.
ASSET_STATE = {"online": 1, "idle": 1, "busy": 1, "offline": 5, "error": 3, "maintenance": 3}


class AuthRejected(TransientError):
    """401/403: not the event's fault, and not something a resend of it can fix; we wait for a good token."""

    state = "paused"


class Redirected(TransientError):
    """WATS answered 3xx: the configured url is wrong (http → https, a moved server); not the event's fault."""

    state = "paused"


class Stopping(TransientError):
    """The agent is stopping; the event stays in the journal."""


class ClockNotSynchronized(TransientError):
    """Reports wait until NTP has set the clock; everything else flows."""

    state = "holding"


#: A wall clock stepped by more than this since an event was stamped was wrong then (NTP slews smaller errors).
CLOCK_STEP_TOLERANCE = 2.0
FUTURE_TOLERANCE = 60.0


def correct_timestamps(event: Event, *, now: float | None = None, now_mono_ns: int | None = None,
                       boot_id: str = BOOT_ID) -> tuple[Event, str | None]:
    """Report times as they really were, even if stamped before NTP set the clock.

    A Pi has no RTC: until NTP syncs, its clock runs from the last shutdown (fake-hwclock) and is behind, sometimes
    by days. An event stamped by the agent while the clock was unsynchronized says so (``clock_unsynced``) and
    carries the boot id and a monotonic timestamp. If it was stamped during this boot, its true wall time is
    ``now - (monotonic now - monotonic then)``; when that differs from the stamped time by more than
    ``CLOCK_STEP_TOLERANCE``, the clock was stepped since, and the payload times taken by the same wrong clock
    (those nearer the stamped time than the true one: a device with its own good clock is left alone) are
    shifted by the difference. Whatever happened before, a start that would still be future-dated (WATS
    quarantines those) is moved back to now. Either correction is written into the report (miscInfo
    ``ClockCorrection``), so nothing is hidden.
    """
    now = time.time() if now is None else now
    now_mono_ns = time.monotonic_ns() if now_mono_ns is None else now_mono_ns
    md = event.metadata
    payload = event.payload if isinstance(event.payload, dict) else {}
    notes: list[str] = []
    fixed = payload
    if md.clock_unsynced and md.boot_id == boot_id and md.monotonic_ns <= now_mono_ns:
        stamped = md.timestamp.timestamp()
        true_time = now - (now_mono_ns - md.monotonic_ns) / 1e9
        delta = true_time - stamped
        if abs(delta) > CLOCK_STEP_TOLERANCE:
            fixed = _shift_times(payload, delta, near=(stamped, true_time))
            if fixed is not payload:
                notes.append(f"times shifted by {delta:+.1f} s: stamped at {md.timestamp.isoformat()} before the "
                             "clock was synchronized; corrected from the monotonic clock")
    start = fixed.get("start_time")
    if isinstance(start, str):
        try:
            ahead = datetime.fromisoformat(start).timestamp() - now
        except ValueError:
            ahead = 0.0
        if ahead > FUTURE_TOLERANCE:
            fixed = _shift_times(fixed, -ahead, near=None)
            notes.append(f"start {start} was {ahead:.0f} s in the future (a device or an earlier boot with a wrong "
                         "clock); moved to the time of sending")
    if fixed is payload:
        return event, None
    return msgspec.structs.replace(event, payload=fixed), "; ".join(notes)


def _shift_times(payload: dict[str, Any], delta: float, near: tuple[float, float] | None) -> dict[str, Any]:
    """``start_time``/``end_time``/``timestamp`` of the payload and its steps moved by ``delta`` seconds; with
    ``near=(wrong, right)`` only the times closer to the wrong clock than to the right one."""
    shift = timedelta(seconds=delta)
    changed = False

    def moved(d: dict[str, Any]) -> dict[str, Any]:
        nonlocal changed
        out = dict(d)
        for k in ("start_time", "end_time", "timestamp"):
            if not isinstance(d.get(k), str):
                continue
            try:
                t = datetime.fromisoformat(d[k])
            except ValueError:
                continue  # the mapping will name the bad field
            if near is not None and abs(t.timestamp() - near[0]) >= abs(t.timestamp() - near[1]):
                continue  # taken by a clock that was right
            out[k] = (t + shift).isoformat()
            changed = True
        return out

    fixed = moved(payload)
    if isinstance(fixed.get("steps"), list):
        fixed["steps"] = [moved(s) if isinstance(s, dict) else s for s in fixed["steps"]]
    return fixed if changed else payload


def _now_stamp() -> dict[str, Any]:
    """When an attempt was made, in a form that survives a restart *and* a wall-clock step: within one boot the
    monotonic clock (system-wide, so it spans agent restarts) is used; the wall time only across a reboot."""
    return {"at": time.time(), "mono": time.monotonic(), "boot": BOOT_ID}


def _seconds_since(attempt: dict[str, Any]) -> float:
    """How long ago ``attempt`` was recorded. A wall clock stepped back across a reboot gives a negative span:
    that reads as long ago (the effect is checked in WATS before anything is resent), never as a wait of hours."""
    if attempt.get("boot") == BOOT_ID and isinstance(attempt.get("mono"), (int, float)):
        return time.monotonic() - float(attempt["mono"])
    since = time.time() - float(attempt.get("at", 0))
    return since if since >= 0 else float("inf")


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class RateBudget:
    """At most ``per_minute`` requests in any 60 s window (WATS' documented limit); waits, never drops."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._sent: deque[float] = deque()
        self._clock = clock

    def wait(self, stop: threading.Event | None = None) -> None:
        while True:
            now = self._clock()
            while self._sent and now - self._sent[0] >= 60.0:
                self._sent.popleft()
            if len(self._sent) < self.per_minute:
                self._sent.append(now)
                return
            pause = 60.0 - (now - self._sent[0])
            if stop is None:
                time.sleep(pause)
            elif stop.wait(pause):
                raise Stopping("stopping while waiting for the rate budget")


class WatsSink(BaseHandler):
    """Register on the bus as the durable subscriber ``wats``. ``journal`` holds the small state that must survive
    a crash with the events (the increment ledger, the log entry in flight); without one (a bare handler in a
    test) those fall back to memory."""

    event_types = SENT_TYPES
    coalesce_types = (EventType.ASSET_COUNTERS.value,)

    def __init__(self, cfg: WatsSinkSection, *, station: str, location: str, purpose: str, data_dir: Path,
                 journal: "Journal | None" = None, clock_check: Callable[[], bool] = clock_synchronized) -> None:
        # httpx imports its command-line client (click, pygments, rich) whenever those happen to be installed;
        # the agent never uses it, and on a Pi that is about 2 MB of RSS for nothing.
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
        import httpx  # optional part: only imported when the WATS sink is configured

        self._name = "wats"
        self.cfg = cfg
        from ..transport_warnings import log_warnings, wats_warnings

        log_warnings(wats_warnings(cfg), log)  # plain http:// or an unchecked certificate: said at start, loudly
        self.station = station_for(cfg, station=station, location=location, purpose=purpose)
        self.retry_policy = RetryPolicy(max_retries=None, initial_delay=min(1.0, cfg.retry_max),
                                        max_delay=cfg.retry_max)
        self.circuit_breaker = CircuitBreaker(failure_threshold=5, reset_timeout=min(30.0, cfg.retry_max))
        self.budget = RateBudget(cfg.requests_per_minute)
        self.clock_check = clock_check
        self.processes_cache = data_dir / "wats-processes.json"
        self._processes: set[int] | None = None
        self._processes_at: float | None = None  # monotonic time of the last fetch; None: never fetched (cache)
        self._stopping = threading.Event()
        self._token = self._read_token()
        self.client = httpx.Client(base_url=cfg.url.rstrip("/").removesuffix("/api"), timeout=cfg.timeout,
                                   verify=cfg.verify_tls, headers={"Accept": "application/json"})
        if self._token is not None:
            self.client.headers["Authorization"] = f"Basic {self._token}"
        self._httpx = httpx
        self._journal = journal
        self._asset_ids: dict[str, str] = {}
        self._memory_state: dict[str, Any] = {}
        self.ledger = IncrementLedger(self)
        self._load_cached_processes()
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

    # --------------------------------------------------------------------------------------------- token
    def token_path(self) -> Path | None:
        """``token_file``, else a systemd credential (``LoadCredential=wats-token:…`` puts it in
        ``$CREDENTIALS_DIRECTORY``), else None (the ``token_env`` variable is used)."""
        return secrets.locate(self.cfg, "token")[0]

    def _read_token(self) -> str | None:
        token, where = secrets.resolve(self.cfg, "token", "sinks.wats.token")
        return None if token is None else _checked_token(token, where)

    def _authorize(self) -> None:
        """Set the Authorization header on the client (once per token, not per request)."""
        if self._token is None:
            try:
                self._token = self._read_token()
            except ConfigError as e:
                raise AuthRejected(str(e)) from None
            if self._token is None:
                self.client.headers.pop("Authorization", None)
                where = self.token_path() or f"${self.cfg.token_env}"
                raise AuthRejected(f"no WATS token ({where} is missing or empty); holding events")
            self.client.headers["Authorization"] = f"Basic {self._token}"

    # --------------------------------------------------------------------------------------------- requests
    def interrupt(self) -> None:
        """Called by the subscription when the agent stops: a wait for the rate budget ends at once."""
        self._stopping.set()

    def resume(self) -> None:
        """Called by the subscription when it starts (again)."""
        self._stopping.clear()

    def _request(self, method: str, path: str, **kw: Any):
        self.budget.wait(self._stopping)
        self._authorize()
        try:
            resp = self.client.request(method, path, **kw)
        except self._httpx.ConnectError as e:
            raise NotDelivered(f"WATS unreachable: {type(e).__name__}: {self._redact(e)}") from None
        except self._httpx.TimeoutException as e:
            # a write or read timeout may come after WATS took the request: in doubt
            raise TransientError(f"WATS timed out: {type(e).__name__}") from None
        except self._httpx.TransportError as e:
            raise TransientError(f"WATS connection failed: {type(e).__name__}: {self._redact(e)}") from None
        code = resp.status_code
        if 200 <= code < 300:
            return resp
        text = self._redact(_server_text(resp))
        if code in (401, 403):
            self._token = None  # re-read the token file next time: fixing it resumes delivery
            raise AuthRejected(f"WATS rejects the token ({code}): {text}")
        if 300 <= code < 400:
            raise Redirected(f"WATS redirects {path} to {resp.headers.get('Location', '?')} ({code}): "
                             "fix sinks.wats.url")
        retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
        if code in (429, 503):
            raise NotDelivered(f"WATS answered {code}: {text}", retry_after)  # refused before processing
        if code == 408 or code >= 500:
            raise TransientError(f"WATS answered {code}: {text}", retry_after)
        raise PermanentError(f"WATS refused it ({code}): {text}")

    def _redact(self, error: object) -> str:
        text = str(error)
        return text.replace(self._token, "***") if self._token else text

    # --------------------------------------------------------------------------------------------- processes
    def _load_cached_processes(self) -> None:
        try:
            doc = json.loads(self.processes_cache.read_text())
            self._processes = set(doc["test_codes"])
        except (OSError, ValueError, KeyError, TypeError):
            self._processes = None

    def _refresh_processes(self, force: bool = False) -> None:
        """Fetch the test operations when never fetched in this run (the disk cache is only for offline starts),
        when older than ``processes_refresh``, or when forced (before calling a code unknown)."""
        fresh = self._processes_at is not None and time.monotonic() - self._processes_at < self.cfg.processes_refresh
        if self._processes is not None and fresh and not force:
            return
        try:
            resp = self._request("GET", "/api/App/Processes")
            codes = test_codes(resp.json())
        except TransientError:
            if self._processes is not None and not force:
                return  # offline: the cached list will do (but it cannot prove a code unknown: that waits)
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TransientError(f"WATS sent an unreadable process list: {e}") from None
        if not codes:
            raise TransientError("WATS lists no test operations (GET /api/App/Processes); holding reports")
        self._processes = codes
        self._processes_at = time.monotonic()
        tmp = self.processes_cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"test_codes": sorted(codes), "fetched_at": datetime.now(timezone.utc).isoformat()}))
        os.replace(tmp, self.processes_cache)

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
        p = event.payload
        if t in REPORT_TYPES:
            self._send_report(event)
        elif t in LATEST_WINS and self.replaying is not None and self._stale(event, self.replaying):
            return  # an older value than WATS already has (a dead letter replayed late): sending it would undo
        elif t == EventType.ASSET_COUNTERS.value:
            stale = _stale_counters(event)
            if stale:  # kept where it can be seen (dlq list, status), never sent over the newer values
                raise PermanentError(f"counters for {p['asset_id']} not sent: {stale}")
            if self.cfg.counters_api == "absolute":
                self._check_total(event)
                self._set_counters(p["asset_id"], p["running_count"], p["total_count"])
            else:
                self.ledger.apply(p["asset_id"], p["running_count"], p["total_count"])
        elif t == EventType.ASSET_STATE_CHANGED.value:
            self._request("PUT", "/api/Asset/State",
                          params={"serialNumber": p["asset_id"], "state": ASSET_STATE.get(p["new_state"], 0)})
        elif t == EventType.ASSET_FAULT.value:
            state = "cleared" if p.get("cleared") else p.get("severity", "error")
            asset_id = self._asset_id(p["asset_id"])
            self._log_once(event, p["asset_id"], "/api/Asset/Message", lambda tag: {"json": {
                "assetId": asset_id, "user": self.cfg.operator,
                "comment": f"Fault {p['fault_code']} ({state}): {p['fault_message']} {tag}"}})
        elif t in (EventType.ASSET_MAINTENANCE.value, EventType.ASSET_CALIBRATION.value):
            path = "/api/Asset/Maintenance" if t == EventType.ASSET_MAINTENANCE.value else "/api/Asset/Calibration"
            by = f" by {p['performed_by']}" if p.get("performed_by") else ""
            self._log_once(event, p["asset_id"], path, lambda tag: {"params": {
                "serialNumber": p["asset_id"], "dateTime": p["timestamp"],
                "comment": f"{p['maintenance_type']}: {p['description']}{by} {tag}"}})
        elif t == EventType.MATERIAL_INSTALLED.value:
            self._add_children(event)
        else:
            return  # the subscriber's type filter keeps other types away; nothing to send
        if t in LATEST_WINS:
            latest = {"id": event.id, "dead_letters_max": self._last_dead_letter_id()}
            if t == EventType.ASSET_COUNTERS.value:
                latest["total"] = p["total_count"]  # what the next absolute total is compared with
            self.state_put(f"wats:latest:{t}:{p['asset_id']}", latest)

    def _stale(self, event: Event, dead_letter_id: int) -> bool:
        """For a replayed dead letter: was a value for this asset sent after it was dead-lettered? A subscriber
        goes through the journal in order, so anything sent after the dead letter was written came later in the
        journal: it is newer, whatever the clocks said (a Pi restarted with its clock behind stamps newer values
        with older times). Recorded as the highest dead-letter id at the moment of sending."""
        last = self.state_get(f"wats:latest:{event.event_type}:{event.payload['asset_id']}")
        if isinstance(last, dict) and isinstance(last.get("dead_letters_max"), int):
            return last["dead_letters_max"] >= dead_letter_id
        last_id = last.get("id") if isinstance(last, dict) else last
        return isinstance(last_id, str) and event.id < last_id  # recorded by an earlier version: the id's time

    def _last_dead_letter_id(self) -> int:
        return self._journal.last_dead_letter_id() if self._journal is not None else 0

    # counters ------------------------------------------------------------------------------------------------
    def _check_total(self, event: Event) -> None:
        """A total is a lifetime count: one lower than the last sent (a replaced or wiped counter, a device
        reporting another asset's id) is sent, as the newest value, but never silently: a warning and
        ``fixture_agent_flagged_total{kind="total_went_down"}``. (Increment mode has its own answer: the ledger
        counts the new counter from zero.)"""
        p = event.payload
        last = self.state_get(f"wats:latest:{EventType.ASSET_COUNTERS.value}:{p['asset_id']}")
        before = last.get("total") if isinstance(last, dict) else None
        if isinstance(before, int) and p["total_count"] < before:
            log.warning("WATS: asset %s: total count goes down from %d to %d (event %s; counter replaced or "
                        "wiped?); setting it as the newest value", p["asset_id"], before, p["total_count"], event.id)
            if self.metrics is not None:
                self.metrics.record_flagged(self.name, "total_went_down")

    def _set_counters(self, asset: str, running: int, total: int) -> None:
        """WATS >= 25.3: absolute setters, so a resend sets the same value again (idempotent)."""
        self._request("PUT", "/api/Asset/SetTotalCount", params={"serialNumber": asset, "totalCount": total})
        self._request("PUT", "/api/Asset/SetRunningCount", params={"serialNumber": asset, "runningCount": running})

    def asset_record(self, serial: str) -> dict[str, Any]:
        """``GET /api/Asset/{serial}``, uncached (WATS' own GET cache serves stale counts, reference §6.6)."""
        try:
            resp = self._request("GET", f"/api/Asset/{quote(serial, safe='')}", headers={"Cache-Control": "no-cache"})
            doc = resp.json()
        except PermanentError as e:
            raise PermanentError(f"asset {serial!r} is not known to WATS (register it there first): {e}") from None
        except ValueError as e:
            raise TransientError(f"WATS sent an unreadable asset record for {serial!r}: {e}") from None
        if not isinstance(doc, dict):
            raise TransientError(f"WATS sent an unreadable asset record for {serial!r}")
        return doc

    # asset log entries (messages, maintenance, calibration) ----------------------------------------------------
    def _asset_id(self, serial: str) -> str:
        """``POST /api/Asset/Message`` takes the asset id, not the serial (reference §4.3): resolve once."""
        cached = self._asset_ids.get(serial)
        if cached is None:
            cached = str(self.asset_record(serial).get("assetId") or "")
            if not cached:
                raise PermanentError(f"WATS has no assetId for asset {serial!r}")
            self._asset_ids[serial] = cached
        return cached

    def _log_once(self, event: Event, serial: str, path: str, request: Callable[[str], dict[str, Any]]) -> None:
        """These POSTs create log entries, so a blind resend duplicates one. Each comment carries the event id and
        the attempt is recorded (durably) before it is made; an attempt in doubt is checked in the asset log for
        that tag before sending again (see ``check_due``)."""
        tag = f"[event {event.id}]"
        attempt = self.state_get(INFLIGHT_KEY)
        if isinstance(attempt, dict) and attempt.get("event") == event.id:
            if self.check_due(attempt, f"log entry for event {event.id}") and self._logged(serial, tag):
                return
        self.attempt(lambda record: self.state_put(INFLIGHT_KEY, record), {"event": event.id},
                     lambda: self._request("POST", path, **request(tag)))

    # requests that are not idempotent ---------------------------------------------------------------------------
    def attempt(self, record: Callable[[dict[str, Any]], None], what: dict[str, Any], send: Callable[[], Any]) -> Any:
        """Send a request that must not be repeated blindly: ``what`` is recorded (durably, with the time) before
        it is sent, and marked ``not_sent`` when it certainly did not arrive (so it may simply be sent again)."""
        record({**what, **_now_stamp()})
        try:
            return send()
        except NotDelivered:
            record({**what, **_now_stamp(), "not_sent": True})
            raise

    def check_due(self, attempt: dict[str, Any], what: str) -> bool:
        """For an ``attempt`` recorded earlier: False if it certainly never arrived (send again); True if it may
        have, and ``in_doubt_grace`` has passed, so its effect on WATS can be checked now; otherwise a transient
        wait, because a slow WATS may still be applying it after the client gave up."""
        if attempt.get("not_sent"):
            return False
        wait = self.in_doubt_grace - _seconds_since(attempt)
        if wait > 0:
            raise TransientError(f"{what} in doubt; checking WATS in {wait:.0f} s", wait)
        return True

    @property
    def in_doubt_grace(self) -> float:
        """How long after an ambiguous attempt WATS is given before its effect is checked (then resent): never
        less than the request timeout, so a request still being processed has finished."""
        return max(float(self.cfg.in_doubt_grace), float(self.cfg.timeout))

    def state_get(self, key: str) -> Any:
        """Small state that must survive a crash with the events: the journal's state table (memory without one)."""
        return self._journal.get_state(key) if self._journal is not None else self._memory_state.get(key)

    def state_put(self, key: str, value: Any) -> None:
        if self._journal is not None:
            self._journal.set_state(key, value)  # committed (fsynced) before we go on
        else:
            self._memory_state[key] = value

    def _logged(self, serial: str, tag: str) -> bool:
        asset_id = self._asset_id(serial)
        resp = self._request("GET", "/api/Asset/Log", headers={"Cache-Control": "no-cache"}, params={
            "$filter": f"assetId eq '{asset_id}'", "$orderby": "date desc", "$top": "100"})
        try:
            entries = resp.json()
        except ValueError:
            entries = None
        if isinstance(entries, dict):
            entries = entries.get("value")
        if not isinstance(entries, list):
            raise TransientError("WATS sent an unreadable asset log; cannot tell whether the entry was made")
        return any(tag in str(e.get("comment", "")) for e in entries if isinstance(e, dict))

    # production ---------------------------------------------------------------------------------------------------
    def _add_children(self, event: Event) -> None:
        """``material.installed`` with serialized components → ``AddChildUnit`` per component (a relation: setting
        it again is harmless). Components without a serial (reels, lots) are not units and are not sent."""
        p = event.payload
        children = [c for c in p.get("components", []) if c.get("serial_number")]
        if not children:
            return
        self._remember_components(p["unit_id"], children)
        parent_pn = (p.get("custom_data") or {}).get("part_number")
        if not parent_pn:
            raise PermanentError(f"material.installed for unit {p['unit_id']!r} has no custom_data.part_number; "
                                 "WATS' AddChildUnit needs the parent's part number")
        for c in children:  # all checked before any is sent
            if not c.get("part_number"):
                raise PermanentError(f"component {c['reference_designator']} ({c['serial_number']}) has no "
                                     "part_number; WATS' AddChildUnit needs it")
        for c in children:
            self._request("POST", "/api/Production/AddChildUnit", params={
                "parentSerialNumber": p["unit_id"], "parentPartNumber": parent_pn,
                "childSerialNumber": c["serial_number"], "childPartNumber": c["part_number"]})

    def _remember_components(self, unit: str, components: list[dict[str, Any]]) -> None:
        """Keep a unit's serialized components so its next report lists them as ``subUnits`` (WATS shows what was
        built into the unit beside its test). Bounded: the last ``COMPONENTS_KEPT`` units."""
        known = self.state_get(COMPONENTS_KEY) or {}
        known.pop(unit, None)
        known[unit] = [{"part_number": c.get("part_number"), "serial_number": c["serial_number"],
                        "part_type": c.get("reference_designator")} for c in components if c.get("part_number")]
        while len(known) > COMPONENTS_KEPT:
            known.pop(next(iter(known)))
        self.state_put(COMPONENTS_KEY, known)

    def _with_components(self, event: Event) -> Event:
        """The result with the components a ``material.installed`` recorded for its unit among its sub units."""
        if event.event_type != EventType.TEST_RESULT.value:
            return event
        known = (self.state_get(COMPONENTS_KEY) or {}).get(event.payload.get("unit_id"))
        if not known:
            return event
        have = {(u.get("part_number"), u.get("serial_number")) for u in event.payload.get("sub_units", [])}
        extra = [{k: v for k, v in c.items() if v is not None} for c in known
                 if (c["part_number"], c["serial_number"]) not in have]
        if not extra:
            return event
        payload = {**event.payload, "sub_units": [*event.payload.get("sub_units", []), *extra]}
        return msgspec.structs.replace(event, payload=payload)

    # reports ------------------------------------------------------------------------------------------------------
    def _send_report(self, event: Event) -> None:
        if self.cfg.require_clock_sync and not self.clock_check():
            raise ClockNotSynchronized("the clock is not synchronized (no NTP yet); holding reports so WATS does "
                                       "not quarantine them as future-dated")
        event, note = correct_timestamps(self._with_components(event))
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
        self._refresh_processes()
        if self._processes is not None and report["processCode"] not in self._processes:
            if self._processes_at is None or time.monotonic() - self._processes_at > 60.0:
                self._refresh_processes(force=True)  # ask WATS once more before calling the code unknown
        if self._processes is not None and report["processCode"] not in self._processes:
            raise PermanentError(f"processCode {report['processCode']} (test type {test_type_of(event)!r}) is not a "
                                 f"test operation on this WATS server; known: {sorted(self._processes)}")
        self._request("POST", "/api/Report/WSJF", content=msgspec.json.encode(report), headers=JSON)

    def close(self) -> None:
        self.client.close()


def test_codes(doc: Any) -> set[int]:
    """The test operation codes in a ``GET /api/App/Processes`` answer (a list, or an OData-style ``value``
    wrapper); raises ValueError, KeyError, TypeError or AttributeError on a shape it cannot read. Shared with
    ``fixture-agent doctor``."""
    if isinstance(doc, dict):
        doc = doc.get("value", doc)
    return {int(p["code"]) for p in doc if p.get("isTestOperation")}


def waiting_for_part_number(conn: "sqlite3.Connection") -> list[tuple[int, Event | None]]:
    """The uplink's dead letters that wait for a part-number rule: (dead-letter id, the event)."""
    out = []
    rows = conn.execute("SELECT id, body FROM dead_letters WHERE subscriber = 'wats' AND (instr(reason, ?) > 0 "
                        "OR instr(reason, ?) > 0) ORDER BY id", (NO_PART_NUMBER.strip(), LEGACY_NO_PART_NUMBER))
    for dl_id, body in rows:
        try:
            out.append((dl_id, decode(body)))
        except Exception:  # noqa: BLE001 - an undecodable row is shown by dlq list; not ours to judge here
            out.append((dl_id, None))
    return out


def waiting_recipes(conn: "sqlite3.Connection") -> dict[str, int]:
    """For ``status``: how many results wait for a part-number rule, per recipe (``"(none)"`` without one)."""
    counts: dict[str, int] = {}
    for _, event in waiting_for_part_number(conn):
        recipe = recipe_of(event.payload)[0] if event is not None else None
        counts[recipe or "(none)"] = counts.get(recipe or "(none)", 0) + 1
    return counts


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


def _stale_counters(event: Event) -> str | None:
    """Why a counters event is stale (the MQTT source marks one older by the device's own time than a value it
    journaled before), None if it is not."""
    reason = event.metadata.custom.get("stale")
    return reason if isinstance(reason, str) and reason else None


def _checked_token(token: str, where: str) -> str | None:
    """A token with whitespace or control characters inside (``base64`` wraps at 76 columns) would be refused by
    httpx with the header, token included, in the error text; refuse it here without quoting it."""
    if not token:
        return None
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token):
        raise ConfigError(f"sinks.wats token in {where} contains whitespace or control characters "
                          "(a wrapped base64 line?); write it on one line")
    return token


def _server_text(resp) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(doc, dict):
        for key in ("message", "Message", "error", "detail"):
            if doc.get(key):
                return str(doc[key])[:300]
    return json.dumps(doc)[:300]


def build(section: WatsSinkSection, ctx) -> WatsSink:
    """The plugin's build (``wats_plugin.PLUGIN``)."""
    agent = ctx.config.agent
    return WatsSink(section, station=agent.station, location=agent.location, purpose=agent.purpose,
                    data_dir=ctx.data_dir, journal=ctx.journal)


def status(config, section: WatsSinkSection, conn) -> dict:
    """What ``status --json`` says of the uplink beyond its subscriber row (the plugin's status hook)."""
    return {"sends": list(SENT_TYPES), "not_sent": [t.value for t in EventType if t.value not in SENT_TYPES],
            "waiting_for_part_number": waiting_recipes(conn)}


def status_lines(doc: dict) -> list[str]:
    """The words ``status`` prints under the uplink's subscriber row; a line starting "!!" needs someone to act."""
    lines = [f"sends: {', '.join(doc['sends'])}", f"not sent to WATS: {', '.join(doc['not_sent'])}"]
    waiting = doc["waiting_for_part_number"]
    if waiting:
        lines.append(f"!! {sum(waiting.values())} result(s) wait for a part-number rule ([[sinks.wats.products]]; "
                     "they are sent at the next start once one matches): "
                     + ", ".join(f"recipe {r} ({n})" for r, n in sorted(waiting.items())))
    return lines
