"""The agent as its own process, and what its CLI says of it: what the integration and firmware tests share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import ROOT, cli_cmd, run_cli


def start_agent(cfg: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The agent as a process; its log goes to a file (``agent.log_file``). A pipe read only at the stop filled
    after about 570 WATS reports (httpx logs a line per request) and froze the agent mid-send."""
    log = tempfile.TemporaryFile(mode="w+", prefix="agent-log-")
    agent = subprocess.Popen(cli_cmd("run", "-c", str(cfg)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
                             text=True, env=None if env is None else {**os.environ, **env})
    agent.log_file = log  # type: ignore[attr-defined]
    return agent


def agent_log(agent: subprocess.Popen) -> str:
    log = getattr(agent, "log_file", None)
    if log is None:  # started by the test itself, with its own stderr
        return ""
    log.flush()
    log.seek(0)
    return log.read()


def stop_agent(agent: subprocess.Popen, timeout: float = 30) -> str:
    """SIGTERM, as systemd stops it; the agent must exit 0. Returns what it logged."""
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
    err = agent_log(agent)
    if getattr(agent, "log_file", None) is not None:
        agent.log_file.close()  # type: ignore[attr-defined]
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
