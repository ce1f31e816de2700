"""Counters for WATS servers older than 25.3, which only have ``PUT /api/Asset/Count?incrementBy=``.

An increment is not idempotent: resending one after a timeout double-counts (reference §4.5, §6.3). So the
agent never resends one blindly. Per asset, the journal's state table keeps a ledger:

* ``sent_total`` / ``sent_running``: the local counts WATS is known to have (every increment up to here was
  acknowledged), and ``server_total``: WATS' ``totalCount`` at that point.
* ``pending``: the one increment in flight, written durably *before* the request goes out.

When an event is handled and a ``pending`` entry exists, an earlier attempt may or may not have reached WATS (an
ambiguous failure, or a crash before the answer was recorded). The ledger then reads the asset (uncached) and
compares ``totalCount`` with what the increment would have made it: reached, it is recorded as acknowledged; not
reached, it is sent again. One increment per ledger entry, acknowledged or verified — never replayed on a guess.

Running-count resets: our counters move running and total together, so ``total - running`` is the total at the
last reset. When that point moved since the last acknowledged value, a reset happened in between (even if
coalescing skipped the reset event itself): the ledger increments up to the reset point, calls
``ResetRunningCount``, then increments the rest, so WATS ends with exactly our running and total counts. This
assumes this agent is the only one counting the asset in WATS (reference §4.5: use one mechanism only).
"""

from __future__ import annotations

import logging
from typing import Any

from ...events.policies import PermanentError
from .assets import asset_record
from .attempts import InFlight, StateStore
from .client import WatsClient

log = logging.getLogger(__name__)


def ledger_key(asset: str) -> str:
    return f"wats:count-ledger:{asset}"


class IncrementLedger:
    """The ledgers of every asset, kept in ``state``; requests through ``client``, each increment an attempt of
    ``inflight``'s."""

    def __init__(self, client: WatsClient, state: StateStore, inflight: InFlight) -> None:
        self.client = client
        self.state = state
        self.inflight = inflight
        self.verified = 0  # in-doubt increments resolved by reading the asset back

    def _get(self, asset: str) -> dict[str, Any] | None:
        return self.state.get(ledger_key(asset))

    def _put(self, asset: str, ledger: dict[str, Any]) -> None:
        self.state.put(ledger_key(asset), ledger)

    def _server_counts(self, asset: str) -> tuple[int, int]:
        doc = asset_record(self.client, asset)
        try:
            return int(doc.get("totalCount") or 0), int(doc.get("runningCount") or 0)
        except (TypeError, ValueError):
            raise PermanentError(f"WATS reports unreadable counts for asset {asset!r}: {doc!r}") from None

    # the work ------------------------------------------------------------------------------------------------------
    def apply(self, asset: str, running: int, total: int) -> None:
        """Bring WATS to (running, total) with increments; safe to call again with the same or newer values."""
        ledger = self._get(asset)
        if ledger is None:
            # First use: the local counter's history starts at 0; WATS' current total is the base we add to.
            server_total, _ = self._server_counts(asset)
            ledger = {"sent_total": 0, "sent_running": 0, "server_total": server_total, "pending": None}
            self._put(asset, ledger)
        if ledger["pending"] is not None:
            ledger = self._settle(asset, ledger)
        if total < ledger["sent_total"]:
            # The fixture's total went down: its counter was replaced or wiped. WATS keeps what it counted; the
            # new counter's counts are added from zero (a total never goes down on WATS).
            log.warning("asset %s: total count went down from %d to %d (counter replaced?); counting from zero",
                        asset, ledger["sent_total"], total)
            ledger = {**ledger, "sent_total": 0, "sent_running": 0}
            self._put(asset, ledger)
        while True:
            step = self._next_step(ledger, running, total)
            if step is None:
                return
            kind, n = step
            if kind == "reset":
                # Setting the running count to 0 twice (a crash before the ledger is saved) only adds a log line.
                self.client.request("POST", "/api/Asset/ResetRunningCount",
                                    params={"serialNumber": asset, "comment": "running count reset on the fixture"})
                ledger = {**ledger, "sent_running": 0}
                self._put(asset, ledger)
                continue
            pending, before = {"by": n, "expect_total": ledger["server_total"] + n}, ledger
            self.inflight.attempt(lambda record: self._put(asset, {**before, "pending": record}), pending,
                                  lambda: self.client.request("PUT", "/api/Asset/Count",
                                                              params={"serialNumber": asset, "incrementBy": n}))
            ledger = self._acknowledged({**before, "pending": pending})
            self._put(asset, ledger)

    @staticmethod
    def _next_step(ledger: dict[str, Any], running: int, total: int) -> tuple[str, int] | None:
        sent_total, sent_running = ledger["sent_total"], ledger["sent_running"]
        if total <= sent_total and running >= sent_running:
            return None  # an old or repeated event: WATS already has this (or newer)
        reset_point = total - running
        if reset_point > sent_total - sent_running:  # a reset happened after what WATS has
            if reset_point > sent_total:
                return ("inc", reset_point - sent_total)  # first the counts before the reset
            if sent_running > 0:
                return ("reset", 0)
        if total > sent_total:
            return ("inc", total - sent_total)
        return None

    @staticmethod
    def _acknowledged(ledger: dict[str, Any]) -> dict[str, Any]:
        n = ledger["pending"]["by"]
        return {"sent_total": ledger["sent_total"] + n, "sent_running": ledger["sent_running"] + n,
                "server_total": ledger["pending"]["expect_total"], "pending": None}

    def _settle(self, asset: str, ledger: dict[str, Any]) -> dict[str, Any]:
        """An increment may be in flight: forget it if it certainly never arrived; otherwise (once the
        grace has passed) read WATS' total to learn whether it landed, instead of guessing."""
        pending = ledger["pending"]
        if self.inflight.check_due(pending, f"asset {asset}: increment of {pending['by']}"):
            server_total, _ = self._server_counts(asset)
            self.verified += 1
            if server_total >= pending["expect_total"]:
                ledger = self._acknowledged(ledger)
            else:
                ledger = {**ledger, "pending": None, "server_total": server_total}
        else:
            ledger = {**ledger, "pending": None}
        self._put(asset, ledger)
        return ledger
