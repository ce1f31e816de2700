"""The agent as its own process, and what its CLI says of it: what the integration and firmware tests share."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.conftest import ROOT, cli_cmd, run_cli


def start_agent(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen(cli_cmd("run", "-c", str(cfg)), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def stop_agent(agent: subprocess.Popen, timeout: float = 30) -> str:
    """SIGTERM, as systemd stops it; the agent must exit 0. Returns what it logged."""
    agent.send_signal(signal.SIGTERM)
    try:
        _, err = agent.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        agent.kill()
        _, err = agent.communicate()
    assert agent.returncode == 0, err
    return err


def events(cfg: Path, type: str | None = None) -> list[dict]:
    args = ["events", "-c", str(cfg), "--json", "--limit", "1000000"] + (["--type", type] if type else [])
    return json.loads(run_cli(*args, check=True).stdout)


def dead_letters(cfg: Path) -> list[dict]:
    return json.loads(run_cli("dlq", "list", "-c", str(cfg), "--json", "--limit", "1000000", check=True).stdout)


def status(cfg: Path) -> dict:
    return json.loads(run_cli("status", "-c", str(cfg), "--json", check=True).stdout)


def source_status(cfg: Path, name: str) -> dict:
    """What ``status`` says of one source, e.g. ``mqtt:mqtt`` ({} until the agent has created its journal)."""
    proc = run_cli("status", "-c", str(cfg), "--json")
    if proc.returncode != 0:
        return {}
    return json.loads(proc.stdout).get("sources", {}).get(name, {})
