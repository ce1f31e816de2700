"""Issue 22 on the Pi's own architectures: an offline install and the event core on arm64 and armhf, emulated.

For each architecture: scripts/bundle makes the offline bundle for it (wheels for aarch64/armv7l where the index
has them, the source otherwise); site.yml converges a fresh debootstrapped bookworm root of that architecture
through the chroot connection with fixture_agent_bundle set and pip's index closed (the root's pip.conf points at
a port nothing listens on, so anything that reached for the index would fail), building what has no wheel inside
the root under qemu-user-static, timed from pip's own log. Then, inside the root, with the deployed venv: the demo
(config/demo.toml: a simulated fixture on a pseudo-terminal and a simulated station, every uplink buffering),
`publish --stdin` killed with SIGKILL a few times (every id it printed is in the journal), the event core's unit
tests, and bench/emulated.py's ratios. The figures go to bench/results/emulated.json and are printed.

Long: tens of minutes per architecture (qemu runs apt, the compilers and Python). Not in the default run: set
FIXTURE_AGENT_EMULATED=1 (both) or =arm64 / =armhf (tests/deploy/conftest.py deselects these tests otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port, wait_for
from tests.deploy.ansible_tools import Ansible, PlaybookRun, ansible_venv
from tests.deploy.debian_root import ensure_apt_packages, fresh_root, in_root, pristine_tarball
from tests.deploy.test_ansible_deploy import HOST, INVENTORY, SECRETS
from tests.mosquitto import make_certs

pytestmark = pytest.mark.emulated

ARCHES = {"arm64": ("aarch64", 0xB7), "armhf": ("armv7l", 0x28)}  # Debian's name -> uname -m, ELF e_machine
VENV = "/opt/fixture-agent/venv"
AGENT = f"{VENV}/bin/fixture-agent"
PYTHON = f"{VENV}/bin/python"
PIP_LOG = "/var/log/fixture-agent-pip.log"
# The event core's unit tests, run inside the root against the installed wheel
UNIT_TESTS = ("test_journal.py", "test_bus.py", "test_salvage.py", "test_journal_bad_input.py", "test_model.py")
KILLS = 6


def selected_arches() -> list[str]:
    wanted = os.environ.get("FIXTURE_AGENT_EMULATED", "")
    if wanted in ("", "0", "1", "all"):
        return list(ARCHES)
    arches = [a.strip() for a in wanted.split(",")]
    unknown = [a for a in arches if a not in ARCHES]
    if unknown:
        raise pytest.UsageError(f"FIXTURE_AGENT_EMULATED={wanted!r}: {unknown} unknown; use 1, arm64, armhf")
    return arches


@dataclass
class Pi:
    arch: str
    root: Path
    work: Path
    bundle: Path
    manifest: dict[str, Any]
    converge: PlaybookRun
    ansible: Ansible
    extra_vars: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def machine(self) -> str:
        return ARCHES[self.arch][0]

    def sh(self, *cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return in_root(self.root, *cmd, check=check, timeout=timeout)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound and let go: connecting gets a refusal at once)."""
    return free_port()


def wheel_builds(log: str) -> dict[str, list[float]]:
    """Seconds each wheel build from source took, from pip's --log file (every line timestamped): the pairs of
    "Building wheel for NAME (pyproject.toml): started" and "finished", per package, one entry per build (a build
    dependency built inside another package's isolated build environment is a build of its own). The isolated
    build's pip writes the same file, and the outer pip echoes its lines: a repeat while a build is open is the
    same build."""
    builds: dict[str, list[float]] = {}
    open_since: dict[str, float] = {}
    for line in log.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[,.]\d+)\s+Building wheel for (\S+) \(.*\): (started|finished)", line)
        if not m:
            continue
        when = datetime.fromisoformat(m.group(1).replace(",", ".")).timestamp()
        name = re.sub(r"[-_.]+", "-", m.group(2)).lower()
        if m.group(3) == "started":
            open_since.setdefault(name, when)
        elif name in open_since:
            builds.setdefault(name, []).append(round(when - open_since.pop(name), 1))
    return builds


@contextlib.contextmanager
def devpts(root: Path) -> Iterator[None]:
    """A private devpts in the root while the block runs: the demo's simulated fixture is a pseudo-terminal."""
    pts = root / "dev/pts"
    pts.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620", "devpts", str(pts)],
                   check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(pts)], check=False)


@pytest.fixture(scope="module", params=selected_arches())
def pi(request, as_root, tmp_path_factory) -> Iterator[Pi]:
    arch = request.param
    ensure_apt_packages("debootstrap", "qemu-user-static", "binfmt-support", "openssl")
    work = tmp_path_factory.mktemp(f"pi-{arch}")
    started = time.monotonic()
    tarball = pristine_tarball(arch)
    figures: dict[str, Any] = {"root_tarball_bytes": tarball.stat().st_size}
    (work / "ansible").mkdir()
    ansible = Ansible(ansible_venv(), work / "ansible")
    ansible.env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"  # per-task seconds in the output

    bundle = work / "bundle"
    t = time.monotonic()
    made = subprocess.run([sys.executable, str(ROOT / "scripts/bundle"), str(bundle), "--arch", arch],
                          capture_output=True, text=True, check=False, timeout=1200)
    assert made.returncode == 0, made.stderr[-3000:]
    manifest = json.loads((bundle / "bundle.json").read_text())
    # what later runs inside the root, copied now with the wheel: the same tree, even if the checkout moves on
    snapshot = work / "snapshot"
    shutil.copytree(ROOT / "tests", snapshot / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "bench", snapshot / "bench", ignore=shutil.ignore_patterns("__pycache__", "results"))
    figures.update(bundle_seconds=round(time.monotonic() - t, 1), bundle_bytes=manifest["bytes"],
                   bundle_files=len(manifest["files"]), source_builds=manifest["source_builds"])
    certs = make_certs(work / "certs")
    with fresh_root(work / "root", arch) as root:
        # pip's index closed: any pip inside the root that looked at an index would be refused at once
        (root / "etc/pip.conf").write_text(f"[global]\nindex-url = http://127.0.0.1:{_closed_port()}/closed-index/\n"
                                           f"log = {PIP_LOG}\n")
        extra = {
            "ansible_connection": "community.general.chroot", "ansible_host": str(root),
            "ansible_python_interpreter": "/usr/bin/python3", "ansible_become": False,
            "fixture_agent_bundle": str(bundle), "fixture_agent_wheel": str(bundle / manifest["agent_wheel"]),
            "wats_url": f"http://127.0.0.1:{_closed_port()}",
            "mosquitto_port": free_port(), "mosquitto_lan_interface": "",
            "plant_broker": {"host": "127.0.0.1", "port": _closed_port(), "tls": False,
                             "allow_plaintext_password": True},
            "mosquitto_tls": {"port": free_port(), "address": "127.0.0.1", "cert_src": str(certs["server.crt"]),
                              "key_src": str(certs["server.key"]), "ca_src": str(certs["ca.crt"])},
            # every extra, cfx too: python-qpid-proton has no wheel for any ARM Pi, so it is built here
            "fixture_agent_cfx_enabled": True, "fixture_agent_cfx_password": "x",
            "fixture_agent_cfx_sink": {"url": f"amqp://127.0.0.1:{_closed_port()}", "username": "fixture",
                                       "handle": "Acme.Fixture.Emulated"},
            **SECRETS,
        }
        converge = ansible.playbook(INVENTORY, extra, "--limit", HOST, timeout=5400)
        print(f"\n{arch}: converged in {converge.seconds:.0f}s {converge.recap}")
        if converge.rc != 0:
            pytest.fail(f"{arch}: the converge failed:\n{converge.tail(80)}")
        figures["converge_seconds"] = round(converge.seconds, 1)
        # profile_tasks' recap: "role : task ------ 12.34s" (fewer dashes, or none, after a long name)
        figures["task_seconds"] = {m.group(1).rstrip(" -"): float(m.group(2)) for m in re.finditer(
            r"^(\S.*?)\s+-*\s*(\d+\.\d+)s$", converge.output, re.MULTILINE)
            if re.match(r"\w+ : (Install|Copy)", m.group(1))}
        log = (root / PIP_LOG.lstrip("/")).read_text()
        figures["wheel_build_seconds"] = wheel_builds(log)
        yield Pi(arch, root, work, bundle, manifest, converge, ansible, extra, figures)
        figures["total_seconds"] = round(time.monotonic() - started, 1)
        print(f"{arch}: {json.dumps(figures)}")
        (work / "figures.json").write_text(json.dumps(figures, indent=2))


# ------------------------------------------------------------------------------------------------ the install
def test_the_bundle_installs_with_no_index_and_builds_what_has_no_wheel(pi):
    """Offline: pip looked only at the bundle; what came as source was built here for this architecture; the
    venv holds exactly the lock's versions and pip check is happy."""
    log = (pi.root / PIP_LOG.lstrip("/")).read_text()
    # pip says it ignores the root's (closed) index, and looked only at the bundle, every time it ran
    assert "Looking in links: /opt/fixture-agent/bundle" in log
    assert re.search(r"Ignoring indexes: http://127\.0\.0\.1:\d+/closed-index/", log)
    assert "Looking in indexes" not in log
    # the Python in the venv is the root's own, and the packages built from source are for its machine
    assert pi.sh(PYTHON, "-c", "import platform; print(platform.machine())").stdout.strip() == pi.machine
    machine = ARCHES[pi.arch][1]
    venv = pi.root / "opt/fixture-agent" / os.readlink(pi.root / VENV.lstrip("/"))
    extensions = sorted(venv.glob("lib/python3*/site-packages/**/*.so"))
    for so in extensions:
        header = so.read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == machine, so
    names = " ".join(str(so.relative_to(venv)) for so in extensions)
    assert "msgspec" in names and "proton" in names and "_cffi_backend" in names, names
    assert pi.manifest["source_builds"], "every ARM Pi builds python-qpid-proton at least"
    for name in pi.manifest["source_builds"]:
        assert name in pi.figures["wheel_build_seconds"], (name, pi.figures["wheel_build_seconds"])
    imports = pi.sh(PYTHON, "-c", "import msgspec, proton, cffi, httpx, paho.mqtt.client, serial, agent.cli; "
                                  "print(proton.VERSION)")
    assert imports.returncode == 0, imports.stderr
    check = pi.sh(PYTHON, "-m", "pip", "check", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    frozen = dict(line.split("==") for line in pi.sh(PYTHON, "-m", "pip", "freeze", "--all").stdout.split()
                  if "==" in line)
    assert _lock_mismatches(frozen, HOST_EXTRAS) == {}


# ict-line3-01's extras with cfx switched on (its SCPI instrument, WATS, the local broker; no GPIO)
HOST_EXTRAS = ("serial", "wats", "mqtt", "cfx")
# What `python3 -m venv` seeds a venv with; the lock replaces it only where a host's extras need it
VENV_SEED = {"pip", "setuptools"}


def _lock_mismatches(frozen: dict[str, str], extras: tuple[str, ...]) -> dict[str, tuple[str, str | None]]:
    """Installed packages that are not at the lock's version: everything the host's extras need from the lock must
    be there at that version, and nothing else may be, but the venv's own seed (pip, setuptools) left as it came."""
    lock = json.loads((ROOT / "deploy/ansible/roles/fixture_agent/files/fleet-lock.json").read_text())["packages"]
    needed = {name: pkg["version"] for name, pkg in lock.items() if set(pkg["groups"]) & {"core", *extras}}
    installed = {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in frozen.items()}
    out = {name: (installed.get(name, "missing"), version) for name, version in needed.items()
           if installed.get(name) != version}
    out |= {name: (v, None) for name, v in installed.items() if name not in needed and name not in VENV_SEED}
    return out
    assert pi.sh(AGENT, "--version").returncode == 0


# ------------------------------------------------------------------------------------------------ the demo
def test_the_demo_runs_on_the_pi_architecture(pi):
    """config/demo.toml as the README runs it: the simulated fixture on a pseudo-terminal and the simulated station
    fill the journal, the WATS uplink holds everything (no token), status and events read it."""
    demo = pi.root / "opt/demo"
    demo.mkdir()
    text = (ROOT / "config/demo.toml").read_text()
    text = text.replace('"127.0.0.1:9108"', f'"127.0.0.1:{free_port()}"').replace("port = 1883",
                                                                                  f"port = {_closed_port()}")
    (demo / "demo.toml").write_text(text)
    cmd = ["sh", "-c", f"cd /opt/demo && {AGENT} run -c demo.toml --for 30"]
    with devpts(pi.root):
        t = time.monotonic()
        run = pi.sh(*cmd, check=False, timeout=300)
        pi.figures["demo_seconds"] = round(time.monotonic() - t, 1)
    assert run.returncode == 0, run.stderr[-3000:]
    status = json.loads(pi.sh("sh", "-c", f"cd /opt/demo && {AGENT} status -c demo.toml --json").stdout)
    events = json.loads(pi.sh("sh", "-c", f"cd /opt/demo && {AGENT} events -c demo.toml --json --limit 1000").stdout)
    kinds = {e["event_type"] for e in events}
    pi.figures["demo_events"] = status["journal"]["events"]
    assert {"test.result", "asset.counters"} <= kinds, kinds  # the station, and the fixture on its pty
    assert "wats" in json.dumps(status["subscribers"]), status["subscribers"]
    assert status["journal"]["events"] > 10 and not status["journal"]["refusing"]


# ------------------------------------------------------------------------------------------------ kill -9
def test_kill9_during_publish_stdin_loses_no_printed_id_on_the_pi_architecture(pi):
    """tests/crash's check, emulated: publish --stdin killed with SIGKILL at random moments, some during its
    start; every id it printed (acknowledged) is in the journal afterwards, and the journal is intact."""
    rng = random.Random(22)
    data = pi.root / "opt/kill9"
    data.mkdir()
    (data / "agent.toml").write_text('[agent]\nstation = "kill9"\nlocation = "L"\npurpose = "P"\n'
                                     'data_dir = "/opt/kill9/data"\n[metrics]\nenabled = false\n')
    db = data / "data/journal.db"
    line = (json.dumps({"type": "test.result", "payload": {"unit_id": "SN", "result": "pass",
                                                           "start_time": "2026-01-01T00:00:00Z"}}) + "\n").encode()
    printed_total: list[str] = []
    mid_stream = 0
    for round_no in range(KILLS):
        proc = subprocess.Popen(["chroot", str(pi.root), AGENT, "publish", "-c", "/opt/kill9/agent.toml", "--stdin"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        printed: list[str] = []

        def feed() -> None:
            with contextlib.suppress(BrokenPipeError, ValueError, OSError):
                while True:
                    proc.stdin.write(line * rng.randint(1, 50))
                    proc.stdin.flush()
                    time.sleep(rng.random() * 0.01)

        def read() -> None:
            for raw in proc.stdout:
                if raw.endswith(b"\n"):  # a torn last line was never fully printed
                    printed.append(raw.decode().strip())

        tf, tr = threading.Thread(target=feed, daemon=True), threading.Thread(target=read, daemon=True)
        tf.start(), tr.start()
        if round_no % 3 == 0:
            time.sleep(rng.random() * 2)  # during the emulated start, before the first commit most likely
        else:
            assert wait_for(lambda: printed, 120), "publish --stdin printed nothing in 120 s"
            time.sleep(rng.random() * 1.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        tr.join(10)
        mid_stream += bool(printed)
        stored = _journal_ids(db) if db.exists() else set()
        missing = [i for i in printed if i not in stored]
        assert not missing, f"round {round_no}: {len(missing)} printed ids missing after kill -9: {missing[:3]}"
        printed_total += printed
    pi.figures["kill9"] = {"kills": KILLS, "mid_stream": mid_stream, "acknowledged": len(printed_total)}
    assert mid_stream >= KILLS // 2 and len(printed_total) > KILLS * 10
    assert len(set(printed_total)) == len(printed_total)
    # and the agent opens the journal afterwards (a full Journal: recovery, quick_check) and counts them all
    events = json.loads(pi.sh(AGENT, "status", "-c", "/opt/kill9/agent.toml", "--json").stdout)["journal"]["events"]
    assert events >= len(printed_total)


def _journal_ids(path: Path) -> set[str]:
    """Read on the host: a SQLite file is the same on every architecture."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        return {r[0] for r in conn.execute("SELECT id FROM events")}
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ unit tests
def test_the_event_cores_unit_tests_pass_on_the_pi_architecture(pi, tmp_path):
    """tests/unit for the journal, the bus, salvage, bad input and the model, run by the root's Python against the
    installed wheel (pytest copied in as pure-Python wheels: the root has no index)."""
    dest = pi.root / "opt/agent-tests"
    (dest / "tests/unit").mkdir(parents=True)
    tests = pi.work / "snapshot/tests"
    for helper in tests.glob("*.py"):  # conftest and the helpers the unit tests import (mock_transport …)
        shutil.copy(helper, dest / "tests" / helper.name)
    for name in ("__init__.py", *UNIT_TESTS):
        shutil.copy(tests / "unit" / name, dest / "tests/unit" / name)
    lib = dest / "lib"
    got = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(lib), "--only-binary=:all:",
                          "pytest"], capture_output=True, text=True, check=False)
    assert got.returncode == 0, got.stderr
    assert not list(lib.rglob("*.so")), "pytest's wheels should all be pure Python"
    t = time.monotonic()
    run = pi.sh("sh", "-c", f"cd /opt/agent-tests && PYTHONPATH=/opt/agent-tests/lib {PYTHON} -m pytest -q "
                            f"-p no:cacheprovider {' '.join('tests/unit/' + n for n in UNIT_TESTS)}",
                check=False, timeout=3600)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    pi.figures["unit_tests"] = {"summary": summary, "seconds": round(time.monotonic() - t, 1)}
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert re.search(r"\d+ passed", summary), summary


# ------------------------------------------------------------------------------------------------ the benchmark
def test_the_core_figures_as_ratios_under_emulation(pi):
    """bench/emulated.py inside the root: the ratios, written with the install's figures to
    bench/results/emulated.json."""
    sys.path.insert(0, str(ROOT / "bench"))
    from emulated import record, run_in_root

    row = run_in_root(pi.root, PYTHON, bench=pi.work / "snapshot/bench")
    assert row["machine"].startswith(pi.machine), row["machine"]
    for figure in (row["blocking_publish_8_threads"]["ratio_to_bare_blocking_group_commit"],
                   row["publish_many"]["ratio_to_raw_executemany"], row["wats_drain"]["ratio_to_bare_httpx"]):
        assert 0 < figure < 5, row
    record(pi.arch, {"arch": pi.arch, **row, "install": pi.figures})


# ------------------------------------------------------------------------------------------------ a wrong bundle
def test_a_bundle_for_another_architecture_is_refused(pi, tmp_path):
    """The role reads bundle.json before it copies anything: a bundle made for the other ARM port stops the host
    with what to run instead, and the installed build stays current."""
    other = next(a for a in ARCHES if a != pi.arch)
    wrong = tmp_path / "bundle"
    shutil.copytree(pi.bundle, wrong)
    manifest = json.loads((wrong / "bundle.json").read_text())
    (wrong / "bundle.json").write_text(json.dumps({**manifest, "arch": other}))
    current = os.readlink(pi.root / VENV.lstrip("/"))
    run = pi.ansible.playbook(INVENTORY, {**pi.extra_vars, "fixture_agent_bundle": str(wrong)}, "--limit", HOST,
                              timeout=1800)
    said = " ".join(run.output.replace('"', " ").split())
    assert run.rc != 0 and f"was made for {other}, this host is {pi.arch} ({pi.machine})" in said, run.tail()
    assert f"scripts/bundle DIR --arch {pi.arch}" in said
    assert os.readlink(pi.root / VENV.lstrip("/")) == current
