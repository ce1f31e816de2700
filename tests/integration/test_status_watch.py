"""``status --watch`` against the agent as a real process: the WATS stand-in is held down (it resets every
connection) while results are published, so a backlog builds; then it is released and the backlog drains while
``status --watch --interval 0.5`` runs under a pty (a real terminal, whose Ctrl-C is the byte 0x03 through the line
discipline) and on a pipe (plain lines, not one escape code). Both see the stall with the uplink's own last error,
then the drain with its time to empty, then a backlog of 0; both end with exit 0 and no traceback. Afterwards, with
the agent stopped, a watch leaves the journal's files byte for byte as they were (read-only, never a checkpoint).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path
from typing import Callable

from agent.terminal import printable
from tests.agent_process import status, stop_agent
from tests.conftest import ROOT, cli_cmd, wait_for
from tests.wats_standin import WatsStandIn

TOKEN = "dGVzdDp0ZXN0"
RESULTS = 600
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def agent_config(write_config, tmp_path: Path, wats: WatsStandIn) -> Path:
    token_file = tmp_path / "wats.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    return write_config(f"""
        [sinks.wats]
        url = "{wats.url}"
        token_file = "{token_file}"
        process_codes = {{ test = 50 }}
        default_process_code = 50
        default_part_number = "PN-1"
        require_clock_sync = false
        requests_per_minute = 100000
        retry_max = "500ms"
        timeout = "2s"
    """)


class Reader(threading.Thread):
    """Everything a file descriptor gives until it closes, kept as text."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.chunks, self.lock = fd, [], threading.Lock()
        self.start()

    def run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: the pty's other side closed
                return
            if not data:
                return
            with self.lock:
                self.chunks.append(data)

    @property
    def text(self) -> str:
        with self.lock:
            return b"".join(self.chunks).decode("utf-8", "replace")


def watch_in_pty() -> tuple[int, int, Callable[[], None]]:
    """``status --watch`` with a pty as its controlling terminal (120x40), so 0x03 written to it is Ctrl-C."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

    def controlling_tty() -> None:  # runs after setsid (start_new_session): the pty becomes the session's terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    return master, slave, controlling_tty


def frames(raw: str) -> list[str]:
    """The screens a terminal showed: split at each cursor-home, escape codes taken out."""
    return [ANSI.sub("", f) for f in raw.split("\x1b[H")[1:]]


def wats_backlog(text: str) -> int | None:
    m = re.search(r"wats\s+\S+\s+backlog\s+([\d,]+)", text)
    return int(m.group(1).replace(",", "")) if m else None


def test_watch_shows_a_backlog_stall_then_drain_on_a_terminal_and_a_pipe(write_config, tmp_path):
    wats = WatsStandIn(token=TOKEN)
    wats.up = False  # every connection reset: the uplink retries, the backlog builds
    cfg = agent_config(write_config, tmp_path, wats)
    # its log to a file: httpx logs every request, and a pipe nobody reads until the end (start_agent's) fills at
    # 64 KB, about 570 reports, and blocks the uplink in the middle of the drain
    agent_log = tmp_path / "agent.log"
    with agent_log.open("w") as log_file:
        agent = subprocess.Popen(cli_cmd("run", "-c", str(cfg)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file)
    watchers: list[subprocess.Popen] = []
    try:
        lines = "".join(json.dumps({"type": "test.result", "payload": {
            "unit_id": f"SN-{i:04d}", "result": "pass" if i % 7 else "fail",
            "start_time": "2026-01-01T00:00:00Z"}}) + "\n" for i in range(RESULTS))
        subprocess.run(cli_cmd("publish", "-c", str(cfg), "--stdin", "--source", "test"), input=lines, text=True,
                       cwd=ROOT, check=True, capture_output=True, timeout=60)

        def held() -> dict | None:
            subs = {s["name"]: s for s in status(cfg)["subscribers"]}
            w = subs.get("wats")
            return w if w and w["backlog"] >= RESULTS and w["state"] != "running" and w["last_error"] else None

        assert wait_for(held, 60, 0.2), status(cfg)["subscribers"]
        last_error = held()["last_error"]

        master, slave, controlling_tty = watch_in_pty()
        tty = subprocess.Popen(cli_cmd("status", "-c", str(cfg), "--watch", "--interval", "0.5"), cwd=ROOT, env=ENV,
                               stdin=slave, stdout=slave, stderr=subprocess.PIPE, start_new_session=True,
                               preexec_fn=controlling_tty)
        os.close(slave)
        watchers.append(tty)
        tty_out = Reader(master)
        piped = subprocess.Popen(cli_cmd("status", "-c", str(cfg), "--watch", "--interval", "0.5"), cwd=ROOT,
                                 env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        watchers.append(piped)
        pipe_out = Reader(piped.stdout.fileno())

        # the stall, in both, with the uplink's own words
        assert wait_for(lambda: "stalled:" in tty_out.text and "stalled:" in pipe_out.text, 20, 0.1), \
            (tty_out.text[-2000:], pipe_out.text[-2000:])
        assert f"stalled: {printable(held()['state'])}: {printable(last_error)}"[:60] in pipe_out.text

        wats.faults.delay = 0.01  # released, but not instantly drained: several refreshes see it going down
        wats.up = True

        def drained() -> bool:
            return all(s["backlog"] == 0 for s in status(cfg)["subscribers"])

        assert wait_for(drained, 120, 0.2), status(cfg)["subscribers"]
        assert wats.unique_reports == RESULTS and not wats.duplicates()
        assert wait_for(lambda: wats_backlog(frames(tty_out.text)[-1] if frames(tty_out.text) else "") == 0
                        and re.search(r"wats backlog 0 ", pipe_out.text), 20, 0.1), \
            (frames(tty_out.text)[-1:], pipe_out.text[-1000:])
        time.sleep(0.6)  # one more refresh after the last line looked at

        # Ctrl-C: the terminal's (0x03 through the line discipline), and SIGINT on the pipe's
        os.write(master, b"\x03")
        piped.send_signal(signal.SIGINT)
        assert tty.wait(10) == 0 and piped.wait(10) == 0
        tty_err, pipe_err = tty.stderr.read().decode(), piped.stderr.read().decode()
        assert "Traceback" not in tty_err + pipe_err + tty_out.text + pipe_out.text, tty_err + pipe_err
        tty_out.join(5)
        pipe_out.join(5)
        os.close(master)
        raw = tty_out.text
    finally:
        for w in watchers:
            if w.poll() is None:
                w.kill()
                w.wait()
        stop_agent(agent)
        wats.close()

    # the terminal: one screen redrawn in place, the bar, the time to empty while it drained, then empty
    shown = frames(raw)
    assert len(shown) >= 8, raw[-2000:]
    assert raw.rstrip("\r\n^C").endswith("\x1b[?25h")  # the cursor shown again at Ctrl-C
    backlogs = [wats_backlog(f) for f in shown]
    assert all(b is not None for b in backlogs), shown[:2]
    assert max(backlogs) >= RESULTS and backlogs[-1] == 0
    draining = [f for f, b in zip(shown, backlogs) if b and "draining" in f]
    assert draining, [(b, re.findall(r"(stalled|draining|growing|level|empty)[^\n]*", f)) for f, b in
                      zip(shown, backlogs)]
    assert all(re.search(r"empty in \d+(s|m\d\ds)", f) for f in draining)
    partial = [f for f in draining if re.search(r"\[\u2588+\u2591+\]\s+\d+% of [\d,]+", f)]
    assert partial, draining[-1]  # a bar part way along while it drained
    assert re.search(r"\[\u2588+\]\s+100%", shown[-1]) and "empty: caught up" in shown[-1]
    assert "stalled:" in shown[0] or "measuring" in shown[0]
    # the backlog went down, never up, once it started to drain (no new events: nothing arrived)
    first_drain = backlogs.index(next(b for b, f in zip(backlogs, shown) if "draining" in f))
    tail = backlogs[first_drain:]
    assert tail == sorted(tail, reverse=True), tail

    # the pipe: plain time-stamped lines, not one escape code; stall, drain with time to empty, then empty
    text = pipe_out.text
    assert "\x1b" not in text and "\r" not in text
    rows = [re.match(r"\d\d:\d\d:\d\d wats backlog (\d+) state (\S+) oldest \S+ dead_letters (\d+)  (.*)$", line)
            for line in text.splitlines()[1:]]
    assert rows and all(rows), text[-1500:]
    verdicts = [(int(m.group(1)), m.group(4)) for m in rows]
    assert any(b >= RESULTS and v.startswith("stalled: ") for b, v in verdicts)
    assert any(b > 0 and re.match(r"draining [\d.,]+/s, empty in \S+$", v) for b, v in verdicts), verdicts
    assert verdicts[-1][0] == 0 and verdicts[-1][1].startswith("empty: caught up")
    assert text.splitlines()[0].startswith(f"watching {tmp_path / 'data' / 'journal.db'} every 0.5 s")
    assert "Traceback" not in agent_log.read_text()


def test_watch_reads_the_journal_without_changing_it(write_config, tmp_path):
    """A stopped agent's journal byte for byte the same after a watch over it, nothing written to a WAL; the watch
    says the agent is not running."""
    cfg = write_config(simulated=True)
    proc = subprocess.run(cli_cmd("run", "-c", str(cfg), "--for", "2"), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = tmp_path / "data"

    def digest() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data.glob("journal.db*"))}

    before = digest()
    assert "journal.db" in before
    master, slave, controlling_tty = watch_in_pty()
    w = subprocess.Popen(cli_cmd("status", "-c", str(cfg), "--watch", "--interval", "0.2"), cwd=ROOT, env=ENV,
                         stdin=slave, stdout=slave, stderr=subprocess.PIPE, start_new_session=True,
                         preexec_fn=controlling_tty)
    os.close(slave)
    out = Reader(master)
    try:
        assert wait_for(lambda: len(frames(out.text)) >= 5, 20, 0.1), out.text
        os.write(master, b"\x03")
        assert w.wait(10) == 0
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
        out.join(5)
        os.close(master)
    assert "agent NOT RUNNING" in frames(out.text)[-1]
    assert "Traceback" not in w.stderr.read().decode()
    after = digest()
    assert after["journal.db"] == before["journal.db"]
    # SQLite's reader of a WAL journal (status's too) makes the shared-memory index and an empty WAL; nothing in it
    wal = data / "journal.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0 or after.get(wal.name) == before.get(wal.name)
