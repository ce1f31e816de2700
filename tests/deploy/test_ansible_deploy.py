"""Issue 7 on a real Debian root: site.yml deploys the example inventory's ict-line3-01 through Ansible's chroot
connection into a fresh debootstrapped bookworm, and the result is checked from inside: the agent's venv, its
config, secrets and unit, the broker's users, ACLs, TLS listener and bridge, the agent running as its user
against that broker, a second run that changes nothing, an upgrade, a rollback and a refused config.

Only what a test host cannot be is overridden (-e): the connection, the site's addresses and ports (all on loopback
here, free ports: WATS on a closed one, the plant broker a private mosquitto) and pip's index settings.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from agent import __version__
from tests.conftest import free_port, wait_for
from tests.deploy.ansible_tools import ANSIBLE_DIR, Ansible, PlaybookRun, ansible_venv, build_wheel, host_pip_args
from tests.deploy.debian_root import ensure_apt_packages, fresh_root, in_root, pristine_tarball
from tests.mosquitto import Mosquitto, make_certs

pytestmark = pytest.mark.deploy

INVENTORY = ANSIBLE_DIR / "inventory" / "example"
HOST = "ict-line3-01"
USER = "fixture-agent"
VENV = "/opt/fixture-agent/venv"
AGENT = f"{VENV}/bin/fixture-agent"
CONFIG = "/etc/fixture-agent/config.toml"  # the CLI's default
UNIT = "/etc/systemd/system/fixture-agent.service"
# The secrets the test deploys (the example inventory holds placeholders).
WATS_TOKEN = "example-wats-token-line3"
AGENT_MQTT_PASSWORD = "example-agent-broker-password"
DEVICE_PASSWORDS = {"ESP-12": "example-esp12-password", "ESP-13": "example-esp13-password"}
COUNTERS = {"running_count": 7, "total_count": 4321}
SECRETS = {"vault_fixture_agent_wats_token": WATS_TOKEN, "vault_fixture_agent_mqtt_password": AGENT_MQTT_PASSWORD,
           "vault_esp12_password": DEVICE_PASSWORDS["ESP-12"], "vault_esp13_password": DEVICE_PASSWORDS["ESP-13"],
           "vault_plant_broker_password": "example-plant-password"}


@pytest.fixture(scope="module")
def ansible_venv_path(as_root) -> Path:
    """The cached parts, made side by side on a cold machine: debootstrap and the Ansible venv take as long."""
    ensure_apt_packages("debootstrap", "mosquitto", "openssl")  # mosquitto and openssl: the plant broker, TLS
    with ThreadPoolExecutor(2) as pool:
        venv, root = pool.submit(ansible_venv), pool.submit(pristine_tarball)
        root.result()
        return venv.result()


@pytest.fixture(scope="module")
def ansible(ansible_venv_path, tmp_path_factory) -> Ansible:
    return Ansible(ansible_venv_path, tmp_path_factory.mktemp("ansible"))


@dataclass
class Deployment:
    root: Path
    ansible: Ansible
    extra_vars: dict[str, Any]
    first: PlaybookRun
    second: PlaybookRun
    ports: dict[str, int]
    certs: dict[str, Path]
    plant: Mosquitto

    def sh(self, *cmd: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """A command in the root, as root or (setpriv execs, so the pid is the command's) as ``user``."""
        drop = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] if user else []
        return in_root(self.root, *drop, *cmd, check=check)

    def playbook(self, **overrides: Any) -> PlaybookRun:
        return self.ansible.playbook(INVENTORY, {**self.extra_vars, **overrides}, "--limit", HOST)

    @property
    def broker_ports(self) -> list[int]:
        return [self.ports["mqtt"], self.ports["tls"]]

    def link(self, name: str) -> str:
        return os.readlink(self.root / "opt/fixture-agent" / name)


@pytest.fixture(scope="module")
def deployment(ansible, tmp_path_factory) -> Iterator[Deployment]:
    work = tmp_path_factory.mktemp("deploy")
    certs = make_certs(work / "certs")
    ports = {"mqtt": free_port(), "tls": free_port(), "metrics": free_port()}
    with Mosquitto(work / "plant") as plant, fresh_root(work / "root") as root:
        extra = {
            # the "Pi": this root, through the chroot connection, already as root
            "ansible_connection": "community.general.chroot", "ansible_host": str(root),
            "ansible_python_interpreter": "/usr/bin/python3", "ansible_become": False,
            "fixture_agent_wheel": str(build_wheel(work / "wheel")),
            "fixture_agent_pip_extra_args": host_pip_args(root),
            # the site's addresses, all on this machine's loopback; nothing listens for WATS, so nothing leaves
            "wats_url": f"http://127.0.0.1:{free_port()}",
            "mosquitto_port": ports["mqtt"], "mosquitto_lan_interface": "",
            "fixture_agent_metrics": {"enabled": True, "listen": f"127.0.0.1:{ports['metrics']}"},
            # the test's plant broker is on loopback without TLS: its password may go in clear text here only
            "plant_broker": {"host": "127.0.0.1", "port": plant.port, "tls": False,
                             "allow_plaintext_password": True},
            # the example inventory's secrets are placeholders (the playbook refuses them): the test's own
            **SECRETS,
            "mosquitto_tls": {"port": ports["tls"], "address": "127.0.0.1", "cert_src": str(certs["server.crt"]),
                              "key_src": str(certs["server.key"]), "ca_src": str(certs["ca.crt"])},
        }
        first = ansible.playbook(INVENTORY, extra, "--limit", HOST)
        print(f"\nfirst run: {first.seconds:.0f}s {first.recap}")
        if first.rc != 0:
            pytest.fail(f"the first run failed:\n{first.tail()}")
        second = ansible.playbook(INVENTORY, extra, "--limit", HOST)
        print(f"second run: {second.seconds:.0f}s {second.recap}")
        yield Deployment(root, ansible, extra, first, second, ports, certs, plant)


# ------------------------------------------------------------------------------------------------ the playbook
def test_second_run_changes_nothing(deployment):
    assert deployment.first.recap["changed"] > 0 and deployment.first.recap["failed"] == 0
    second = deployment.second
    assert second.rc == 0, second.tail()
    assert second.recap["changed"] == 0, f"changed on the second run: {second.changed_tasks}"


def test_ansible_lint_passes_with_the_production_profile(ansible):
    proc = ansible.lint()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "profile that met the validation criteria was 'production'" in out, out


def test_every_example_host_renders_a_config_the_agent_accepts(ansible, tmp_path):
    """Both example fixtures (scpi + ESP32s; jsonl + GPIO + the token as a credential), and with CFX switched on:
    rendered by the role's own templates and checked by this checkout's `fixture-agent config check`."""
    cfx = {"fixture_agent_cfx_enabled": True, "fixture_agent_cfx_password": "x",
           "fixture_agent_cfx_sink": {"url": "amqps://cfx.example.com:5671", "username": "fixture",
                                      "handle": "Acme.Fixture.SN1"}}
    for variant, extra in {"as is": {}, "cfx": cfx}.items():
        out = tmp_path / variant.replace(" ", "-")
        run = ansible.playbook(INVENTORY, {"render_dir": str(out), **extra}, "--tags", "render",
                               playbook=str(Path(__file__).with_name("render_examples.yml")))
        assert run.rc == 0, run.tail()
        extras = {}
        for host in ("ict-line3-01", "fct-line3-02"):
            check = subprocess.run([sys.executable, "-m", "agent", "config", "check", "--json", "-c",
                                    str(out / host / "config.toml")], capture_output=True, text=True, check=False)
            assert check.returncode == 0, f"{variant} {host}: {check.stderr}"
            extras[host] = json.loads((out / host / "computed.json").read_text())["extras"]
        cfx_on = ["cfx"] if extra else []
        assert extras == {"ict-line3-01": ["serial", "wats", "mqtt", *cfx_on],
                          "fct-line3-02": ["serial", "gpio", "wats", "mqtt", *cfx_on]}, variant
    fct = out / "fct-line3-02"
    assert "token_file" not in (fct / "config.toml").read_text()  # the credential mode: systemd hands it over
    assert "LoadCredential=wats-token:/etc/fixture-agent/wats.token" in (fct / "fixture-agent.service").read_text()
    assert 'password_file = "/etc/fixture-agent/cfx.password"' in (fct / "config.toml").read_text()


# ------------------------------------------------------------------------------------------------ the agent
def test_the_venv_runs_the_agent_and_checks_its_config(deployment):
    assert deployment.sh(AGENT, "--version").stdout.strip() == f"fixture-agent {__version__}"
    check = json.loads(deployment.sh(AGENT, "config", "check", "-c", CONFIG, "--json", user=USER).stdout)
    assert check["ok"] and check["station"] == HOST
    assert check["sources"] == ["serial:ict", "mqtt:mqtt"] and check["sinks"] == ["wats", "mqtt"]
    # on the PATH, and reading the config from the CLI's default path: what an admin types on the Pi
    status = json.loads(deployment.sh("/usr/local/bin/fixture-agent", "status", "--json").stdout)
    assert status["station"] == HOST
    installed = deployment.sh(f"{VENV}/bin/python", "-m", "pip", "list", "--format=json").stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert {"pyserial", "httpx", "paho-mqtt"} <= names  # the extras the inventory's sources and sinks need
    assert not {"python-qpid-proton", "gpiozero"} & names  # and only those
    # exactly the lock's versions (files/fleet-lock.json, hash-checked), not whatever the index had that day
    lock = json.loads((ANSIBLE_DIR / "roles/fixture_agent/files/fleet-lock.json").read_text())["packages"]
    versions = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(installed)}
    for name in ("h11", "httpx", "httpcore", "msgspec", "paho-mqtt", "sqlite-utils", "pyserial"):
        assert versions[name] == lock[name]["version"], name
    assert deployment.sh(f"{VENV}/bin/python", "-m", "pip", "check").returncode == 0


def test_secrets_config_and_directories_have_their_owners_and_modes(deployment):
    root = deployment.root
    uid = int(deployment.sh("id", "-u", USER).stdout)
    for name, content in (("wats.token", WATS_TOKEN), ("mqtt-local.password", AGENT_MQTT_PASSWORD),
                          ("mqtt-telemetry.password", AGENT_MQTT_PASSWORD)):
        st = (root / "etc/fixture-agent" / name).stat()
        assert (oct(st.st_mode & 0o777), st.st_uid) == ("0o600", uid), name
        assert (root / "etc/fixture-agent" / name).read_text() == content + "\n", f"{name}: not the vault's value"
    config = (root / CONFIG.lstrip("/")).stat()
    assert (oct(config.st_mode & 0o777), config.st_uid) == ("0o640", 0)
    data = (root / "var/lib/fixture-agent").stat()
    assert (oct(data.st_mode & 0o777), data.st_uid) == ("0o750", uid)
    groups = deployment.sh("id", "-nG", USER).stdout.split()
    assert {"dialout", "gpio"} <= set(groups)
    # the agent can read its code and config but not change them; it writes its data directory only
    for path, can_read, can_write in ((f"{VENV}/bin", True, False), (CONFIG, True, False),
                                      ("/var/lib/fixture-agent", True, True)):
        access = [deployment.sh("test", flag, path, user=USER, check=False).returncode == 0 for flag in ("-r", "-w")]
        assert access == [can_read, can_write], path


def test_the_unit_verifies_is_hardened_and_enabled(deployment):
    verify = deployment.sh("systemd-analyze", "verify", UNIT, check=False)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, ""), verify.stderr
    # systemd's own exposure score (0 best, 10 worst): fails above 2.5
    security = deployment.sh("systemd-analyze", "security", "--offline=true", "--threshold=25", UNIT, check=False)
    assert security.returncode == 0, security.stdout[-2000:]
    unit = _unit_settings((deployment.root / UNIT.lstrip("/")).read_text())
    expected = {"Type": "notify", "NotifyAccess": "main", "Restart": "always", "User": USER,
                "SupplementaryGroups": "dialout gpio", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "ReadWritePaths": "/var/lib/fixture-agent", "ProtectHome": "yes", "PrivateTmp": "yes",
                "ExecStart": f"{AGENT} run -c {CONFIG}", "Environment": f"FIXTURE_AGENT_CONFIG={CONFIG}"}
    assert {k: unit.get(k) for k in expected} == expected
    assert unit.get("LimitNOFILE") == "4096"  # set on purpose, see the unit's comment
    assert unit.get("RestartPreventExitStatus") == "78"  # a config mistake is not restarted for ever
    assert unit.get("ExecReload") == "/bin/sh -c 'kill -HUP $MAINPID'"  # systemctl reload: SIGHUP
    assert "WatchdogSec" in unit and "MemoryMax" in unit and "PrivateDevices" not in unit
    for name in ("fixture-agent", "mosquitto"):
        assert deployment.sh("systemctl", "is-enabled", name).stdout.strip() == "enabled"


def _unit_settings(text: str) -> dict[str, str]:
    lines = (line.partition("=") for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key: value for key, _, value in lines}


# ------------------------------------------------------------------------------------------------ the broker
_client_ids = itertools.count()


class Client:
    """A paho MQTT 5 client that waits for its CONNACK and for each PUBACK, and keeps what it receives."""

    def __init__(self, user: str, password: str, port: int, ca: Path | None = None) -> None:
        self.connected, self.subscribed, self.reason, self.received = threading.Event(), threading.Event(), None, []
        self.acks: dict[int, Any] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{user}-{next(_client_ids)}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, password)
        if ca:
            self.client.tls_set(ca_certs=str(ca))
        self.client.on_connect = self._on_connect
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc)
        self.client.on_message = lambda c, u, msg: self.received.append((msg.topic, msg.payload))
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(10), f"{user}: no CONNACK"

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        self.reason = reason
        self.connected.set()

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(10), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: str) -> str:
        mid = self.client.publish(topic, payload, qos=1).mid
        assert wait_for(lambda: mid in self.acks, 10), f"no PUBACK for {topic}"
        return str(self.acks[mid])

    def topics(self) -> set[str]:
        return {t for t, _ in self.received}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@contextlib.contextmanager
def broker_in(root: Path, ports: Iterable[int]) -> Iterator[subprocess.Popen]:
    """The root's own mosquitto on its deployed config while the block runs (chroot execs it: its pid is ours)."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(["chroot", str(root), "/usr/sbin/mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"],
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            started = wait_for(lambda: proc.poll() is not None or all(_listening(p) for p in ports), 15)
            if not started or proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"mosquitto did not start on the deployed config: {log.read().decode()}")
            yield proc
        finally:
            proc.terminate()
            proc.wait(10)


@contextlib.contextmanager
def clients(*specs: tuple) -> Iterator[list[Client]]:
    made: list[Client] = []
    try:
        for spec in specs:
            made.append(Client(*spec))
        yield made
    finally:
        for c in made:
            c.close()


def test_the_password_file_has_random_salts_and_mosquittos_rounds(deployment):
    """mosquitto_passwd's own format, at least 100,000 PBKDF2 rounds (not 101), a random salt per user kept from
    one run to the next (the second run changed nothing, so the salts were kept)."""
    lines = (deployment.root / "etc/mosquitto/passwd").read_text().split()
    hashes = dict(line.split(":", 1) for line in lines)
    assert set(hashes) == {USER, "ESP-12", "ESP-13"}
    parts = [h.split("$") for h in hashes.values()]
    assert all(p[1] == "7" and int(p[2]) >= 100_000 for p in parts), hashes
    assert len({p[3] for p in parts}) == len(parts)  # no salt shared


def test_placeholder_secrets_and_a_clear_text_bridge_password_are_refused(deployment):
    def said(run: PlaybookRun) -> str:  # the result printer may wrap a long message
        return " ".join(run.output.replace('"', " ").split())

    placeholder = deployment.playbook(vault_fixture_agent_wats_token="CHANGE-ME")
    assert placeholder.rc != 0, placeholder.tail()
    assert "vault_fixture_agent_wats_token is still the example's placeholder" in said(placeholder), placeholder.tail()
    plain = deployment.playbook(plant_broker={**deployment.extra_vars["plant_broker"],
                                              "allow_plaintext_password": False})
    assert plain.rc != 0 and "remote_password would cross the plant network" in said(plain), plain.tail()


def test_the_broker_takes_each_device_on_its_own_topics_only(deployment):
    d, port = deployment, deployment.ports["mqtt"]
    with broker_in(d.root, d.broker_ports), clients(
            (USER, AGENT_MQTT_PASSWORD, port), ("ESP-12", DEVICE_PASSWORDS["ESP-12"], port),
            ("ESP-13", DEVICE_PASSWORDS["ESP-13"], d.ports["tls"], d.certs["ca.crt"]),
            ("ESP-12", "not-the-password", port), (USER, "x", port)) as (agent, esp12, esp13_tls, bad, bad_agent):
        assert [str(c.reason) for c in (agent, esp12, esp13_tls)] == ["Success"] * 3
        assert str(bad.reason) == str(bad_agent.reason) == "Not authorized"
        agent.subscribe("#")
        assert esp12.publish("assets/ESP-12/counters", '{"running_count": 1, "total_count": 2}') == "Success"
        assert esp13_tls.publish("devices/ESP-13/selftest", '{"result": "P"}') == "Success"  # over TLS
        assert esp12.publish("assets/ESP-13/counters", "{}") == "Not authorized"  # another device's topic
        assert esp12.publish("fixture-agent/x/status", "{}") == "Not authorized"  # the agent's
        assert wait_for(lambda: {"assets/ESP-12/counters", "devices/ESP-13/selftest"} <= agent.topics(), 10)
        assert not {"assets/ESP-13/counters", "fixture-agent/x/status"} & agent.topics()


class Notifications:
    """The sd_notify datagrams a service sends to $NOTIFY_SOCKET, received where systemd would receive them."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o777)  # the agent's user sends to it
        self.sock.settimeout(0.2)
        self.seen: list[str] = []

    def wait(self, message: str, proc: subprocess.Popen, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.seen.append(self.sock.recv(256).decode())
            except TimeoutError:
                if proc.poll() is not None:
                    return False  # it exited and everything it sent has been read
                continue
            if self.seen[-1] == message:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


def test_the_agent_runs_as_its_user_against_the_deployed_broker(deployment, tmp_path):
    """The deployed agent, as fixture-agent, on the deployed config: it tells systemd it is ready and alive,
    answers /healthz, journals what an ESP32 publishes, sends its telemetry over the bridge, and stops cleanly
    on SIGTERM."""
    d, log_path = deployment, tmp_path / "agent.log"
    notify = Notifications(d.root / "run/fixture-agent-test.notify")
    with contextlib.closing(notify), broker_in(d.root, d.broker_ports), log_path.open("w") as log, \
            clients(("plant-watcher", "-", d.plant.port)) as (plant,):
        plant.subscribe("#")
        agent = subprocess.Popen(
            ["chroot", str(d.root), "setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--",
             "env", "-i", "PATH=/usr/bin:/bin", "NOTIFY_SOCKET=/run/fixture-agent-test.notify",
             "WATCHDOG_USEC=1000000", AGENT, "run", "-c", CONFIG], stdout=log, stderr=log)
        try:
            assert notify.wait("READY=1", agent) and notify.seen == ["READY=1"], log_path.read_text()
            with urllib.request.urlopen(f"http://127.0.0.1:{d.ports['metrics']}/healthz", timeout=10) as health:
                assert health.status == 200  # what the role waits for on a booted Pi
            # READY comes before the MQTT source has subscribed (it connects in the background), and a first
            # session holds nothing for the agent yet: the device sends until its count is in the journal.
            with clients(("ESP-12", DEVICE_PASSWORDS["ESP-12"], d.ports["mqtt"])) as (esp12,):
                def journaled() -> bool:
                    assert esp12.publish("assets/ESP-12/counters", json.dumps(COUNTERS)) == "Success"
                    return _counters_in_journal(d)
                assert wait_for(journaled, 30, interval=1), log_path.read_text()
            assert wait_for(lambda: "plant2/line3/assets/ESP-12/counters" in plant.topics()
                            and any(t.startswith(f"fixture-agent/{HOST}/") for t in plant.topics()), 20), \
                plant.topics()
            assert notify.wait("WATCHDOG=1", agent)
            agent.terminate()  # what systemd does to stop it
            assert agent.wait(30) == 0, log_path.read_text()
            assert notify.wait("STOPPING=1", agent), notify.seen
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    assert _counters_in_journal(d)  # still there after the stop


def _counters_in_journal(d: Deployment) -> bool:
    """Read as the agent's user while it runs or not (WAL lets readers in)."""
    events = json.loads(d.sh(AGENT, "events", "-c", CONFIG, "--type", "asset.counters", "--json", user=USER).stdout)
    return any(e["payload"].get("total_count") == COUNTERS["total_count"] for e in events)


# ------------------------------------------------------------------------------------------------ rollouts
def test_upgrade_rollback_and_a_refused_config(deployment, tmp_path):
    """A new build gets its own venv and restarts only the agent; pointing the inventory back at the old wheel
    returns to the kept venv with nothing installed; a config the agent refuses leaves the host as it was.
    (Runs last: it changes the root the other tests read.)"""
    d = deployment
    old_build, old_wheel = d.link("venv"), d.extra_vars["fixture_agent_wheel"]
    next_version = f"{__version__}.post1"
    acl_change = {"mosquitto_device_topic_families": ["assets", "devices", "testers"]}

    upgrade = d.playbook(fixture_agent_wheel=str(build_wheel(tmp_path, version=next_version)), **acl_change)
    assert upgrade.rc == 0, upgrade.tail()
    assert d.sh(AGENT, "--version").stdout.strip() == f"fixture-agent {next_version}"
    assert (d.link("venv.previous"), d.link("venv") != old_build) == (old_build, True)
    assert "fixture_agent : Restart fixture-agent" in upgrade.handlers
    assert "mosquitto : Reload mosquitto" in upgrade.handlers  # users and ACLs: reread, clients stay connected
    assert "mosquitto : Restart mosquitto" not in upgrade.handlers
    new_build = d.link("venv")

    (d.root / "opt/fixture-agent/venvs/0.0.9-stale").mkdir()  # an older build, neither current nor previous
    rollback = d.playbook(fixture_agent_wheel=old_wheel)
    assert rollback.rc == 0, rollback.tail()
    assert d.sh(AGENT, "--version").stdout.strip() == f"fixture-agent {__version__}"
    assert (d.link("venv"), d.link("venv.previous")) == (old_build, new_build)
    assert not any("Install the agent" in t for t in rollback.changed_tasks), "the kept venv was reinstalled"
    assert sorted(p.name for p in (d.root / "opt/fixture-agent/venvs").iterdir()) == \
        sorted(Path(b).name for b in (old_build, new_build))
    assert "mosquitto : Restart mosquitto" not in rollback.handlers

    config_before = (d.root / CONFIG.lstrip("/")).read_bytes()
    refused = d.playbook(fixture_agent_wheel=old_wheel, fixture_agent_journal={"max_bytes": "1KB"})
    assert refused.rc != 0 and refused.recap["failed"] == 1
    assert "max_bytes must be at least 64KB" in refused.output  # the agent's own words, from `config check`
    assert (d.root / CONFIG.lstrip("/")).read_bytes() == config_before
    assert d.link("venv") == old_build
