"""The WATS uplink: a durable subscriber that forwards results and asset data over REST (httpx).

Delivery is the bus's: events arrive in journal order, at least once, and are acknowledged only when WATS
answered 2xx. What this module decides is what each answer means (``reference/wats-api.md`` §6 and §10):

* 2xx: done.
* 400 and other 4xx: permanent. The event goes to the dead-letter table with the server's text and the queue
  moves on: retrying can never fix a report WATS refuses.
* 401/403: WATS rejects the token. Nothing is dropped: the subscriber keeps retrying (slowly), re-reading the
  token file each time, so fixing the file resumes delivery without a restart; ``status`` says why it waits.
* 408, 429, 5xx, connection errors, timeouts: transient. Exponential backoff with jitter and no attempt limit;
  ``Retry-After`` (seconds or HTTP date) is honoured.

Reports are idempotent because the report id is the event id (a resend overwrites). Counters are sent as
absolute values (``SetRunningCount``/``SetTotalCount``), so a resend sets the same value again. Other event
types are not WATS's business and are acknowledged without a request.

Before sending a report: its ``processCode`` must be a test operation on the server (the list is fetched from
``GET /api/App/Processes``, cached on disk for offline starts, refreshed when online), and the clock must be
synchronized (a Pi has no RTC; WATS quarantines future-dated reports), otherwise reports are held.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import stat
import threading
import time
from collections import deque
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..config import ConfigError, WatsSinkSection
from ..events.handlers import BaseHandler
from ..events.model import Event, EventType
from ..events.policies import CircuitBreaker, PermanentError, RetryPolicy, TransientError
from ..protocols.wsjf import MappingError, Station, test_type_of, to_wsjf

log = logging.getLogger(__name__)

REPORT_TYPES = (EventType.TEST_RESULT.value, EventType.INSPECTION_RESULT.value)
#: WATS asset states (§4.1) for our AssetState values.
ASSET_STATE = {"online": 1, "idle": 1, "busy": 1, "offline": 5, "error": 3, "maintenance": 3}


class AuthRejected(TransientError):
    """401/403: not the event's fault, and not something a resend of it can fix; we wait for a good token."""


def clock_synchronized() -> bool:
    """The kernel's view (adjtimex): NTP clients (systemd-timesyncd, chrony) clear STA_UNSYNC once synced."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, generously sized; modes = 0 reads only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return True  # not Linux: assume the OS keeps time
    return state != 5  # TIME_ERROR: clock not synchronized


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
            if stop is not None and stop.wait(pause):
                return
            if stop is None:
                time.sleep(pause)


class WatsSink(BaseHandler):
    """Register on the bus as the durable subscriber ``wats``."""

    def __init__(self, cfg: WatsSinkSection, *, station: str, location: str, purpose: str, data_dir: Path,
                 clock_check: Callable[[], bool] = clock_synchronized) -> None:
        import httpx  # optional part: only imported when the WATS sink is configured

        self._name = "wats"
        self.cfg = cfg
        self.station = Station(
            machine_name=station, location=location, purpose=purpose, process_codes=dict(cfg.process_codes),
            default_process_code=cfg.default_process_code, default_part_number=cfg.default_part_number,
            default_revision=cfg.default_revision, operator=cfg.operator, agent_version=__version__,
        )
        self.retry_policy = RetryPolicy(max_retries=None, initial_delay=min(1.0, cfg.retry_max),
                                        max_delay=cfg.retry_max)
        self.circuit_breaker = CircuitBreaker(failure_threshold=5, reset_timeout=min(30.0, cfg.retry_max))
        self.budget = RateBudget(cfg.requests_per_minute)
        self.clock_check = clock_check
        self.processes_cache = data_dir / "wats-processes.json"
        self._processes: set[int] | None = None
        self._processes_at = 0.0
        self._token = self._read_token()
        self.client = httpx.Client(base_url=cfg.url.rstrip("/").removesuffix("/api"), timeout=cfg.timeout,
                                   verify=cfg.verify_tls, headers={"Accept": "application/json"})
        self._httpx = httpx
        self.sent = 0
        self._load_cached_processes()

    # --------------------------------------------------------------------------------------------- token
    def _read_token(self) -> str | None:
        if self.cfg.token_file:
            path = Path(self.cfg.token_file)
            try:
                st = path.stat()
            except FileNotFoundError:
                return None
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise ConfigError(f"sinks.wats.token_file {path}: must not be readable by group or others "
                                  f"(chmod 600 {path})")
            return path.read_text().strip() or None
        return os.environ.get(self.cfg.token_env) or None

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            self._token = self._read_token()
        if self._token is None:
            where = self.cfg.token_file or f"${self.cfg.token_env}"
            raise AuthRejected(f"no WATS token ({where} is missing or empty); holding events")
        return {"Authorization": f"Basic {self._token}"}

    # --------------------------------------------------------------------------------------------- requests
    def _request(self, method: str, path: str, **kw: Any):
        self.budget.wait()
        try:
            resp = self.client.request(method, path, headers=self._headers(), **kw)
        except self._httpx.TimeoutException as e:
            raise TransientError(f"WATS timed out: {type(e).__name__}") from None
        except self._httpx.TransportError as e:
            raise TransientError(f"WATS unreachable: {type(e).__name__}: {e}") from None
        code = resp.status_code
        if 200 <= code < 300:
            return resp
        text = _server_text(resp)
        if code in (401, 403):
            self._token = None  # re-read the token file next time: fixing it resumes delivery
            raise AuthRejected(f"WATS rejects the token ({code}): {text}")
        if code in (408, 429) or code >= 500:
            raise TransientError(f"WATS answered {code}: {text}", retry_after_seconds(resp.headers.get("Retry-After")))
        raise PermanentError(f"WATS refused it ({code}): {text}")

    # --------------------------------------------------------------------------------------------- processes
    def _load_cached_processes(self) -> None:
        try:
            doc = json.loads(self.processes_cache.read_text())
            self._processes = set(doc["test_codes"])
        except (OSError, ValueError, KeyError, TypeError):
            self._processes = None

    def _refresh_processes(self) -> None:
        if self._processes is not None and time.monotonic() - self._processes_at < self.cfg.processes_refresh:
            return
        try:
            resp = self._request("GET", "/api/App/Processes")
            codes = {int(p["code"]) for p in resp.json() if p.get("isTestOperation")}
        except TransientError:
            if self._processes is not None:
                return  # offline: the cached list will do
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise TransientError(f"WATS sent an unreadable process list: {e}") from None
        self._processes = codes
        self._processes_at = time.monotonic()
        tmp = self.processes_cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"test_codes": sorted(codes), "fetched_at": datetime.now(timezone.utc).isoformat()}))
        os.replace(tmp, self.processes_cache)

    # --------------------------------------------------------------------------------------------- handler
    def handle(self, event: Event) -> None:
        t = event.event_type
        if t in REPORT_TYPES:
            self._send_report(event)
        elif t == EventType.ASSET_COUNTERS.value:
            p = event.payload
            for path, key in (("/api/Asset/SetTotalCount", "total_count"), ("/api/Asset/SetRunningCount", "running_count")):
                param = "totalCount" if key == "total_count" else "runningCount"
                self._request("PUT", path, params={"serialNumber": p["asset_id"], param: p[key]})
        elif t == EventType.ASSET_STATE_CHANGED.value:
            p = event.payload
            self._request("PUT", "/api/Asset/State",
                          params={"serialNumber": p["asset_id"], "state": ASSET_STATE.get(p["new_state"], 0)})
        else:
            return  # not WATS's business (telemetry, system events …): acknowledged without a request
        self.sent += 1

    def _send_report(self, event: Event) -> None:
        if self.cfg.require_clock_sync and not self.clock_check():
            raise TransientError("the clock is not synchronized (no NTP yet); holding reports so WATS does not "
                                 "quarantine them as future-dated")
        try:
            report = to_wsjf(event, self.station)
        except MappingError as e:
            raise PermanentError(f"cannot build a WSJF report: {e}") from None
        self._refresh_processes()
        if self._processes is not None and report["processCode"] not in self._processes:
            raise PermanentError(f"processCode {report['processCode']} (test type {test_type_of(event)!r}) is not a "
                                 f"test operation on this WATS server; known: {sorted(self._processes)}")
        self._request("POST", "/api/Report/WSJF", json=report)

    def close(self) -> None:
        self.client.close()


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
