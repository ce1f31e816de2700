"""The metrics/health listener under what a plant network does to it, with the agent as a real process.

Issue 23 items 1 and 7: every request leaked a journal reader (an SQLite connection, two descriptors) on a thread of
its own, so a Prometheus scrape every 15 s ran a Pi out of descriptors in about two hours; and 1,000 half-sent
requests made 1,001 threads and left /healthz unreachable.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import time

import pytest

from tests.agent_process import start_agent, stop_agent
from tests.conftest import free_port, wait_for


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def _get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _wait_up(port: int) -> None:
    def up() -> bool:
        try:
            return _get(port, "/healthz", timeout=2)[0] in (200, 503)
        except OSError:
            return False

    assert wait_for(up, timeout=30, interval=0.1), "the agent's /healthz never answered"


@pytest.fixture
def more_files():
    """The test holds ~1,000 sockets; the agent inherits the raised limit too, so a leak shows as a count, not
    only as the failures at 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192)
    if want < 2200:
        pytest.skip(f"needs a file limit of 2200, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_thousands_of_scrapes_hold_descriptors_and_threads_flat(write_config, more_files):
    port = free_port()
    agent = start_agent(write_config(simulated=True, metrics_port=port))
    try:
        _wait_up(port)
        for _ in range(50):  # warm-up: the workers' readers, the first stats
            _get(port, "/metrics")
            _get(port, "/healthz")
        fds0, threads0 = _fds(agent.pid), _threads(agent.pid)
        codes: dict[int, int] = {}
        for i in range(1500):
            for path in ("/metrics", "/healthz"):
                code, body = _get(port, path)
                codes[code] = codes.get(code, 0) + 1
        fds1, threads1 = _fds(agent.pid), _threads(agent.pid)
        assert codes == {200: 3000}, codes
        # the old listener: +2 descriptors (one SQLite connection) and a thread's reader per request
        assert fds1 - fds0 <= 4, f"open files {fds0} -> {fds1} over 3,000 requests"
        assert threads1 - threads0 <= 1, f"threads {threads0} -> {threads1}"
        health = json.loads(_get(port, "/healthz")[1])
        assert health["status"] == "ok", health
    finally:
        stop_agent(agent)


def test_a_thousand_half_sent_requests_leave_healthz_answering(write_config, more_files):
    port = free_port()
    agent = start_agent(write_config(metrics_port=port))
    slow: list[socket.socket] = []
    try:
        _wait_up(port)
        fds0, threads0 = _fds(agent.pid), _threads(agent.pid)
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the end of the head
            slow.append(s)
        time.sleep(0.5)
        started = time.monotonic()
        code, body = _get(port, "/healthz", timeout=5)
        assert code == 200 and json.loads(body)["status"] == "ok"
        assert time.monotonic() - started < 3
        # bounded: the old server had a thread and a descriptor per connection (1,001 threads)
        assert _threads(agent.pid) - threads0 <= 1, (threads0, _threads(agent.pid))
        assert _fds(agent.pid) - fds0 <= 70, (fds0, _fds(agent.pid))
        # and every half-sent request is closed: at once to make room, or at the head timeout (5 s)
        deadline = time.monotonic() + 15
        for s in slow:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                got = s.recv(100)
            except ConnectionResetError:  # closed with its bytes unread: a reset, as good as an end
                got = b""
            assert got == b"", "a half-sent request got an answer, or was never closed"
        # a trickle of bytes does not keep a connection open past the head timeout either
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.append(s)
        s.settimeout(0.5)
        t0, closed = time.monotonic(), False
        while time.monotonic() - t0 < 12 and not closed:
            try:
                s.sendall(b"a")
                closed = s.recv(10) == b""
            except socket.timeout:
                continue
            except OSError:
                closed = True
        assert closed and time.monotonic() - t0 < 8, "a connection dripping a byte every 0.5 s was kept open"
        assert _get(port, "/healthz")[0] == 200
    finally:
        for s in slow:
            s.close()
        stop_agent(agent)


def test_a_journal_refusing_events_is_a_health_problem(write_config):
    """Issue 23 item 6: a refusal was a problem only when this process's bus counted it, so a source journaling on
    its own (MQTT, CFX) or a script beside the agent could be refused while /healthz said 200. The journal keeps
    when it last refused; that is what health and ``status`` read."""
    from tests.conftest import run_cli

    port = free_port()
    cfg = write_config(metrics_port=port, max_bytes="64KiB")
    agent = start_agent(cfg)
    try:
        _wait_up(port)
        assert json.loads(_get(port, "/healthz")[1])["problems"] == []
        line = json.dumps({"type": "test.result", "payload": {"unit_id": "SN", "result": "pass",
                                                              "start_time": "2026-01-01T00:00:00Z",
                                                              "custom_data": {"pad": "x" * 2000}}})
        proc = run_cli("publish", "-c", str(cfg), "--stdin", input=(line + "\n") * 60)
        assert proc.returncode != 0 and "full" in proc.stderr
        code, body = _get(port, "/healthz")
        health = json.loads(body)
        assert code == 503 and health["status"] == "failing", health
        assert any("refusing events" in p for p in health["problems"]), health
        status = run_cli("status", "-c", str(cfg), check=True).stdout
        assert "JOURNAL REFUSING EVENTS" in status, status
        assert json.loads(run_cli("status", "-c", str(cfg), "--json", check=True).stdout)["journal"]["refusing"]
    finally:
        stop_agent(agent)
