"""``status --watch``'s arithmetic and wording (agent/watch.py) on samples written out by hand: the rate over the
window, the time to empty only while draining, growing / stalled / level, the bar, and device text escaped."""

from __future__ import annotations

import math

import pytest

from agent.watch import (CLEAR_LINE, Watcher, bar, check_interval, duration, json_doc, plain_line, screen,
                         verdict)

NASTY = "\x1b[2J\x1b]0;owned\x07\u202eevil"


def sub(backlog: int, cursor: int, state: str = "running", last_error: str | None = None, name: str = "wats") -> dict:
    return {"name": name, "backlog": backlog, "cursor": cursor, "state": state, "last_error": last_error,
            "oldest_unacked_age_s": 12.0, "dead_letters": 0}


def feed(samples: list[tuple[float, int, int]], **kw) -> list:
    w = Watcher(window=5)
    rows = []
    for t, backlog, cursor in samples:
        rows = w.sample(t, [sub(backlog, cursor, **kw)])
    return rows


def test_draining_rate_is_over_the_window_and_time_to_empty_follows():
    # 100 events a second go for 4 s, then the window (5 samples) is 1..5: (600 - 200) / 4 s
    [row] = feed([(0, 1000, 0), (1, 600, 400), (2, 500, 500), (3, 400, 600), (4, 300, 700), (5, 200, 800)])
    assert row.trend.kind == "draining"
    assert row.trend.rate == pytest.approx(-100.0)
    assert row.trend.send_rate == pytest.approx(100.0)
    assert row.trend.seconds_to_empty == pytest.approx(2.0)
    assert verdict(row) == "draining 100/s, empty in 2s"
    assert row.peak == 1000 and row.drained == pytest.approx(0.8)


def test_growing_stalled_level_and_empty():
    growing = feed([(0, 100, 0), (2, 140, 20)])[0]  # sends 10/s while 30/s arrive
    assert growing.trend.kind == "growing" and growing.trend.seconds_to_empty is None
    assert verdict(growing) == "growing 20.0/s (sending 10.0/s, slower than events arrive)"

    stalled = feed([(0, 100, 50), (1, 110, 50)], state="retrying",
                   last_error="TransientError: WATS connection failed")[0]
    assert stalled.trend.kind == "stalled" and stalled.trend.seconds_to_empty is None
    assert verdict(stalled) == "stalled: retrying: TransientError: WATS connection failed"
    flat = feed([(0, 100, 50), (1, 100, 50)], state="paused")[0]  # nothing arrives, nothing goes: still stalled
    assert verdict(flat) == "stalled: paused"

    level = feed([(0, 30, 100), (2, 30, 140)])[0]
    assert level.trend.kind == "level" and verdict(level) == "level: sending 20.0/s, as fast as events arrive"

    empty = feed([(0, 5, 0), (1, 0, 5)])[0]
    assert empty.trend.kind == "empty" and empty.drained == 1.0 and empty.peak == 0
    assert verdict(empty) == "empty: caught up, sending 5.0/s"
    assert feed([(0, 7, 0)])[0].trend.kind == "measuring"  # one sample says nothing of a rate
    assert feed([(0, 0, 0)])[0].trend.kind == "empty"


def test_peak_restarts_after_empty_and_a_subscriber_that_goes_starts_afresh():
    w = Watcher(window=5)
    w.sample(0, [sub(500, 0)])
    w.sample(1, [sub(0, 500)])
    [row] = w.sample(2, [sub(40, 500)])
    assert row.peak == 40 and row.drained == 0.0
    w.sample(3, [])  # unregistered
    [row] = w.sample(4, [sub(40, 0)])  # registered again, cursor from 0: one sample, no rate from the old one
    assert row.trend.kind == "measuring"


def test_cursor_set_back_counts_as_not_sending():
    [row] = feed([(0, 10, 900), (1, 12, 3)])
    assert row.trend.kind == "stalled" and row.trend.send_rate == 0.0


def test_device_text_is_escaped_on_the_terminal_and_the_pipe_but_exact_in_json():
    [row] = feed([(0, 10, 5), (1, 11, 5)], state="retrying", last_error=f"server said {NASTY}", name="wats" + NASTY)
    line = plain_line("12:00:00", row)
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
    assert "\\x1b[2J" in line and "\\u202e" in line
    frame = screen(["head"], [row], 200, unicode=True)
    assert not any(c in "".join(frame) for c in "\x1b\x07\u202e")
    doc = json_doc("now", [row])
    assert doc["subscribers"][0]["last_error"] == f"server said {NASTY}"


def test_screen_lines_fit_the_width_and_the_bar_fills():
    rows = feed([(0, 1000, 0), (1, 500, 500)], last_error="x" * 500)
    for width in (40, 80, 200):
        lines = screen(["fixture-agent status --watch " + "y" * 300], rows, width, unicode=False)
        assert all(len(line) < width for line in lines)
        assert all(CLEAR_LINE not in line for line in lines)
    assert bar(0.5, 10, unicode=False) == "[#####-----]"
    assert bar(1.0, 4, unicode=True) == "[\u2588\u2588\u2588\u2588]"
    assert bar(0.0, 4, unicode=True) == "[\u2591\u2591\u2591\u2591]"
    assert "[" + "#" * 12 + "-" * 12 + "]  50% of 1,000" in screen([], rows, 120, unicode=False)[1]


def test_duration_and_interval():
    assert [duration(s) for s in (0.4, 45, 200, 7500, 90000, 400000)] == ["0s", "45s", "3m20s", "2h05m", "25h00m",
                                                                            "4.6d"]
    assert check_interval(2.0) is None and check_interval(0.1) is None
    for bad in (0.0, -1.0, 0.05, 4000.0, math.nan, math.inf):
        assert "--interval must be seconds between 0.1 and 3600" in (check_interval(bad) or "")
