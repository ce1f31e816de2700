"""A fixture on a pseudo-terminal: a JSON-lines fixture controller or a SCPI instrument.

``fixture-agent simulate fixture`` opens a pty pair, prints the device path (and keeps a symlink to it, so a config
can name a stable path while the simulated cable is unplugged and replugged) and speaks the chosen protocol on
it. Error injection: garbage lines, mangled messages, dropped acknowledgements, disconnects. The controller side
behaves as ``docs/serial-protocol.md`` asks a real one to: every message has a ``seq`` in its ``session``, and the
unacknowledged ones are resent, in order, until acknowledged.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import select
import stat
import threading
import time
import tty
import uuid
from collections import deque
from datetime import datetime, timezone
from pathlib import Path


class UnsafeLinkDir(ValueError):
    """``--link`` in a directory where another user could plant or swap the link."""


def check_link_dir(link: Path) -> None:
    """A link the agent reads its fixture through must live where only its owner (or root) can change it. In a
    world-writable directory such as /tmp (sticky or not) another user can create the name first, or swap it
    between our calls, and the agent would read that user's "fixture": forged test results."""
    parent = link.absolute().parent
    try:
        st = parent.stat()
    except FileNotFoundError:
        return  # created by the caller (mkdir), as its own
    if st.st_mode & stat.S_IWOTH or (st.st_uid not in (0, os.geteuid())) or (
            st.st_mode & stat.S_IWGRP and st.st_uid != os.geteuid()):
        raise UnsafeLinkDir(
            f"--link {link}: {parent} is writable by other users, who could plant the link and feed the agent "
            "a fixture of their own; put the link in a directory only you can write (the agent's data "
            "directory, or $XDG_RUNTIME_DIR)")


class PtyFixture:
    """The pty plumbing both protocols share: open, link, read lines, write, unplug and replug."""

    def __init__(self, link: str | os.PathLike[str] | None = None, seed: int | None = None,
                 garbage_rate: float = 0.0, disconnect_every: float = 0.0, disconnect_for: float = 1.0) -> None:
        self.link = Path(link) if link else None
        if self.link:
            check_link_dir(self.link)
        self.rng = random.Random(seed)
        self.garbage_rate = garbage_rate
        self.disconnect_every = disconnect_every
        self.disconnect_for = disconnect_for
        self.stop_event = threading.Event()
        self.master = -1
        self.slave = -1
        self.path = ""
        self.disconnects = 0
        self._lock = threading.Lock()
        self._rbuf = b""
        self._open()

    def _open(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line-ending translation: a wire, not a terminal
        os.set_blocking(self.master, False)  # a wire never blocks the sender: what nobody reads is lost
        self.path = os.ttyname(self.slave)
        if self.link:
            # an unpredictable name made with O_EXCL semantics (symlink fails if it exists), then renamed over
            tmp = self.link.with_name(f"{self.link.name}.{secrets.token_hex(8)}.tmp")
            os.symlink(self.path, tmp)
            os.replace(tmp, self.link)

    def unplug(self) -> None:
        """Close our end: the agent's reads fail as if the USB cable had been pulled."""
        with self._lock:
            if self.master < 0:
                return
            os.close(self.master)
            os.close(self.slave)
            self.master = self.slave = -1
            if self.link:
                self.link.unlink(missing_ok=True)
            self.disconnects += 1

    def replug(self) -> None:
        with self._lock:
            if self.stop_event.is_set():  # closed while unplugged: stay closed
                return
            self._rbuf = b""
            self._open()

    def write(self, data: bytes) -> bool:
        with self._lock:
            if self.master < 0:
                return False
            try:
                return os.write(self.master, data) == len(data)  # a full buffer cuts or drops it: line noise
            except OSError:  # BlockingIOError included
                return False

    def write_line(self, line: bytes) -> bool:
        if self.garbage_rate and self.rng.random() < self.garbage_rate:
            noise = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 60))).replace(b"\n", b"")
            self.write(noise + b"\n")
        return self.write(line + b"\n")

    def read_lines(self, timeout: float) -> list[bytes]:
        # The lock is held across select and read so that close() from another thread cannot close the fd
        # in between: its number would be reused at once (a test's next subprocess pipe) and we would read
        # someone else's bytes. Callers pass short timeouts, so close() waits at most that long.
        with self._lock:
            fd = self.master
            if fd >= 0:
                try:
                    ready, _, _ = select.select([fd], [], [], timeout)
                    data = os.read(fd, 65536) if ready else b""
                except (OSError, ValueError):  # nobody has the slave open yet
                    data = None
        if fd < 0 or data is None:
            time.sleep(timeout)
            return []
        if not data:
            return []
        self._rbuf += data
        *lines, self._rbuf = self._rbuf.split(b"\n")
        return [line.rstrip(b"\r") for line in lines if line.strip()]

    def maybe_disconnect(self, started: float) -> None:
        if self.disconnect_every and time.monotonic() - started > self.disconnect_every * (self.disconnects + 1):
            self.unplug()
            self.stop_event.wait(self.disconnect_for)
            self.replug()

    def close(self) -> None:
        self.stop_event.set()
        self.unplug()


class JsonLinesController:
    """A fixture controller: counters from actuations, periodic self-tests, lid state, the odd fault."""

    def __init__(self, pty: PtyFixture, *, interval: float = 0.5, drop_ack_rate: float = 0.0,
                 mangle_rate: float = 0.0, resend_after: float = 1.0, asset_id: str | None = None,
                 max_outbox: int = 10000, count: int | None = None) -> None:
        self.pty = pty
        self.rng = pty.rng
        self.interval = interval
        self.drop_ack_rate = drop_ack_rate
        self.mangle_rate = mangle_rate
        self.resend_after = resend_after
        self.asset_id = asset_id
        self.max_outbox = max_outbox
        self.count = count  # stop generating after this many messages (tests reconcile against it)
        self.session = uuid.uuid4().hex[:12]
        self.seq = 0
        self.outbox: deque[tuple[int, dict]] = deque()
        self.sent: dict[int, dict] = {}  # every message generated, by seq
        self.acked = 0
        self.total = 0
        self.running = 0
        self._oldest_sent_at = 0.0
        self.lock = threading.Lock()

    def message(self, kind: str, **body) -> None:
        with self.lock:
            if len(self.outbox) >= self.max_outbox:
                return  # a real controller's buffer is bounded too; the oldest unacked stay, new ones wait
            self.seq += 1
            doc = {"type": kind, "seq": self.seq, "session": self.session,
                   "ts": datetime.now(timezone.utc).isoformat(), **body}
            if self.asset_id:
                doc["asset_id"] = self.asset_id
            self.sent[self.seq] = doc
            if not self.outbox:
                self._oldest_sent_at = time.monotonic()
            self.outbox.append((self.seq, doc))
        self._send(doc)

    def _send(self, doc: dict) -> None:
        with self.lock:
            oldest = self.outbox[0][0] if self.outbox else doc["seq"]
        if oldest > 1:  # tell the agent where our buffer starts, in case it never saw the earlier ones acked
            doc = {**doc, "oldest": oldest}
        line = json.dumps(doc, separators=(",", ":")).encode()
        if self.mangle_rate and self.rng.random() < self.mangle_rate:
            cut = self.rng.randrange(1, len(line))
            line = line[:cut] + b"\x00garbled" + line[cut + 1:]
        self.pty.write_line(line)

    def generate(self) -> None:
        r = self.rng.random()
        if self.seq == 0:
            self.message("hello", model="FX-SIM", serial="SIM0001", firmware="1.0.0")
        elif r < 0.6:
            self.running += 1
            self.total += 1
            self.message("counters", running_count=self.running, total_count=self.total)
        elif r < 0.8:
            vcc = round(self.rng.gauss(3.3, 0.03), 4)
            self.message("selftest", result="pass" if 3.2 <= vcc <= 3.4 else "fail", duration_ms=120,
                         steps=[{"name": "VCC", "value": vcc, "unit": "V", "low": 3.2, "high": 3.4},
                                {"name": "Relay K1", "status": "pass"}])
        elif r < 0.95:
            self.message("state", state=self.rng.choice(["busy", "idle"]), reason="lid")
        else:
            self.message("fault", code="E17", message="vacuum below threshold", severity="warning",
                         cleared=self.rng.random() < 0.5)

    def handle(self, line: bytes) -> None:
        try:
            doc = json.loads(line)
            n = int(doc["ack"])
        except (ValueError, KeyError, TypeError):
            return
        if self.drop_ack_rate and self.rng.random() < self.drop_ack_rate:
            return
        with self.lock:
            while self.outbox and self.outbox[0][0] <= n:
                self.outbox.popleft()
            self.acked = max(self.acked, n)
            self._oldest_sent_at = time.monotonic()

    def resend_due(self) -> None:
        with self.lock:
            due = self.outbox and time.monotonic() - self._oldest_sent_at > self.resend_after
            pending = list(self.outbox) if due else []
            if due:
                self._oldest_sent_at = time.monotonic()
        for _, doc in pending:  # go-back-N: everything unacknowledged, in order
            self._send(doc)

    def run(self) -> None:
        started = time.monotonic()
        next_msg = time.monotonic()
        while not self.pty.stop_event.is_set():
            for line in self.pty.read_lines(0.05):
                self.handle(line)
            now = time.monotonic()
            if now >= next_msg and (self.count is None or self.seq < self.count):
                self.generate()
                next_msg = now + self.interval
            self.resend_due()
            self.pty.maybe_disconnect(started)

    @property
    def all_acked(self) -> bool:
        with self.lock:
            return not self.outbox and (self.count is None or self.seq >= self.count)


class ScpiInstrument:
    """A bench instrument: *IDN?, *TST?, MEAS:VOLT?/CURR?/TEMP?, SYST:ERR? with a real error queue."""

    def __init__(self, pty: PtyFixture, *, tst_code: int = 0, error_rate: float = 0.1) -> None:
        self.pty = pty
        self.rng = pty.rng
        self.tst_code = tst_code
        self.error_rate = error_rate
        self.errors: deque[str] = deque(maxlen=16)
        self.commands = 0

    def answer(self, command: str) -> str | None:
        cmd = command.strip().upper()
        self.commands += 1
        if self.error_rate and self.rng.random() < self.error_rate:
            self.errors.append('-222,"Data out of range"')
        if cmd == "*IDN?":
            return "FixtureSim,SCPI-SIM,SN0001,1.0.0"
        if cmd == "*TST?":
            return f"{self.tst_code:+d}"
        if cmd in ("*RST", "*CLS"):
            if cmd == "*CLS":
                self.errors.clear()
            return None
        if cmd.startswith("MEAS:VOLT"):
            return f"{self.rng.gauss(3.3, 0.02):+.8E}"
        if cmd.startswith("MEAS:CURR"):
            return f"{self.rng.gauss(0.028, 0.002):+.8E}"
        if cmd.startswith("MEAS:TEMP"):
            return f"{self.rng.gauss(31.0, 0.5):+.8E}"
        if cmd in ("SYST:ERR?", "SYSTEM:ERROR?", "SYST:ERR:NEXT?"):
            return self.errors.popleft() if self.errors else '+0,"No error"'
        self.errors.append('-113,"Undefined header"')
        return None

    def run(self) -> None:
        started = time.monotonic()
        while not self.pty.stop_event.is_set():
            for line in self.pty.read_lines(0.05):
                try:
                    reply = self.answer(line.decode("ascii", "replace"))
                except Exception:  # noqa: BLE001 - a simulator must not die on odd input either
                    reply = None
                if reply is not None:
                    self.pty.write_line(reply.encode())
            self.pty.maybe_disconnect(started)


def start(protocol: str = "jsonl", **kw) -> tuple[PtyFixture, JsonLinesController | ScpiInstrument, threading.Thread]:
    """Start a simulator on a thread (tests use this); returns the pty, the device and its thread."""
    pty_kw = {k: kw.pop(k) for k in ("link", "seed", "garbage_rate", "disconnect_every", "disconnect_for") if k in kw}
    pty = PtyFixture(**pty_kw)
    device = JsonLinesController(pty, **kw) if protocol == "jsonl" else ScpiInstrument(pty, **kw)
    thread = threading.Thread(target=device.run, name=f"simulator-{protocol}", daemon=True)
    thread.start()
    return pty, device, thread
