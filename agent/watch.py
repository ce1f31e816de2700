"""``fixture-agent status --watch``: each subscriber's backlog as it drains, refreshed until Ctrl-C.

The technician at the line who has just fixed a WATS outage wants to see the backlog go down, how fast, and when it
will be empty; or, if it does not go down, why. ``status`` answers once; this answers every ``--interval`` seconds.

It reads the journal exactly as ``status`` does, from another process and read-only
(``runtime.journal_stats_readonly``: a ``mode=ro`` connection per refresh, never a ``Journal``, never a checkpoint),
so it can run beside the agent, or while it is stopped, for as long as anyone likes without touching what the agent
writes.

What it computes, per subscriber, from the last ``WINDOW`` samples (not from the agent's own counters, which another
process cannot see):

* rate: the backlog's change per second between the window's first and last sample (events arriving and events
  sent, together; negative while it drains);
* time to empty: backlog / drain rate, only while it drains;
* otherwise "growing" (the cursor moves, but events arrive faster than they go), "stalled: <state>: <last error>"
  (the cursor has not moved across the window: nothing goes out, and the subscriber's state and last error say why),
  or "level" (it sends as fast as events arrive).

On a terminal it redraws one screen in place with a bar per subscriber (how much of the backlog has drained since it
was last at its peak); on a pipe or file it prints plain lines with a time stamp, no escape codes, so it can be
logged or grepped; with ``--json``, one JSON object per refresh. Text the journal holds (names, states, last errors
that quote a device or a server) goes through ``agent.terminal.printable`` before it reaches a terminal.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sqlite3
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, TextIO

from .terminal import printable

if TYPE_CHECKING:
    from .config import Config

#: samples the rate is taken over (the newest and the four before it: 8 s at the default 2 s interval)
WINDOW = 5
DEFAULT_INTERVAL = 2.0
MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0
BAR_WIDTH = 24

# the only escape sequences this module writes (a terminal, never a pipe)
HOME, CLEAR_SCREEN, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[2J", "\x1b[K", "\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


@dataclass(frozen=True)
class Point:
    """One sample of one subscriber: when (monotonic seconds), its backlog, and its cursor."""

    t: float
    backlog: int
    cursor: int


@dataclass(frozen=True)
class Trend:
    """What the window says of one subscriber's backlog."""

    kind: str  # empty | measuring | draining | growing | stalled | level
    rate: float | None  # backlog change per second (negative: draining); None until two samples
    send_rate: float | None  # cursor advance per second: what the subscriber got through
    seconds_to_empty: float | None  # only while draining


@dataclass
class Track:
    """The last ``WINDOW`` samples of one subscriber, and the backlog's peak since it was last empty (the bar's
    100 %: a drain is shown as the part of the peak already gone)."""

    window: int = WINDOW
    points: deque[Point] = field(default_factory=deque)
    peak: int = 0

    def add(self, point: Point) -> None:
        self.points.append(point)
        while len(self.points) > max(2, self.window):
            self.points.popleft()
        self.peak = 0 if point.backlog == 0 else max(self.peak, point.backlog)

    def trend(self) -> Trend:
        last = self.points[-1]
        first = self.points[0]
        dt = last.t - first.t
        if len(self.points) < 2 or dt <= 0:
            return Trend("empty" if last.backlog == 0 else "measuring", None, None, None)
        rate = (last.backlog - first.backlog) / dt
        moved = last.cursor - first.cursor  # a cursor set back (the subscriber re-registered) moved nothing
        send_rate = max(moved, 0) / dt
        if last.backlog == 0:
            return Trend("empty", rate, send_rate, None)
        if rate < 0:
            return Trend("draining", rate, send_rate, last.backlog / -rate)
        if moved <= 0:
            return Trend("stalled", rate, send_rate, None)
        return Trend("growing" if rate > 0 else "level", rate, send_rate, None)

    def fraction_drained(self) -> float:
        last = self.points[-1].backlog
        return 1.0 if last == 0 or self.peak == 0 else 1.0 - last / self.peak


@dataclass(frozen=True)
class Row:
    """One subscriber as a frame shows it."""

    name: str
    state: str
    last_error: str | None
    backlog: int
    oldest_s: float
    dead_letters: int
    trend: Trend
    drained: float  # 0..1 of the peak
    peak: int


class Watcher:
    """Samples in, rows out: the part of ``--watch`` that has no clock, terminal or journal of its own."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.tracks: dict[str, Track] = {}

    def sample(self, t: float, subscribers: list[dict[str, Any]]) -> list[Row]:
        seen = set()
        rows = []
        for s in subscribers:
            name = str(s["name"])
            seen.add(name)
            track = self.tracks.setdefault(name, Track(self.window))
            track.add(Point(t, int(s["backlog"]), int(s["cursor"])))
            rows.append(Row(name, s.get("state") or "-", s.get("last_error"), int(s["backlog"]),
                            float(s.get("oldest_unacked_age_s") or 0.0), int(s.get("dead_letters") or 0),
                            track.trend(), track.fraction_drained(), track.peak))
        for gone in set(self.tracks) - seen:  # unregistered (subscribers remove): start afresh if it comes back
            del self.tracks[gone]
        return rows


# ------------------------------------------------------------------------------------------------- wording
def duration(seconds: float) -> str:
    """A time to empty as a person reads it: 45s, 3m20s, 2h05m, 3.5d."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400 * 2:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s / 86400:.1f}d"


def _per_s(rate: float) -> str:
    rate = abs(rate)
    return f"{rate:,.0f}/s" if rate >= 100 else (f"{rate:.1f}/s" if rate >= 1 else f"{rate:.2f}/s")


def verdict(row: Row) -> str:
    """The row's trend in words; a stalled subscriber's state and last error are quoted escaped."""
    t = row.trend
    if t.kind == "empty":
        return "empty: caught up" + (f", sending {_per_s(t.send_rate)}" if t.send_rate else "")
    if t.kind == "measuring":
        return "measuring..."
    if t.kind == "draining":
        assert t.rate is not None and t.seconds_to_empty is not None
        return f"draining {_per_s(t.rate)}, empty in {duration(t.seconds_to_empty)}"
    if t.kind == "stalled":
        why = printable(row.state) + (f": {printable(row.last_error)}" if row.last_error else "")
        return f"stalled: {why}"
    assert t.rate is not None and t.send_rate is not None
    if t.kind == "growing":
        return f"growing {_per_s(t.rate)} (sending {_per_s(t.send_rate)}, slower than events arrive)"
    return f"level: sending {_per_s(t.send_rate)}, as fast as events arrive"


def bar(fraction: float, width: int, unicode: bool) -> str:
    full, empty = ("\u2588", "\u2591") if unicode else ("#", "-")
    n = min(width, max(0, int(fraction * width + 1e-9)))
    return "[" + full * n + empty * (width - n) + "]"


def plain_line(stamp: str, row: Row) -> str:
    """One subscriber on a pipe: time, name, backlog, state, then the verdict; grep-able, no escape codes."""
    return (f"{stamp} {printable(row.name)} backlog {row.backlog} state {printable(row.state)} "
            f"oldest {duration(row.oldest_s)} dead_letters {row.dead_letters}  {verdict(row)}")


def screen(header: list[str], rows: list[Row], width: int, unicode: bool) -> list[str]:
    """The lines of one terminal frame (each cut to ``width``: a wrapped line would break the redraw)."""
    lines = list(header)
    if not rows:
        lines.append("  no subscribers in the journal (no sink configured, or the agent has not run yet)")
    name_w = min(20, max([len(printable(r.name)) for r in rows] + [4]))
    bar_w = max(8, min(BAR_WIDTH, width - name_w - 50))
    for r in rows:
        lines.append("")
        lines.append(f"  {printable(r.name):<{name_w}}  {printable(r.state):<12} backlog {r.backlog:>9,}  "
                     f"{bar(r.drained, bar_w, unicode)} {r.drained * 100:3.0f}% of {r.peak:,}")
        lines.append(f"  {'':<{name_w}}  {verdict(r)}")
        lines.append(f"  {'':<{name_w}}  oldest unacked {duration(r.oldest_s)}, dead letters {r.dead_letters}")
    return [line[: max(1, width - 1)] for line in lines]


def json_doc(at: str, rows: list[Row]) -> dict[str, Any]:
    return {"at": at, "subscribers": [
        {"name": r.name, "state": r.state, "last_error": r.last_error, "backlog": r.backlog,
         "oldest_unacked_age_s": r.oldest_s, "dead_letters": r.dead_letters, "trend": r.trend.kind,
         "rate_per_s": r.trend.rate, "send_rate_per_s": r.trend.send_rate,
         "seconds_to_empty": r.trend.seconds_to_empty} for r in rows]}


# ---------------------------------------------------------------------------------------------------- loop
class _Stop(Exception):
    """SIGTERM or SIGHUP (the terminal closed): leave as Ctrl-C does, the cursor shown again."""


def check_interval(interval: float) -> str | None:
    """What is wrong with ``--interval``, or None."""
    if not math.isfinite(interval) or not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        return f"--interval must be seconds between {MIN_INTERVAL:g} and {MAX_INTERVAL:g} (got {interval:g})"
    return None


def watch(cfg: "Config", interval: float = DEFAULT_INTERVAL, *, as_json: bool = False,
          agent_pid: Callable[[], int | None] = lambda: None, out: TextIO | None = None) -> int:
    """Refresh every ``interval`` seconds until Ctrl-C (exit 0). ``agent_pid`` says who holds the journal."""
    from .runtime import journal_stats_readonly

    out = out or sys.stdout
    problem = check_interval(interval)
    if problem:
        print(f"fixture-agent status: {problem}", file=sys.stderr)
        return 2
    tty = out.isatty() and not as_json
    unicode = (getattr(out, "encoding", "") or "").lower().replace("-", "") in ("utf8", "utf8mb4")
    watcher = Watcher()
    said = ""  # on a pipe, a journal message is printed when it changes, not at every refresh

    def stop(signum: int, frame: Any) -> None:
        raise _Stop()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        if tty:
            out.write(HIDE_CURSOR + CLEAR_SCREEN)
        else:
            print(f"watching {cfg.journal_path} every {interval:g} s (station {printable(cfg.agent.station)}); "
                  "Ctrl-C to stop", file=out if not as_json else sys.stderr, flush=True)
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            wall = datetime.now().astimezone()
            try:
                stats = journal_stats_readonly(cfg)
                message = "" if stats is not None else f"no journal yet at {cfg.journal_path}"
            except sqlite3.Error as e:  # the agent creating it, or a file that is not a journal: say so, go on
                stats, message = None, f"journal not readable ({cfg.journal_path}): {e}"
            rows = watcher.sample(now, stats.subscribers) if stats is not None else []
            pid = agent_pid()
            if as_json:
                doc = json_doc(wall.isoformat(timespec="seconds"), rows)
                doc.update(agent_pid=pid, message=message or None)
                out.write(json.dumps(doc) + "\n")
            elif tty:
                width = shutil.get_terminal_size().columns
                head = [f"fixture-agent status --watch   station {printable(cfg.agent.station)}   "
                        f"agent {'running, pid ' + str(pid) if pid else 'NOT RUNNING'}   "
                        f"{wall:%H:%M:%S}, every {interval:g} s, Ctrl-C to stop"]
                if stats is not None:
                    head.append(f"journal {stats.events:,} events, {stats.used_bytes / 1e6:.1f} of "
                                f"{stats.max_bytes / 1e6:.0f} MB, dead letters {stats.dead_letters}")
                if message:
                    head.append(printable(message))
                lines = screen(head, rows, width, unicode) if stats is not None else head
                out.write(HOME + "".join(line + CLEAR_LINE + "\n" for line in lines) + CLEAR_BELOW)
            else:
                if message and message != said:
                    out.write(printable(message) + "\n")
                said = message
                stamp = f"{wall:%H:%M:%S}"
                out.write("".join(plain_line(stamp, r) + "\n" for r in rows))
            out.flush()
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            if next_at < time.monotonic() - interval:  # a slow read (a huge journal): do not try to catch up
                next_at = time.monotonic()
    except (KeyboardInterrupt, _Stop):
        return 0
    except BrokenPipeError:  # ``| head``: the reader has gone; leave quietly, as other tools do
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if tty:
            try:
                out.write(SHOW_CURSOR)
                out.flush()
            except OSError:
                pass
