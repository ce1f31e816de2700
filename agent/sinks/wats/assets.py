"""WATS assets: the asset record (read uncached), its id, and log entries sent once.

Faults, maintenance and calibration become entries in the asset's log (``POST /api/Asset/Message``,
``/Maintenance``, ``/Calibration``). Those POSTs create an entry each time, so a blind resend duplicates one: each
comment carries the event id, the attempt is recorded before it is made (``attempts.InFlight``), and an attempt in
doubt is looked for in the asset log before it is sent again.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import quote

from ...events.model import Event
from ...events.policies import PermanentError, TransientError
from .attempts import InFlight, StateStore
from .client import WatsClient

INFLIGHT_KEY = "wats:log-entry-in-flight"


def asset_record(client: WatsClient, serial: str) -> dict[str, Any]:
    """``GET /api/Asset/{serial}``, uncached (WATS' own GET cache serves stale counts, reference §6.6)."""
    try:
        resp = client.request("GET", f"/api/Asset/{quote(serial, safe='')}", headers={"Cache-Control": "no-cache"})
        doc = resp.json()
    except PermanentError as e:
        raise PermanentError(f"asset {serial!r} is not known to WATS (register it there first): {e}") from None
    except ValueError as e:
        raise TransientError(f"WATS sent an unreadable asset record for {serial!r}: {e}") from None
    if not isinstance(doc, dict):
        raise TransientError(f"WATS sent an unreadable asset record for {serial!r}")
    return doc


class AssetLog:
    """Log entries for assets, each sent once (see the module docstring)."""

    def __init__(self, client: WatsClient, state: StateStore, inflight: InFlight) -> None:
        self.client = client
        self.state = state
        self.inflight = inflight
        self._asset_ids: dict[str, str] = {}

    def asset_id(self, serial: str) -> str:
        """``POST /api/Asset/Message`` takes the asset id, not the serial (reference §4.3): resolve once."""
        cached = self._asset_ids.get(serial)
        if cached is None:
            cached = str(asset_record(self.client, serial).get("assetId") or "")
            if not cached:
                raise PermanentError(f"WATS has no assetId for asset {serial!r}")
            self._asset_ids[serial] = cached
        return cached

    def log_once(self, event: Event, serial: str, path: str, request: Callable[[str], dict[str, Any]]) -> None:
        """POST ``path`` with ``request(tag)`` (the tag goes into the comment) unless an earlier attempt for this
        event is found in the asset log."""
        tag = f"[event {event.id}]"
        attempt = self.state.get(INFLIGHT_KEY)
        if isinstance(attempt, dict) and attempt.get("event") == event.id:
            if self.inflight.check_due(attempt, f"log entry for event {event.id}") and self._logged(serial, tag):
                return
        self.inflight.attempt(lambda record: self.state.put(INFLIGHT_KEY, record), {"event": event.id},
                              lambda: self.client.request("POST", path, **request(tag)))

    def _logged(self, serial: str, tag: str) -> bool:
        asset_id = self.asset_id(serial)
        resp = self.client.request("GET", "/api/Asset/Log", headers={"Cache-Control": "no-cache"}, params={
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
