"""A WATS stand-in: a real HTTP server that enforces the contract in ``reference/wats-api.md``.

What it checks: the Basic auth header (a wrong or missing token is 401), ``Content-Type`` (415), and on
``POST /api/Report/WSJF`` every rule of §2.3-§2.4 that ``tests/wats_contract.py`` writes down (exact keys and casing,
no unknown keys, types, text lengths, forbidden characters in pn/sn/rev, a GUID id, the payload each stepType takes,
limits per compOp, a value where the step needs one, strict JSON: no bare NaN, no duplicate keys), plus an existing
test ``processCode`` and no report dated in the future. A refusal is a 400 whose message lists each problem as
``<JSON path>: <what>``.

What it audits: every accepted report's statuses against the oracle of §2.4 (WATS accepts a wrong status, so the
finding goes to ``audit``, not into a 400, unless ``audit_rejects=True``). What it counts: every POST per report
id (``receive_count``), so a test can tell "exactly once by id" from "sent twice".

What it can be told to do (``faults``): answer 429 with Retry-After in seconds or as an HTTP date, answer 503 for
the next N requests, be slow, reset the connection after reading a request (the ambiguous failure: the report
was stored but the client never heard), or reject some report ids with 400 (poison).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import NAMESPACE_URL, uuid5

from tests.wats_contract import Finding, audit_report, check_report

MAX_PROBLEMS_SHOWN = 20  # a 400's message lists this many problems, then says how many more


class _NotJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON (a non-finite number must be sent as the string \"{name}\")")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _NotJson(f"duplicate key {key!r} in one object")
            seen.add(key)
    return doc


def parse_wsjf(body: bytes) -> Any:
    """JSON as a strict server reads it: no NaN/Infinity literals, no key twice in one object."""
    return json.loads(body, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout) or a reset we injected: expected here, not worth a traceback


def asset_id_of(serial: str) -> str:
    return str(uuid5(NAMESPACE_URL, f"asset:{serial}"))


@dataclass
class Faults:
    rate_limit_next: int = 0  # answer 429 to the next N requests
    retry_after: str = "1"  # seconds, or "date" for an HTTP-date one second ahead
    unavailable_next: int = 0  # answer 503 to the next N requests
    delay: float = 0.0  # seconds before answering
    slow_next: int = 0  # the next N requests take slow_delay before they are processed
    slow_delay: float = 1.0
    reset_after_read_next: int = 0  # store the report, then drop the connection without a response
    poison_ids: set[str] = field(default_factory=set)  # always 400
    poison_serials: set[str] = field(default_factory=set)  # reports for these units: always 400


class WatsStandIn:
    def __init__(self, token: str = "dGVzdDp0ZXN0", processes: list[dict] | None = None,
                 audit_rejects: bool = False) -> None:
        self.token = token
        self.audit_rejects = audit_rejects  # an audit finding is a 400 too (WATS itself would accept it)
        self.processes = processes or [
            {"code": 10, "name": "SW Debug", "isTestOperation": True, "isRepairOperation": False, "isWipOperation": False},
            {"code": 50, "name": "PCBA test", "isTestOperation": True, "isRepairOperation": False, "isWipOperation": False},
            {"code": 90, "name": "Burn In test", "isTestOperation": True, "isRepairOperation": False, "isWipOperation": False},
            {"code": 500, "name": "Repair", "isTestOperation": False, "isRepairOperation": True, "isWipOperation": False},
        ]
        self.faults = Faults()
        self.lock = threading.Lock()
        self.reports: dict[str, dict] = {}
        self.receive_count: Counter[str] = Counter()
        self.rejected: list[tuple[int, str]] = []  # (status, message) of every refused report
        self.refused: list[tuple[Any, list[str]]] = []  # (report id, its problems) of every refused report
        self.audit: list[Finding] = []  # (report id, JSON path, expected, sent) for the accepted reports
        self.requests: Counter[str] = Counter()
        self.assets: dict[str, dict[str, Any]] = defaultdict(lambda: {"runningCount": 0, "totalCount": 0,
                                                                       "state": 0, "log": []})
        self.increments: list[tuple[str, int]] = []
        self.children: set[tuple[str, str, str, str]] = set()
        self.up = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                outer._handle(self, "POST")

            def do_PUT(self) -> None:  # noqa: N802
                outer._handle(self, "PUT")

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --------------------------------------------------------------------------------------------- helpers
    @property
    def unique_reports(self) -> int:
        with self.lock:
            return len(self.reports)

    def duplicates(self) -> dict[str, int]:
        with self.lock:
            return {k: v for k, v in self.receive_count.items() if v > 1}

    def _send(self, h: BaseHTTPRequestHandler, code: int, body: Any = None, headers: dict[str, str] | None = None):
        if 200 <= code < 300 and h.command != "GET":
            with self.lock:  # the change is made; now the client may never hear of it (ambiguous failure)
                reset = self.faults.reset_after_read_next > 0
                if reset:
                    self.faults.reset_after_read_next -= 1
            if reset:
                self._reset(h)
                return
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _reset(h: BaseHTTPRequestHandler) -> None:
        """Close with RST: the client sent everything and will never see an answer."""
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.close_connection = True
        h.connection.close()

    # --------------------------------------------------------------------------------------------- routing
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        url = urlsplit(h.path)
        route = f"{method} {url.path.lower()}"
        with self.lock:
            self.requests[route] += 1
        f = self.faults
        if f.delay:
            time.sleep(f.delay)
        with self.lock:
            slow = f.slow_next > 0
            if slow:
                f.slow_next -= 1
        if slow:
            time.sleep(f.slow_delay)  # then processed as usual: the client may have given up (ambiguous)
        if not self.up:
            self._reset(h)
            return
        if h.headers.get("Authorization") != f"Basic {self.token}":
            self._send(h, 401, {"message": "Authorization has been denied for this request."})
            return
        with self.lock:
            if f.unavailable_next > 0:
                f.unavailable_next -= 1
                code = 503
            elif f.rate_limit_next > 0:
                f.rate_limit_next -= 1
                code = 429
            else:
                code = 0
        if code == 503:
            self._send(h, 503, {"message": "Service Unavailable"})
            return
        if code == 429:
            ra = (format_datetime(datetime.now(timezone.utc) + timedelta(seconds=1), usegmt=True)
                  if f.retry_after == "date" else f.retry_after)
            self._send(h, 429, {"message": "Too Many Requests"}, {"Retry-After": ra})
            return
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if route == "GET /api/app/processes":
            self._send(h, 200, self.processes)
        elif route == "GET /api/app/version":
            self._send(h, 200, {"version": "25.3.0"})
        elif route == "POST /api/report/wsjf":
            self._report(h, body)
        elif route in ("PUT /api/asset/setrunningcount", "PUT /api/asset/settotalcount"):
            sn = q.get("serialNumber")
            key, param = (("runningCount", "runningCount") if "running" in route else ("totalCount", "totalCount"))
            if not sn or param not in q:
                self._send(h, 400, {"message": f"serialNumber and {param} are required"})
                return
            with self.lock:
                self.assets[sn][key] = int(q[param])
            self._send(h, 200, {"serialNumber": sn, key: int(q[param])})
        elif route == "PUT /api/asset/count":
            sn = q.get("serialNumber")
            n = int(q.get("incrementBy", "0"))
            with self.lock:
                self.assets[sn]["runningCount"] += n
                self.assets[sn]["totalCount"] += n
                self.increments.append((sn, n))
            self._send(h, 200, {"serialNumber": sn})
        elif route == "POST /api/asset/resetrunningcount":
            sn = q.get("serialNumber", "")
            with self.lock:
                self.assets[sn]["runningCount"] = 0
                self._log(sn, 3, q.get("comment", ""))
            self._send(h, 200, {})
        elif route == "PUT /api/asset/state":
            with self.lock:
                self.assets[q.get("serialNumber", "")]["state"] = int(q.get("state", "0"))
            self._send(h, 200, {})
        elif route == "GET /api/asset/log":
            want = q.get("$filter", "").removeprefix("assetId eq '").removesuffix("'")
            with self.lock:
                entries = [e for a in self.assets.values() for e in a["log"] if e["assetId"] == want]
            self._send(h, 200, sorted(entries, key=lambda e: e["date"], reverse=True)[:int(q.get("$top", "100"))])
        elif route == "POST /api/asset/message":
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            sn = self._serial_of(doc.get("assetId")) if isinstance(doc, dict) else None
            if sn is None or not doc.get("comment"):
                self._send(h, 400, {"message": "assetId (of an existing asset) and comment are required"})
                return
            with self.lock:
                self._log(sn, 0, doc["comment"])
            self._send(h, 200, {})
        elif route in ("POST /api/asset/maintenance", "POST /api/asset/calibration"):
            sn = q.get("serialNumber")
            if not sn or sn not in self.assets or "dateTime" not in q:
                self._send(h, 400, {"message": "serialNumber (of an existing asset) and dateTime are required"})
                return
            with self.lock:
                self._log(sn, 5 if route.endswith("maintenance") else 4, q.get("comment", ""))
            self._send(h, 200, {})
        elif route == "POST /api/production/addchildunit":
            keys = ("parentSerialNumber", "parentPartNumber", "childSerialNumber", "childPartNumber")
            if not all(q.get(k) for k in keys):
                self._send(h, 400, {"message": f"{', '.join(keys)} are required"})
                return
            with self.lock:
                self.children.add(tuple(q[k] for k in keys))
            self._send(h, 200, {})
        elif method == "GET" and route.startswith("GET /api/asset/"):
            sn = unquote(url.path.split("/")[-1])
            with self.lock:
                a = self.assets.get(sn)
                doc = None if a is None else {"assetId": asset_id_of(sn), "serialNumber": sn, "state": a["state"],
                                              "totalCount": a["totalCount"], "runningCount": a["runningCount"]}
            if doc is None:
                self._send(h, 404, {"message": f"asset {sn} not found"})
            else:
                self._send(h, 200, doc)
        else:
            self._send(h, 404, {"message": f"no route {route}"})

    def _report(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        if not (h.headers.get("Content-Type") or "").startswith("application/json"):
            self._send(h, 415, {"message": "Content-Type must be application/json"})
            return
        try:
            report = parse_wsjf(body)
        except (ValueError, RecursionError) as e:
            self._refuse(h, None, [f"(body): invalid JSON: {e}"])
            return
        problems = self.problems(report)
        rid = report.get("id") if isinstance(report, dict) else None
        if not problems and (rid in self.faults.poison_ids or report.get("sn") in self.faults.poison_serials):
            problems = [f"report {rid} rejected (poison)"]
        findings = audit_report(report) if not problems else []
        if findings and self.audit_rejects:
            problems = [f"audit: {f.path}: expected {f.expected}, sent {f.sent}" for f in findings]
        if problems:
            self._refuse(h, rid, problems)
            return
        with self.lock:
            self.reports[rid] = report
            self.receive_count[rid] += 1
            # a resend under the same id overwrites the report in WATS: its findings are the new ones
            self.audit = [f for f in self.audit if f.report_id != rid] + findings
        self._send(h, 200, {"ID": rid})

    def _refuse(self, h: BaseHTTPRequestHandler, rid: Any, problems: list[str]) -> None:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        message = "; ".join(shown) + (f"; and {more} more" if more else "")
        with self.lock:
            self.rejected.append((400, message))
            self.refused.append((rid, list(problems)))
        self._send(h, 400, {"message": message})

    def refusals(self) -> list[str]:
        """Every problem of every refused report, one string each, in the order they came."""
        with self.lock:
            return [p for _, problems in self.refused for p in problems]

    def audit_text(self) -> str:
        """The audit findings as lines for an assertion message."""
        with self.lock:
            return "\n".join(f"{f.report_id} {f.path}: expected {f.expected}, sent {f.sent}" for f in self.audit)

    def _log(self, sn: str, kind: int, comment: str) -> None:
        self.assets[sn]["log"].append({"assetId": asset_id_of(sn), "serialNumber": sn, "type": kind,
                                       "comment": comment, "date": time.time()})

    def _serial_of(self, asset_id: Any) -> str | None:
        with self.lock:
            return next((sn for sn in self.assets if asset_id_of(sn) == asset_id), None)

    def register_asset(self, sn: str, total: int = 0, running: int = 0) -> None:
        with self.lock:
            self.assets[sn].update(totalCount=total, runningCount=running)

    def log_of(self, sn: str) -> list[dict]:
        with self.lock:
            return list(self.assets[sn]["log"]) if sn in self.assets else []

    def test_codes(self) -> dict[int, str]:
        return {p["code"]: p["name"] for p in self.processes if p["isTestOperation"]}

    def problems(self, r: Any) -> list[str]:
        """Every way the report breaks the contract, as ``<JSON path>: <what>``; empty if WATS would take it."""
        out = check_report(r, self.test_codes())
        if isinstance(r, dict) and isinstance(r.get("startUTC"), str):
            try:
                start_utc = datetime.fromisoformat(r["startUTC"].replace("Z", "+00:00"))
            except ValueError:
                return out
            if start_utc.tzinfo is not None and start_utc > datetime.now(timezone.utc) + timedelta(minutes=5):
                out.append("startUTC: report is dated in the future (would be quarantined)")
        return out

    def validate(self, r: Any) -> str | None:
        """The refusal message for a report, None if it would be accepted (audit aside)."""
        problems = self.problems(r)
        return "; ".join(problems) if problems else None


def serve() -> None:
    """Run the stand-in as its own process (the benchmark does, so the server does not share the client's GIL):
    prints the URL and the token on one line, serves until stdin closes."""
    import sys

    s = WatsStandIn()
    print(s.url, s.token, flush=True)
    sys.stdin.read()
    s.close()
