"""The WATS REST client: one keep-alive httpx connection, the token, the rate budget, and what each answer means.

Everything the uplink and ``fixture-agent doctor`` send goes through ``WatsClient.request``, which turns WATS'
answers into the bus' failure kinds (``reference/wats-api.md`` §6 and §10):

* 2xx: the response.
* 400 and other 4xx: ``PermanentError`` (retrying can never fix a request WATS refuses).
* 401/403: ``AuthRejected``; the token is read again before the next request, so fixing the file resumes delivery.
* 3xx: ``Redirected`` (the configured url is wrong).
* 429, 503, connection refused: ``NotDelivered`` (certainly not processed: a resend is safe).
* 408, 5xx, timeouts, a connection lost mid-request: ``TransientError`` (in doubt). ``Retry-After`` is honoured.

The token never appears in an error: it is redacted from every text this module raises.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable

from ... import secrets
from ...config_base import ConfigError
from ...events.policies import NotDelivered, PermanentError, TransientError
from ..wats_plugin import WatsSinkSection
from .errors import AuthRejected, Redirected, Stopping

log = logging.getLogger("agent.sinks.wats")


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


class WatsClient:
    """``[sinks.wats]``'s connection to WATS. ``rate_limited=False`` (the doctor's one request per check) skips
    the budget, which is the uplink's."""

    def __init__(self, cfg: WatsSinkSection, *, rate_limited: bool = True) -> None:
        # httpx imports its command-line client (click, pygments, rich) whenever those happen to be installed;
        # the agent never uses it, and on a Pi that is about 2 MB of RSS for nothing.
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
        import httpx  # optional part: only imported when the WATS sink is configured

        from ...transport_warnings import log_warnings, wats_warnings

        log_warnings(wats_warnings(cfg), log)  # plain http:// or an unchecked certificate: said at start, loudly
        self.cfg = cfg
        self.budget = RateBudget(cfg.requests_per_minute) if rate_limited else None
        self._stopping = threading.Event()
        self._token = self._read_token()
        self._http = httpx.Client(base_url=cfg.url.rstrip("/").removesuffix("/api"), timeout=cfg.timeout,
                                  verify=cfg.verify_tls, headers={"Accept": "application/json"})
        if self._token is not None:
            self._http.headers["Authorization"] = f"Basic {self._token}"
        self._httpx = httpx

    # --------------------------------------------------------------------------------------------- token
    @property
    def token(self) -> str | None:
        """The token in use (None: none read yet, or WATS refused the last one). For redacting, never for logs."""
        return self._token

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
                self._http.headers.pop("Authorization", None)
                where = self.token_path() or f"${self.cfg.token_env}"
                raise AuthRejected(f"no WATS token ({where} is missing or empty); holding events")
            self._http.headers["Authorization"] = f"Basic {self._token}"

    # --------------------------------------------------------------------------------------------- requests
    def interrupt(self) -> None:
        """The agent stops: a wait for the rate budget ends at once."""
        self._stopping.set()

    def resume(self) -> None:
        self._stopping.clear()

    def request(self, method: str, path: str, **kw: Any):
        """One request, within the rate budget, with the token; the response if WATS answered 2xx, else the
        failure it means (this module's docstring)."""
        if self.budget is not None:
            self.budget.wait(self._stopping)
        self._authorize()
        try:
            resp = self._http.request(method, path, **kw)
        except self._httpx.ConnectError as e:
            raise NotDelivered(f"WATS unreachable: {type(e).__name__}: {self.redact(e)}") from None
        except self._httpx.TimeoutException as e:
            # a write or read timeout may come after WATS took the request: in doubt
            raise TransientError(f"WATS timed out: {type(e).__name__}") from None
        except self._httpx.TransportError as e:
            raise TransientError(f"WATS connection failed: {type(e).__name__}: {self.redact(e)}") from None
        code = resp.status_code
        if 200 <= code < 300:
            return resp
        text = self.redact(_server_text(resp))
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

    def probe(self, path: str, **kw: Any):
        """A GET answered as it is, any status (the doctor's "is anything there"); raises ``httpx.HTTPError``
        when nothing answered."""
        return self._http.get(path, **kw)

    def redact(self, error: object) -> str:
        """``error`` as text without the token."""
        text = str(error)
        return text.replace(self._token, "***") if self._token else text

    def close(self) -> None:
        self._http.close()


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
