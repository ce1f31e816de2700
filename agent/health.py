"""``/metrics`` (Prometheus text) and ``/healthz`` (JSON) on a small threaded HTTP server, 127.0.0.1 by default.

Both read the journal through their own connection at request time, so what they report is what is on disk.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class HealthServer:
    def __init__(self, host: str, port: int, metrics_text: Callable[[], str],
                 health: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        self._metrics_text = metrics_text
        self._health = health
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "fixture-agent"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                try:
                    if self.path.split("?")[0] == "/metrics":
                        body = outer._metrics_text().encode()
                        self._send(200, "text/plain; version=0.0.4; charset=utf-8", body)
                    elif self.path.split("?")[0] == "/healthz":
                        code, doc = outer._health()
                        self._send(code, "application/json", json.dumps(doc, indent=1).encode())
                    else:
                        self._send(404, "text/plain", b"not found: try /metrics or /healthz\n")
                except Exception as e:  # noqa: BLE001 - a scrape must never take the agent down
                    log.exception("health endpoint failed")
                    self._send(500, "text/plain", f"error: {type(e).__name__}\n".encode())

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence per-request logs
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def name(self) -> str:
        return "health-server"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 1.0},
                                        name="health-server", daemon=True)
        self._thread.start()
        log.info("metrics and health on http://%s:%d/ (/metrics, /healthz)", *self.address)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
