"""The core figures on the Pi's own architectures, under qemu-user emulation (issue 22).

    .venv/bin/python bench/emulated.py --arch arm64 --root ROOT --python /opt/fixture-agent/venv/bin/python
    .venv/bin/python bench/emulated.py --arch native        # the same loops natively, for comparison

An emulator's absolute numbers say nothing about a Pi (qemu translates every instruction; the kernel's fsync is
the host's), so every figure here is a ratio of the agent to the bare loop beside it, both run by the same
emulated Python in the same root: blocking publish (8 threads) against a bare writer thread committing what
blocked threads hand it, publish_many against a bare executemany, and a WATS drain against a bare httpx POST
loop. The loops are bench/run.py's and bench/wats_drain.py's own; only where they run is new. The WATS stand-in
runs natively on the host (loopback is shared with the chroot), so both sides of the drain post to the same
server and the ratio is what the uplink's own work costs per report under emulation.

--root is a root of that architecture where the agent is installed (tests/deploy/test_emulated.py converges one
with the Ansible role and runs this against it, writing bench/results/emulated.json); the result is merged into
bench/results/emulated.json under the architecture's name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "emulated.json"
IN_ROOT = "/opt/fixture-agent-bench"  # where the bench modules are copied inside the root
# Emulated code runs several times slower: smaller counts than bench/run.py's full run, the same shape.
SIZES = {"per_thread": 250, "many": 20000, "batch": 1000, "reports": 600, "rounds": 3}
QUICK = {"per_thread": 50, "many": 3000, "batch": 1000, "reports": 100, "rounds": 1}


def measure(url: str, token: str, quick: bool = False) -> dict:
    """The three figures, with the Python this runs under (natively, or the emulated root's)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import bench_publish_8_threads, bench_publish_many
    from wats_drain import _agent, _bare, _events

    from agent.protocols.wsjf import Station, to_wsjf

    size = QUICK if quick else SIZES
    tmp = Path(tempfile.mkdtemp(prefix="fa-bench-emulated-"))
    try:
        blocking = bench_publish_8_threads(tmp, size["per_thread"])
        many = bench_publish_many(tmp, size["many"], size["batch"])
        events = _events(size["reports"])
        station = Station(machine_name="bench", location="Bench", purpose="Bench", process_codes={"test": 50})
        bodies = [json.dumps(to_wsjf(e, station)).encode() for e in events]
        bare, agent = [], []
        for r in range(size["rounds"]):  # interleaved, best of each, as bench/wats_drain.py
            bare.append(_bare(url, token, bodies))
            agent.append(_agent(url, token, events, tmp / f"wats-drain-{r}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    paired = sorted(a / b for a, b in zip(agent, bare))
    return {
        "machine": f"{platform.machine()}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}",
        "blocking_publish_8_threads": {
            "events": blocking["events"],
            "ratio_to_bare_blocking_group_commit": blocking["ratio_to_bare_blocking_group_commit"],
            "ratio_to_fsync_limit": blocking["ratio_to_fsync_limit"], "p99_ms": blocking["p99_ms"],
            "events_per_commit": blocking["events_per_commit"]},
        "publish_many": {"events": many["events"], "batch": many["batch"], "ratio_to_raw_executemany": many["ratio_to_raw"]},
        "wats_drain": {"reports": len(events), "ratio_to_bare_httpx": round(max(agent) / max(bare), 3),
                       "median_paired_ratio": round(paired[len(paired) // 2], 3)},
    }


class StandIn:
    """The WATS stand-in in its own native process on the host: URL and token on its first line."""

    def __enter__(self) -> tuple[str, str]:
        self.proc = subprocess.Popen([sys.executable, "-c", "from tests.wats_standin import serve; serve()"],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        url, token = self.proc.stdout.readline().split()
        return url, token

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def run_in_root(root: Path, python: str, quick: bool = False, timeout: float = 3600,
                bench: Path = ROOT / "bench") -> dict:
    """measure() inside ``root`` with ``python`` (the deployed venv's), against a stand-in on the host; ``bench``
    is where the benchmark modules are copied from (a snapshot taken with the agent's wheel, in the test)."""
    dest = root / IN_ROOT.lstrip("/") / "bench"
    shutil.rmtree(dest.parent, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in bench.glob("*.py"):
        shutil.copy(f, dest / f.name)
    with StandIn() as (url, token):
        cmd = ["chroot", str(root), python, f"{IN_ROOT}/bench/emulated.py", "--measure", url, token]
        proc = subprocess.run([*cmd, *(["--quick"] if quick else [])], capture_output=True, text=True,
                              timeout=timeout, check=False)
    shutil.rmtree(dest.parent, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the benchmark inside {root} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def record(key: str, row: dict, path: Path = RESULTS) -> dict:
    """Merge one architecture's row into bench/results/emulated.json (the other rows are kept)."""
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc["about"] = ("ratios of the agent to the bare loop beside it, both under the same emulation "
                    "(bench/emulated.py); absolute numbers under qemu mean nothing")
    doc[key] = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **row}
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="native", help="arm64, armhf (with --root and --python), or native")
    ap.add_argument("--root", type=Path, help="a root of --arch with the agent installed")
    ap.add_argument("--python", default="/opt/fixture-agent/venv/bin/python", help="the agent's Python in the root")
    ap.add_argument("--quick", action="store_true", help="small counts: checks the benchmark runs")
    ap.add_argument("--no-write", action="store_true", help=f"print only; do not update {RESULTS.relative_to(ROOT)}")
    ap.add_argument("--measure", nargs=2, metavar=("URL", "TOKEN"), help=argparse.SUPPRESS)  # inside the root
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, quick=args.quick)))
        return 0
    if args.arch == "native":
        sys.path.insert(0, str(ROOT))
        with StandIn() as (url, token):
            row = measure(url, token, quick=args.quick)
    elif args.root is None:
        sys.exit("bench/emulated.py: --arch arm64/armhf needs --root, a root of that architecture with the agent "
                 "installed (FIXTURE_AGENT_EMULATED=1 scripts/test tests/deploy/test_emulated.py makes one)")
    else:
        row = {"arch": args.arch, **run_in_root(args.root, args.python, quick=args.quick)}
    print(json.dumps(row, indent=2))
    if not args.no_write and not args.quick:
        record(args.arch, row)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
