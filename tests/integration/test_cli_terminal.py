"""``dlq list --body`` and ``events`` print what devices sent: control sequences must reach the operator's terminal
escaped, never raw (issue 23 item 10)."""

from __future__ import annotations

import json

from tests.conftest import run_cli

#: clears the screen, sets the window title, rewrites the line, hides text in a bidi override
NASTY = "\x1b[2J\x1b]0;owned\x07\rOK\u202e\x9b31m"


def _raw_controls(text: str) -> list[str]:
    return sorted({c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) <= 0x9f or c == "\u202e"})


def test_dlq_list_and_events_escape_terminal_control_sequences(write_config):
    cfg = str(write_config())
    bad = b"{\"unit_id\": \"" + NASTY.encode() + b"\", broken\n"
    good = json.dumps({"type": "test.result", "source": "dev" + NASTY,
                       "payload": {"unit_id": "SN" + NASTY, "result": "pass",
                                   "start_time": "2026-01-01T00:00:00Z"}}) + "\n"
    proc = run_cli("publish", "-c", cfg, "--stdin", input=bad + good.encode())
    assert proc.returncode == 1, proc.stderr

    listed = run_cli("dlq", "list", "-c", cfg, "--body", check=True).stdout
    assert "owned" in listed  # the body is shown ...
    assert _raw_controls(listed) == [], listed  # ... with its controls escaped
    assert "\\x1b[2J" in listed and "\\x07" in listed and "\\u202e" in listed and "\\x9b" in listed

    shown = run_cli("events", "-c", cfg, check=True).stdout
    assert "SN" in shown and _raw_controls(shown) == [], shown
    assert "\\x1b]0;owned" in shown

    # machine-readable output keeps the exact text (JSON escapes it by itself)
    [event] = json.loads(run_cli("events", "-c", cfg, "--json", check=True).stdout)
    assert event["payload"]["unit_id"] == "SN" + NASTY
