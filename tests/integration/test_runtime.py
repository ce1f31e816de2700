"""The agent as a process: run it on a config with the simulated fixture, look at it from outside."""

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import ROOT, cli_cmd, free_port, run_cli


def start_agent(cfg, *extra):
    return subprocess.Popen(cli_cmd("run", "-c", str(cfg), *extra), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_http(url, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return get(url)
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def counters(cfg):
    events = json.loads(run_cli("events", "-c", str(cfg), "--type", "asset.counters", "--limit", "100000",
                                "--json", check=True).stdout)
    return [(e["payload"]["running_count"], e["payload"]["total_count"]) for e in events]


def test_agent_runs_serves_metrics_and_health_and_stops_on_sigterm(write_config):
    port = free_port()
    # WATS configured but without a token: the uplink holds its events in the journal and says why
    cfg = write_config('[sinks.wats]\nurl = "https://wats.invalid"\ndefault_process_code = 10\n'
                       'default_part_number = "PN"\nrequire_clock_sync = false\n'
                       'token_env = "FIXTURE_AGENT_TEST_NO_SUCH_TOKEN"\n', simulated=True, metrics_port=port)
    proc = start_agent(cfg)
    try:
        code, body = wait_http(f"http://127.0.0.1:{port}/healthz")
        assert code == 200
        health = json.loads(body)
        assert health["status"] in ("ok", "degraded") and health["station"] == "test-station"
        time.sleep(1.0)
        code, text = get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200
        assert 'fixture_agent_events_published_total{type="test.result"}' in text
        assert 'fixture_agent_subscriber_backlog{subscriber="wats"}' in text
        assert get(f"http://127.0.0.1:{port}/nope")[0] == 404
        status = json.loads(run_cli("status", "-c", str(cfg), "--json", check=True).stdout)
        assert status["agent_running"] and status["agent_pid"] == proc.pid
        [wats] = status["subscribers"]
        assert wats["name"] == "wats" and wats["state"] == "paused" and wats["backlog"] > 0
        assert "no WATS token" in wats["last_error"]
        assert "asset.telemetry" in status["wats"]["not_sent"] and "test.result" in status["wats"]["sends"]
        text = run_cli("status", "-c", str(cfg), check=True).stdout
        assert "not sent to WATS: " in text and "asset.telemetry" in text.split("not sent to WATS: ")[1]
        assert any("no WATS token" in w for w in json.loads(get(f"http://127.0.0.1:{port}/healthz")[1])["warnings"])
        # a script can publish while the agent runs
        out = run_cli("publish", "-c", str(cfg), "--type", "custom", "--payload", '{"from": "script"}', check=True)
        assert len(out.stdout.strip()) == 36
        # a second agent on the same data dir is refused
        second = run_cli("run", "-c", str(cfg), "--for", "1")
        assert second.returncode == 75 and f"pid {proc.pid}" in second.stderr  # EX_TEMPFAIL
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "stopping" in err


def test_metrics_bind_to_loopback_only(write_config):
    port = free_port()
    cfg = write_config(simulated=False, metrics_port=port)
    proc = start_agent(cfg)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        listening = open("/proc/net/tcp").read().splitlines()[1:]
        mine = [l.split()[1] for l in listening if l.split()[1].endswith(f":{port:04X}") and l.split()[3] == "0A"]
        assert mine == [f"0100007F:{port:04X}"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_counters_survive_restarts_and_never_go_backwards(write_config):
    cfg = write_config(simulated=True)
    for _ in range(2):
        run_cli("run", "-c", str(cfg), "--for", "0.8", check=True)
    proc = start_agent(cfg)
    time.sleep(1.0)
    proc.kill()  # and once without a clean stop
    proc.wait()
    run_cli("run", "-c", str(cfg), "--for", "0.8", check=True)
    seen = counters(cfg)
    assert len(seen) >= 8
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # strictly increasing across all four runs
    assert seen[0] == (1, 1) and all(r == t for r, t in seen)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread it kills
def test_a_thread_that_dies_stops_the_agent_for_the_service_manager_to_restart(write_config, caplog):
    """A library's thread dying of an unexpected exception (paho's network loop did, of an OSError from sleep)
    left that part of the agent silently dead while /healthz said ok. The agent now stops with EX_SOFTWARE so
    systemd's Restart=always starts it again whole; a thread that ends normally changes nothing."""
    import threading

    from agent.config import load_config
    from agent.runtime import EX_SOFTWARE, Agent

    cfg = write_config(simulated=True, metrics_port=free_port())
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    hook = threading.excepthook
    fine = threading.Timer(0.5, lambda: None)

    def die():
        raise OSError(22, "Invalid argument")

    boom = threading.Timer(1.5, die)
    boom.name = "paho-mqtt-client-test"
    fine.start()
    boom.start()
    started = time.monotonic()
    try:
        code = Agent(load_config(cfg)).run(duration=30)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert code == EX_SOFTWARE and time.monotonic() - started < 15
    assert "thread paho-mqtt-client-test died (OSError" in caplog.text
    assert threading.excepthook is hook  # put back
    # started again, it carries on from its journal
    code = Agent(load_config(cfg)).run(duration=1)
    assert code == 0
