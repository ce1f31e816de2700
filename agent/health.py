"""``/metrics`` (Prometheus text) and ``/healthz`` (JSON) on a small HTTP listener, 127.0.0.1 by default.

Both read the journal at request time, so what they report is what is on disk.

The listener is bounded in every resource a client can make it hold, because it shares the agent's process (and its
file-descriptor limit) with the journal and every protocol: a slow or hostile client must never wedge the agent or
silence its health check.

* One thread multiplexes every connection (``selectors``, non-blocking) and only reads request heads; a thread per
  connection (``ThreadingHTTPServer``) let 1,000 half-sent requests make 1,001 threads.
* A request head must arrive whole within ``head_timeout`` seconds and ``MAX_HEAD_BYTES``: a slowloris trickle is
  cut however slowly it drips.
* At most ``max_connections`` are open at once; when one more arrives the oldest unfinished one is closed to make
  room, so a flood of idle connections costs a bounded number of descriptors and a real request, which arrives
  whole at once, still gets through.
* A complete request is answered by one of ``workers`` threads (fixed, started once) through a bounded queue; when
  the queue is full the answer is ``503`` at once. The answer is sent with a socket timeout.
"""

from __future__ import annotations

import errno
import json
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192  # a GET of /metrics needs a few hundred


@dataclass
class _Conn:
    sock: socket.socket
    deadline: float
    opened: float
    buf: bytearray = field(default_factory=bytearray)


class HealthServer:
    """The metrics/health listener; ``start`` and ``stop`` as a lifecycle component."""

    def __init__(self, host: str, port: int, metrics_text: Callable[[], str],
                 health: Callable[[], tuple[int, dict[str, Any]]], *, page: Callable[[], str] | None = None,
                 workers: int = 2, queue_size: int = 16,
                 max_connections: int = 64, head_timeout: float = 5.0, send_timeout: float = 5.0) -> None:
        self._metrics_text = metrics_text
        self._health = health
        self._page = page  # the status page at / (agent/statuspage.py), if the agent serves one
        self.workers = workers
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.send_timeout = send_timeout
        self._listener = socket.create_server((host, port), backlog=128)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._jobs: queue.Queue[tuple[socket.socket, str, str] | None] = queue.Queue(maxsize=queue_size)
        self._conns: dict[int, _Conn] = {}  # by fileno, in accept order (dicts keep insertion order)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        #: what the limits did, for tests and the log: closed for a slow head, to make room, refused when busy
        self.dropped = {"timeout": 0, "room": 0, "busy": 0, "too_large": 0}

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def name(self) -> str:
        return "health-server"

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._loop, name="health-server", daemon=True)]
        self._threads += [threading.Thread(target=self._worker, name=f"health-worker-{i}", daemon=True)
                          for i in range(self.workers)]
        for t in self._threads:
            t.start()
        log.info("status page, metrics and health on http://%s:%d/ (/, /metrics, /healthz)", *self.address)

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        for _ in range(self.workers):
            try:
                self._jobs.put(None, timeout=self.send_timeout)
            except queue.Full:
                break
        for t in self._threads:
            t.join(timeout=self.send_timeout + 1)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------------------------------------ reading heads
    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                timeout = min((c.deadline for c in self._conns.values()), default=now + 1.0) - now
                for key, _ in sel.select(timeout=max(0.0, min(timeout, 1.0))):
                    if key.data == "accept":
                        self._accept(sel)
                    elif key.data == "wake":
                        return
                    else:
                        self._read(sel, key.fileobj)  # type: ignore[arg-type]
                now = time.monotonic()
                for fd, c in list(self._conns.items()):
                    if c.deadline <= now:
                        self.dropped["timeout"] += 1
                        self._close(sel, fd)
        finally:
            for fd in list(self._conns):
                self._close(sel, fd)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM) and self._conns:
                    self.dropped["room"] += 1
                    self._close(sel, next(iter(self._conns)))  # the process is out of descriptors: give one back
                    continue
                log.warning("metrics listener: accept failed: %s", e)
                time.sleep(0.05)  # the listener stays readable: do not spin
                return
            if len(self._conns) >= self.max_connections:
                self.dropped["room"] += 1
                self._close(sel, next(iter(self._conns)))  # the oldest unfinished one
            sock.setblocking(False)
            now = time.monotonic()
            self._conns[sock.fileno()] = _Conn(sock, now + self.head_timeout, now)
            sel.register(sock, selectors.EVENT_READ, "conn")

    def _read(self, sel: selectors.BaseSelector, sock: socket.socket) -> None:
        fd = sock.fileno()
        c = self._conns.get(fd)
        if c is None:
            return
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(sel, fd)
            return
        c.buf += data
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            end = c.buf.find(b"\n\n")
        if end < 0:
            if len(c.buf) > MAX_HEAD_BYTES:
                self.dropped["too_large"] += 1
                self._hand_over(sel, fd, "", "too_large")
            return
        line = bytes(c.buf[:c.buf.find(b"\n")]).decode("latin-1").split()
        method, target = (line[0], line[1]) if len(line) >= 2 else ("", "")
        self._hand_over(sel, fd, method, target.split("?", 1)[0])

    def _hand_over(self, sel: selectors.BaseSelector, fd: int, method: str, path: str) -> None:
        c = self._conns.pop(fd)
        sel.unregister(c.sock)
        try:
            self._jobs.put_nowait((c.sock, method, path))
        except queue.Full:
            self.dropped["busy"] += 1
            c.sock.settimeout(0.5)
            _send(c.sock, 503, "text/plain", b"busy: try again\n", head_only=False)
            _close_quietly(c.sock)

    def _close(self, sel: selectors.BaseSelector, fd: int) -> None:
        c = self._conns.pop(fd, None)
        if c is None:
            return
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    # ------------------------------------------------------------------------------------------ answering
    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            sock, method, path = job
            try:
                sock.settimeout(self.send_timeout)
                code, ctype, body = self._answer(method, path)
                _send(sock, code, ctype, body, head_only=method == "HEAD")
            except Exception:  # noqa: BLE001 - a scrape must never take the agent down
                log.exception("health endpoint failed")
            finally:
                _close_quietly(sock)

    def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        if path == "too_large":
            return 431, "text/plain", b"request head too large\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        try:
            if path == "/metrics":
                return 200, "text/plain; version=0.0.4; charset=utf-8", self._metrics_text().encode()
            if path == "/healthz":
                code, doc = self._health()
                return code, "application/json", json.dumps(doc, indent=1).encode()
            if path in ("/", "/index.html") and self._page is not None:
                return 200, "text/html; charset=utf-8", self._page().encode()
            return 404, "text/plain", b"not found: try /, /metrics or /healthz\n"
        except Exception as e:  # noqa: BLE001 - reported to the client, logged
            log.exception("health endpoint failed")
            return 500, "text/plain", f"error: {type(e).__name__}\n".encode()


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


def _send(sock: socket.socket, code: int, ctype: str, body: bytes, head_only: bool) -> None:
    head = (f"HTTP/1.1 {code} {_REASONS.get(code, 'Status')}\r\nServer: fixture-agent\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    try:
        sock.sendall(head if head_only else head + body)
    except OSError:
        pass  # the client went away or did not read within the timeout: nothing to do


def _close_quietly(sock: socket.socket) -> None:
    """Half-close first, so the client reads the whole answer before the connection goes."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()
