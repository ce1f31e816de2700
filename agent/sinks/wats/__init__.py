"""The WATS uplink: a durable subscriber that forwards results and asset data over REST (httpx).

Delivery is the bus's: events arrive in journal order, at least once, and are acknowledged only when WATS
answered 2xx. What each answer means (permanent, transient, in doubt, a token to wait for) is the client's
(``client.py``, ``reference/wats-api.md`` §6 and §10).

At least once must never become "twice" on the server. Reports are idempotent because the report id is the event
id (a resend overwrites). Counters are absolute (``SetRunningCount``/``SetTotalCount``), or, for servers older
than 25.3, increments from a ledger that verifies an in-doubt increment instead of resending it (``ledger.py``).
Asset log entries (faults, maintenance, calibration) carry the event id and the log is searched before an
in-doubt resend (``assets.py``, ``attempts.py``). The full mapping is in ``docs/wats-uplink.md``.

The modules, each importing only those before it:

* ``errors``: the uplink's own failure kinds; ``routes``: what it sends and the WATS call each type becomes.
* ``client``: httpx, the token, the rate budget, answers → errors.
* ``attempts``: the state store and the in-flight record of requests that must not be repeated blindly.
* ``assets``: the asset record and log entries sent once; ``ledger``: increments for old servers.
* ``status``: dead letters waiting for a part-number rule, and what ``status`` says;
  ``reports``: WSJF reports, the process list, the clock (``protocols.clock`` corrects the times).
* ``sink``: ``WatsSink``, a dispatch table from event type to WATS call, and the plugin's ``build``.
"""

from .client import RateBudget, WatsClient, retry_after_seconds
from .errors import AuthRejected, ClockNotSynchronized, Redirected, Stopping
from .reports import station_for, test_codes
from .routes import LATEST_WINS, REPORT_TYPES, ROUTES, SENT_TYPES
from .sink import ASSET_STATE, WatsSink, build
from .status import (
    LEGACY_NO_PART_NUMBER, NO_PART_NUMBER, status, status_lines, waiting_for_part_number, waiting_recipes,
)

__all__ = [
    "ASSET_STATE", "AuthRejected", "ClockNotSynchronized", "LATEST_WINS", "LEGACY_NO_PART_NUMBER", "NO_PART_NUMBER",
    "REPORT_TYPES", "ROUTES", "RateBudget", "Redirected", "SENT_TYPES", "Stopping", "WatsClient", "WatsSink",
    "build", "retry_after_seconds", "station_for", "status", "status_lines", "test_codes",
    "waiting_for_part_number", "waiting_recipes",
]
