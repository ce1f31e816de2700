"""Boot a MicroPython firmware example under CPython as a board would: its files on "flash" (a directory that is
the working directory), ``main.py`` run at boot, stand-ins for ``machine`` and ``network`` only, the real
``umqtt.simple``. The test plays the world around the board with lines on stdin, each answered ``ok``:

    press <pin> <n>        n actuations of a switch to GND (falling edges, with contact bounce)
    uv <pin> <microvolts>  what an ADC pin reads
    wifi up|down           the access point comes and goes

    python run_board.py <firmware dir> <flash dir> <umqtt dir> [<uart id>=<path> ...]
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
firmware, flash, umqtt_dir = (os.path.abspath(p) for p in sys.argv[1:4])
sys.path[:0] = [str(HERE / "micropython"), umqtt_dir, firmware]
os.chdir(flash)

import machine  # noqa: E402  (the stand-in, found first on the path set above)
import network  # noqa: E402

for spec in sys.argv[4:]:
    uart, path = spec.split("=", 1)
    machine.UART_PATHS[int(uart)] = path


def press(pin: int, n: int) -> None:
    for _ in range(n):
        for level in (0, 1, 0, 1):  # a bouncing contact: two falling edges a millisecond apart, one press
            machine.drive(pin, level)
            time.sleep(0.001)
        time.sleep(0.02)


def control() -> None:
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "press":
            press(int(args[0]), int(args[1]))
        elif cmd == "uv":
            machine.set_uv(int(args[0]), int(args[1]))
        elif cmd == "wifi":
            network.link_up = args[0] == "up"
        print("ok", cmd, flush=True)


threading.Thread(target=control, daemon=True).start()
runpy.run_path(os.path.join(firmware, "main.py"), run_name="__main__")
