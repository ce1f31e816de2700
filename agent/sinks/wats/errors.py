"""What the uplink's failures mean beyond the bus' three kinds (``events.policies``): each one a
``TransientError`` whose ``state`` is what ``status`` shows while the subscriber waits."""

from __future__ import annotations

from ...events.policies import TransientError


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
