"""``fixture-agent doctor`` as a newcomer runs it (the real CLI), against real parts: the strict WATS stand-in
accepting and refusing the token, mosquitto with a password, RabbitMQ, a SCPI instrument and a silent device on
pseudo-terminals, gpiozero's mock pins, a journal bound larger than the disk and a full disk (a small tmpfs, as
root), a corrupted journal file (left byte for byte as it was), the metrics port held by the station's own agent
and by a stranger. Secrets never appear in what it prints, even when the check they serve fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.events.ids import clock_synchronized
from tests.agent_process import source_status, start_agent, stop_agent
from tests.conftest import ROOT, free_port, run_cli, wait_for
from tests.mosquitto import Mosquitto, mosquitto_passwd
from tests.rabbitmq import RabbitMQ
from tests.wats_standin import WatsStandIn

TOKEN = "ZG9jdG9yOnMzY3IzdC10b2tlbi0xOQ"  # accepted by the stand-in
WRONG_TOKEN = "d3Jvbmc6bm90LXRoZS10b2tlbi0yMg"
BROKER_PASSWORD = "br0ker-Pa55word-doctor"
WRONG_PASSWORD = "n0t-the-br0ker-Pa55word"


def doctor(cfg: Path, timeout: float = 3) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """Run it twice, as text and as --json; returns the text run and the checks by name (from --json). The two
    must agree on the exit status."""
    text = run_cli("doctor", "-c", str(cfg), "--timeout", str(timeout))
    js = run_cli("doctor", "-c", str(cfg), "--timeout", str(timeout), "--json")
    doc = json.loads(js.stdout)
    assert js.returncode == text.returncode, (text.stdout, js.stdout)
    assert doc["ok"] == (js.returncode == 0)
    return text, {c["name"]: c for c in doc["checks"]}


def line_of(proc: subprocess.CompletedProcess, name: str) -> str:
    [line] = [l for l in proc.stdout.splitlines() if l[6:].startswith(name + " ")]
    return line


def secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def wats_section(wats: WatsStandIn, token_file: Path, codes: str = "test = 50, selftest = 90") -> str:
    return f"""
        [sinks.wats]
        url = "{wats.url}"
        token_file = "{token_file}"
        process_codes = {{ {codes} }}
        default_process_code = 50
        default_part_number = "PN-1"
        require_clock_sync = false
        timeout = "3s"
    """


@pytest.fixture
def wats():
    s = WatsStandIn(token=TOKEN)
    yield s
    s.close()


# ------------------------------------------------------------------------------------------------ the basics
def test_a_healthy_config_is_all_ok_or_warn_and_exits_0(write_config):
    cfg = write_config(metrics_port=free_port())
    proc, checks = doctor(cfg)
    assert proc.returncode == 0, proc.stdout
    assert checks["agent"]["status"] == "warn" and "not running" in checks["agent"]["message"]
    assert checks["config"]["status"] == "ok"
    assert checks["journal"]["status"] == "ok" and "no journal yet" in checks["journal"]["message"]
    assert checks["listen metrics.listen"]["status"] == "ok"
    assert checks["disk"]["status"] == "ok"
    assert checks["clock"]["status"] == ("ok" if clock_synchronized() else "warn")  # no WATS waits for it here
    # one line per check: status, name, what was found (and the fix when not ok), then a summary
    lines = proc.stdout.splitlines()
    assert len(lines) == len(checks) + 1 and lines[-1].startswith(f"{len(checks)} checks")
    assert all(l.split()[0] in ("ok", "warn", "fail") for l in lines[:-1])
    assert "->" in line_of(proc, "agent")  # a warning says what to do


def test_what_config_check_refuses_is_a_fail(write_config, tmp_path):
    token = secret_file(tmp_path / "wats.token", TOKEN)
    token.chmod(0o644)
    cfg = write_config(f"""
        [sinks.wats]
        url = "http://127.0.0.1:{free_port()}"
        token_file = "{token}"
        default_process_code = 50
        require_clock_sync = false
    """)
    proc, checks = doctor(cfg)
    assert proc.returncode == 1
    [config] = [c for n, c in checks.items() if n.startswith("config")]
    assert config["status"] == "fail" and "chmod 600" in config["message"]


def test_libraries_are_imported_only_for_configured_sections(write_config):
    cfg = write_config(metrics_port=free_port())
    code = ("import sys; from agent.config import load_config; from agent import doctor; "
            f"doctor.run(load_config({str(cfg)!r}), None); "
            "print(sorted(m for m in ('paho', 'proton', 'httpx', 'serial', 'gpiozero') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------ WATS
def test_wats_reachable_token_accepted_and_process_codes_known(write_config, tmp_path, wats):
    cfg = write_config(wats_section(wats, secret_file(tmp_path / "wats.token", TOKEN)))
    proc, checks = doctor(cfg)
    assert checks["wats.reachable"]["status"] == "ok", proc.stdout
    assert checks["wats.token"]["status"] == "ok", proc.stdout
    assert checks["wats.processes"]["status"] == "ok" and "3 configured code(s) known" in checks["wats.processes"][
        "message"]
    assert proc.returncode == 0, proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr


def test_an_unknown_process_code_is_named_with_the_codes_wats_knows(write_config, tmp_path, wats):
    cfg = write_config(wats_section(wats, secret_file(tmp_path / "wats.token", TOKEN), "test = 50, selftest = 77"))
    proc, checks = doctor(cfg)
    assert proc.returncode == 1
    c = checks["wats.processes"]
    assert c["status"] == "fail" and "sinks.wats.process_codes.selftest = 77" in c["message"]
    assert "10, 50, 90" in c["fix"]  # the stand-in's test operations (500 is a repair operation)


def test_a_refused_or_missing_token_fails_and_is_never_printed(write_config, tmp_path, wats):
    token = secret_file(tmp_path / "wats.token", WRONG_TOKEN)
    cfg = write_config(wats_section(wats, token))
    proc, checks = doctor(cfg)
    assert proc.returncode == 1
    assert checks["wats.reachable"]["status"] == "ok"
    assert checks["wats.token"]["status"] == "fail" and "401" in checks["wats.token"]["message"]
    assert str(token) in checks["wats.token"]["fix"]
    assert WRONG_TOKEN not in proc.stdout + proc.stderr
    token.unlink()
    proc, checks = doctor(cfg)
    assert checks["wats.token"]["status"] == "fail" and "missing or empty" in checks["wats.token"]["message"]


def test_wats_unreachable_fails_with_what_to_check(write_config, tmp_path):
    cfg = write_config(f"""
        [sinks.wats]
        url = "http://127.0.0.1:{free_port()}"
        token_file = "{secret_file(tmp_path / 'wats.token', TOKEN)}"
        default_process_code = 50
        require_clock_sync = false
    """)
    proc, checks = doctor(cfg)
    assert proc.returncode == 1
    assert checks["wats.reachable"]["status"] == "fail" and "ConnectError" in checks["wats.reachable"]["message"]
    assert "wats.token" not in checks  # nothing further is tried


# ------------------------------------------------------------------------------------------------ brokers
@pytest.fixture
def broker(tmp_path):
    pw = tmp_path / "mosquitto.passwd"
    mosquitto_passwd(pw, "agent", BROKER_PASSWORD)
    with Mosquitto(tmp_path / "broker", anonymous=False, extra=f"password_file {pw}") as m:
        yield m


def mqtt_sections(port: int, password_file: Path) -> str:
    return "".join(f"""
        [{key}]
        host = "127.0.0.1"
        port = {port}
        username = "agent"
        password_file = "{password_file}"
    """ for key in ("sources.mqtt", "sinks.mqtt"))


def test_each_mqtt_broker_is_connected_to_with_its_credentials(write_config, tmp_path, broker):
    cfg = write_config(mqtt_sections(broker.port, secret_file(tmp_path / "mqtt.pw", BROKER_PASSWORD)))
    proc, checks = doctor(cfg)
    for key in ("sources.mqtt", "sinks.mqtt"):
        c = checks[f"broker {key}"]
        assert c["status"] == "ok" and f"mqtt://127.0.0.1:{broker.port} as agent" in c["message"], proc.stdout
    assert proc.returncode == 0, proc.stdout


def test_a_wrong_password_or_a_dead_broker_fails_and_no_secret_is_printed(write_config, tmp_path, broker, wats):
    """The token WATS refuses and the password the broker refuses: both checks fail, neither secret is shown
    (text, --json, stderr)."""
    cfg = write_config(mqtt_sections(broker.port, secret_file(tmp_path / "mqtt.pw", WRONG_PASSWORD))
                       + wats_section(wats, secret_file(tmp_path / "wats.token", WRONG_TOKEN)))
    proc, checks = doctor(cfg)
    js = run_cli("doctor", "-c", str(cfg), "--timeout", "3", "--json")
    assert proc.returncode == 1
    c = checks["broker sources.mqtt"]
    assert c["status"] == "fail" and "refused" in c["message"] and "password_file" in c["fix"]
    assert checks["wats.token"]["status"] == "fail"
    for secret in (WRONG_PASSWORD, WRONG_TOKEN, BROKER_PASSWORD, TOKEN):
        assert secret not in proc.stdout + proc.stderr + js.stdout + js.stderr
    broker.stop()
    proc, checks = doctor(cfg)
    c = checks["broker sinks.mqtt"]
    assert c["status"] == "fail" and "cannot connect" in c["message"] and "broker runs" in c["fix"]


def test_the_doctor_does_not_take_over_the_agents_mqtt_session(write_config, tmp_path, broker):
    """It connects with a client id of its own and a clean session: the running agent stays connected."""
    port = free_port()
    cfg = write_config(mqtt_sections(broker.port, secret_file(tmp_path / "mqtt.pw", BROKER_PASSWORD)),
                       metrics_port=port)
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: source_status(cfg, "mqtt:mqtt").get("online"), 30, interval=0.2)
        proc, checks = doctor(cfg)
        assert checks["broker sinks.mqtt"]["status"] == "ok"
        log = broker.log.read_text()
        assert "fixture-agent-doctor-test-station" in log
        assert "already connected, closing old connection" not in log
    finally:
        stop_agent(agent)


def test_amqp_brokers_connect_with_their_credentials(write_config, tmp_path):
    rabbit = RabbitMQ(tmp_path / "rabbit").start()
    try:
        password = secret_file(tmp_path / "cfx.pw", "fx-Pa55")  # tests/rabbitmq.py's user "fixture"
        cfg = write_config(f"""
            [sinks.cfx]
            url = "{rabbit.url}"
            username = "fixture"
            password_file = "{password}"
            handle = "Acme.Fixture.Doctor"
        """)
        proc, checks = doctor(cfg)
        c = checks["broker sinks.cfx"]
        assert c["status"] == "ok" and "as fixture" in c["message"], proc.stdout
        secret_file(password, WRONG_PASSWORD)
        proc, checks = doctor(cfg, timeout=10)  # RabbitMQ answers a failed login after about 3 s
        c = checks["broker sinks.cfx"]
        assert c["status"] == "fail" and "password_file" in c["fix"], proc.stdout
        assert WRONG_PASSWORD not in proc.stdout + proc.stderr
    finally:
        rabbit.stop()


# ------------------------------------------------------------------------------------------------ devices
def serial_section(name: str, port: str, driver: str) -> str:
    return f"""
        [[sources.serial]]
        name = "{name}"
        port = "{port}"
        driver = "{driver}"
        asset_id = "FX-{name}"
        timeout = "1s"
    """


def test_serial_ports_present_opened_and_an_instrument_answering(write_config, tmp_path):
    from agent import simulator

    pty, _device, _thread = simulator.start("scpi")
    quiet_master, quiet_slave = os.openpty()  # a device that says nothing
    try:
        cfg = write_config(serial_section("ict", pty.path, "scpi")
                           + serial_section("silent", os.ttyname(quiet_slave), "scpi")
                           + serial_section("ctl", os.ttyname(quiet_slave), "jsonl")
                           + serial_section("gone", str(tmp_path / "ttyUSB9"), "jsonl"))
        proc, checks = doctor(cfg)
    finally:
        pty.close()
        os.close(quiet_master)
        os.close(quiet_slave)
    assert checks["serial ict"]["status"] == "ok" and "answers *IDN?" in checks["serial ict"]["message"], proc.stdout
    assert checks["serial silent"]["status"] == "fail" and "no answer to *IDN?" in checks["serial silent"]["message"]
    assert checks["serial ctl"]["status"] == "ok" and "opened at 115200 baud" in checks["serial ctl"]["message"]
    assert checks["serial gone"]["status"] == "fail" and "does not exist" in checks["serial gone"]["message"]
    assert "by-id" in checks["serial gone"]["fix"]


def test_gpio_pins_free_on_the_mock_factory_and_a_missing_factory_fails(write_config):
    pins = 'counter_pin = 17\nlid_pin = 27\npass_lamp_pin = 22\n'
    cfg = write_config(f'[sources.gpio]\nasset_id = "FX-1"\npin_factory = "mock"\n{pins}')
    proc, checks = doctor(cfg)
    assert checks["gpio"]["status"] == "ok" and "counter_pin 17, lid_pin 27, pass_lamp_pin 22 free" in \
        checks["gpio"]["message"], proc.stdout
    cfg = write_config(f'[sources.gpio]\nasset_id = "FX-1"\npin_factory = "nosuchfactory"\n{pins}')
    proc, checks = doctor(cfg)
    assert checks["gpio"]["status"] == "fail" and "nosuchfactory" in checks["gpio"]["message"]


# ------------------------------------------------------------------------------------------------ the host
def test_a_journal_bound_larger_than_the_disk_warns(write_config, tmp_path):
    import shutil

    free = shutil.disk_usage(tmp_path).free
    cfg = write_config(max_bytes=str(int(free * 2)))
    proc, checks = doctor(cfg)
    c = checks["disk"]
    assert c["status"] == "warn" and "fills before the journal reaches its bound" in c["message"], proc.stdout
    assert "lower journal.max_bytes" in c["fix"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill needs root")
def test_a_full_disk_fails(write_config, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        with open(small / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        cfg = write_config(max_bytes="1MB")
        cfg.write_text(cfg.read_text().replace(f'data_dir = "{tmp_path / "data"}"', f'data_dir = "{small / "data"}"'))
        proc, checks = doctor(cfg)
        c = checks["disk"]
        assert c["status"] == "fail" and "the disk is full now" in c["message"], proc.stdout
        assert proc.returncode == 1
    finally:
        subprocess.run(["umount", str(small)], check=False)


def _journal_with_events(write_config) -> tuple[Path, Path]:
    cfg = write_config()
    lines = "".join(json.dumps({"type": "custom", "payload": {"n": i, "pad": "x" * 400}}) + "\n" for i in range(300))
    run_cli("publish", "-c", str(cfg), "--stdin", input=lines, check=True)
    return cfg, tmp_journal(cfg)


def tmp_journal(cfg: Path) -> Path:
    return Path(json.loads(run_cli("status", "-c", str(cfg), "--json", check=True).stdout)["journal"]["path"])


def test_the_journal_passes_quick_check_and_a_corrupted_one_fails_untouched(write_config):
    cfg, path = _journal_with_events(write_config)
    proc, checks = doctor(cfg)
    assert checks["journal"]["status"] == "ok" and "quick_check" in checks["journal"]["message"], proc.stdout
    # damage pages in the middle of the file (an SD card returning garbage)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        for offset in range(size // 3, size // 3 + 4 * 4096, 4096):
            f.seek(offset + 100)
            f.write(os.urandom(3000))
    before = {p.name: p.read_bytes() for p in path.parent.glob(path.name + "*")}
    proc, checks = doctor(cfg)
    c = checks["journal"]
    assert c["status"] == "fail" and ("damaged" in c["message"] or "cannot be read" in c["message"]), proc.stdout
    assert "salvages" in c["fix"]
    assert proc.returncode == 1
    after = {p.name: p.read_bytes() for p in path.parent.glob(path.name + "*")}
    assert after == before  # read only: no -wal or -shm made, nothing checkpointed or salvaged


def test_a_file_that_is_not_a_journal_fails(write_config, tmp_path):
    cfg = write_config()
    data = tmp_path / "data"
    data.mkdir()
    (data / "journal.db").write_bytes(b"this is not an SQLite file\n" * 200)
    proc, checks = doctor(cfg)
    assert checks["journal"]["status"] == "fail", proc.stdout


def test_the_metrics_port_held_by_this_stations_agent_is_ok_and_by_another_process_fails(write_config):
    port = free_port()
    cfg = write_config(simulated=True, metrics_port=port)
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: _listening(port), 30)
        proc, checks = doctor(cfg)
        c = checks["listen metrics.listen"]
        assert c["status"] == "ok" and f"held by this station's running agent (pid {agent.pid})" in c["message"]
        assert checks["agent"]["status"] == "ok"
    finally:
        stop_agent(agent)
    with socket.socket() as stranger:
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        proc, checks = doctor(cfg)
    c = checks["listen metrics.listen"]
    assert c["status"] == "fail" and "in use by another process" in c["message"], proc.stdout
    assert proc.returncode == 1


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        time.sleep(0.1)
        return False


def test_an_unsynchronised_clock_fails_only_where_wats_waits_for_it(write_config, tmp_path, wats):
    if clock_synchronized():
        pytest.skip("this machine's clock is synchronised: the unsynchronised case cannot be shown here")
    cfg = write_config(wats_section(wats, secret_file(tmp_path / "wats.token", TOKEN)).replace(
        "require_clock_sync = false", "require_clock_sync = true"))
    proc, checks = doctor(cfg)
    assert checks["clock"]["status"] == "fail" and "WATS reports wait" in checks["clock"]["message"]
    assert "timesyncd" in checks["clock"]["fix"]
