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
    def __init__(self, firmware: Path, flash: Path, config: dict, *, uart_fds: dict[int, int] | None = None,
                 world: list[str] | None = None, umqtt: bool = True) -> None:
        """``uart_fds``: UART id → an fd of this process it is wired to (a pty master); ``world``: commands that
        hold before power-on (what the ADC pins read, which switches are closed); ``umqtt``: install umqtt.simple."""
        self.firmware, self.flash, self.uart_fds, self.world = firmware, flash, uart_fds or {}, world or []
        self.umqtt = umqtt
        flash.mkdir(parents=True, exist_ok=True)
        (flash / "config.json").write_text(json.dumps(config))
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self._acks: queue.Queue[str] = queue.Queue()

    def boot(self) -> "Board":
        """Power on: main.py runs from the start; what is on flash is what the last run left there. Returns once
        the firmware printed that it is up (its interrupts are set: a press before that is lost, as on a board)."""
        since = len(self.output)
        args = [sys.executable, str(HERE / "run_board.py"), str(self.firmware), str(self.flash),
                str(umqtt_simple_dir()) if self.umqtt else ""] + [f"{k}=fd:{v}" for k, v in self.uart_fds.items()]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, pass_fds=tuple(self.uart_fds.values()),
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", "BOARD_WORLD": ";".join(self.world)})
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + 30
        while not any(": up," in line for line in self.output[since:]):
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

    def set_level(self, pin: int, level: int) -> None:
        self.send(f"level {pin} {level}")

    def power_cut(self) -> None:
        """SIGKILL: no last word from the firmware, the broker's last will speaks for it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        return "\n".join(self.output[-40:])

    def alive(self) -> bool:
        return bool(self.proc) and self.proc.poll() is None
