"""Shared test fixtures: a journal in a temp dir, a config writer, and a way to run the real CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.events.journal import Journal

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "journal.db", maintenance_interval=0.1)
    yield j
    j.close()


def wait_for(pred, timeout: float = 20.0, interval: float = 0.01) -> bool:
    """Poll ``pred`` until it is true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def write_config(tmp_path):
    def write(extra: str = "", *, simulated: bool = False, metrics_port: int | None = None, name="agent.toml",
              max_bytes: str = "64MB") -> Path:
        text = textwrap.dedent(f"""
            [agent]
            station = "test-station"
            location = "Line 1"
            purpose = "Test"
            data_dir = "{tmp_path / 'data'}"
            [journal]
            max_bytes = "{max_bytes}"
            [metrics]
            enabled = {str(metrics_port is not None).lower()}
            listen = "127.0.0.1:{metrics_port or 0}"
        """)
        if simulated:
            text += textwrap.dedent("""
                [sources.simulated]
                interval = "100ms"
                seed = 7
                telemetry_every = 2
            """)
        path = tmp_path / name
        path.write_text(text + textwrap.dedent(extra))
        return path

    return write


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def run_cli(*args: str, input: str | bytes | None = None, timeout: float = 60, check: bool = False):
    kw = {"text": True} if not isinstance(input, bytes) else {}
    proc = subprocess.run(cli_cmd(*args), input=input, capture_output=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}: {proc.stderr}")
    return proc
