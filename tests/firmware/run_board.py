"""Boot a MicroPython firmware example under CPython as a board would: its files on "flash" (a directory that is
the working directory), ``main.py`` run at boot, stand-ins for ``machine`` and ``network`` only, the real
``umqtt.simple``. The test plays the world around the board with lines on stdin, each answered ``ok``:

    press <pin> <n>        n actuations of a switch to GND (falling edges, with contact bounce)
    uv <pin> <microvolts>  what an ADC pin reads
    level <pin> <0|1>      a switch on an input closes (0, to GND) or opens (1)
    wifi up|down           the access point comes and goes

    python run_board.py <firmware dir> <flash dir> <umqtt dir or ""> [<uart id>=<path or fd:N> ...]

``BOARD_WORLD`` (commands separated by ``;``) is how the world is before power-on.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
firmware, flash, umqtt_dir = (os.path.abspath(p) if p else "" for p in sys.argv[1:4])
# the stand-ins, umqtt, the example, and the modules the examples share (copied onto the board beside them)
sys.path[:0] = [p for p in (str(HERE / "micropython"), umqtt_dir, firmware,
                             os.path.join(firmware, "..", "micropython_common")) if p]
os.chdir(flash)

import machine  # noqa: E402  (the stand-in, found first on the path set above)
import network  # noqa: E402

for spec in sys.argv[4:]:
    uart, path = spec.split("=", 1)
    machine.UART_PATHS[int(uart)] = path


def press(pin: int, n: int) -> None:
    """n presses of a bouncing contact: it bounces when it closes and again when it opens."""
    for _ in range(n):
        for level, hold in ((0, 0.001), (1, 0.001), (0, 0.05), (1, 0.001), (0, 0.001), (1, 0.05)):
            machine.drive(pin, level)
            time.sleep(hold)


def world(line: str) -> str:
    cmd, *args = line.split()
    if cmd == "press":
        press(int(args[0]), int(args[1]))
    elif cmd == "uv":
        machine.set_uv(int(args[0]), int(args[1]))
    elif cmd == "level":
        machine.drive(int(args[0]), int(args[1]))
    elif cmd == "wifi":
        network.link_up = args[0] == "up"
    else:
        raise SystemExit(f"run_board: unknown command {line!r}")
    return cmd


def control() -> None:
    for line in sys.stdin:
        print("ok", world(line), flush=True)


for line in filter(None, os.environ.get("BOARD_WORLD", "").split(";")):
    world(line)
threading.Thread(target=control, daemon=True).start()
runpy.run_path(os.path.join(firmware, "main.py"), run_name="__main__")
