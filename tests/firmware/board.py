"""A MicroPython firmware example running as its own process (``run_board.py``), driven like the board it is."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.firmware.umqtt_package import umqtt_simple_dir

HERE = Path(__file__).resolve().parent


class Board:
    def __init__(self, firmware: Path, flash: Path, config: dict, uarts: dict[int, str] | None = None) -> None:
        self.firmware, self.flash, self.uarts = firmware, flash, uarts or {}
        flash.mkdir(parents=True, exist_ok=True)
        (flash / "config.json").write_text(json.dumps(config))
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self._acks: queue.Queue[str] = queue.Queue()

    def boot(self, ready: str = "device ") -> "Board":
        """Power on: main.py runs from the start; what is on flash is what the last run left there. Returns once
        the firmware printed ``ready`` (its interrupts are set up: a press before that is lost, as on a board)."""
        since = len(self.output)
        args = [sys.executable, str(HERE / "run_board.py"), str(self.firmware), str(self.flash),
                str(umqtt_simple_dir())] + [f"{k}={v}" for k, v in self.uarts.items()]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + 30
        while not any(line.startswith(ready) for line in self.output[since:]):
            assert time.monotonic() < deadline and self.proc.poll() is None, self.log()
            time.sleep(0.02)
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.output.append(line.rstrip("\n"))
            if line.startswith("ok "):
                self._acks.put(line)

    def send(self, command: str, timeout: float = 30) -> None:
        assert self.proc and self.proc.poll() is None, self.log()
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self._acks.get(timeout=timeout)

    def press(self, pin: int, n: int = 1) -> None:
        self.send(f"press {pin} {n}")

    def set_uv(self, pin: int, microvolts: int) -> None:
        self.send(f"uv {pin} {microvolts}")

    def power_cut(self) -> None:
        """SIGKILL: no last word from the firmware, the broker's last will speaks for it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        return "\n".join(self.output[-40:])

    def alive(self) -> bool:
        return bool(self.proc) and self.proc.poll() is None
