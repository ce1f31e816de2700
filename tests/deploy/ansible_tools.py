"""Ansible for the deploy test: a private, cached venv; the project's wheel; ansible-playbook run and read.

The venv holds pinned ansible-core, the `ansible` package (for community.general's chroot connection) and
ansible-lint; none of it is the project's dependency. It lives in the cache next to the Debian root, keyed by
the pins, and is marked complete only once pip finished, so an interrupted install is redone, not trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.debian_root import CACHE_DIR

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "deploy" / "ansible"
PINS = ("ansible-core==2.19.14", "ansible==12.3.0", "ansible-lint==26.10.1")
EXAMPLE_VAULT_PASSWORD = "not-a-secret"  # the example inventory holds placeholders, nothing vaulted; the test passes its own


def ansible_venv() -> Path:
    venv = CACHE_DIR / f"ansible-{hashlib.sha256(repr(PINS).encode()).hexdigest()[:12]}"
    done = venv / ".complete"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".ansible-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", *PINS], check=True,
                           capture_output=True)
            done.touch()
    return venv


def build_wheel(dest: Path, version: str | None = None) -> Path:
    """The project's wheel, built from a copy of its sources (the work tree gets no build/ or egg-info).
    ``version`` stands in for a next release: it is written into the copy only."""
    src = dest / "src"
    shutil.copytree(ROOT / "agent", src / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    if version:
        init = src / "agent" / "__init__.py"
        init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', init.read_text()))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(src)],
                   check=True, capture_output=True)
    (wheel,) = dest.glob("fixture_agent-*.whl")
    return wheel


def host_pip_args(root: Path) -> str:
    """This host's pip index settings as options for pip inside ``root``, which reaches the index as a Pi would.

    Local find-links and file:// indexes are this machine's own and are left out; a CA bundle (for a TLS proxy)
    is copied into the root, like a site's CA installed on its Pis."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], check=True, capture_output=True,
                         text=True).stdout
    settings: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.rpartition(".")
        if name and (name not in settings or scope == ":env:"):  # the environment wins, as in pip
            settings[name] = value.strip("'\"")
    args: list[str] = []
    for name in ("index-url", "extra-index-url"):
        args += [a for url in settings.get(name, "").split() if url.startswith(("http://", "https://"))
                 for a in (f"--{name}", url)]
    args += [a for host in settings.get("trusted-host", "").split() for a in ("--trusted-host", host)]
    if Path(settings.get("cert", "")).is_file():
        shutil.copy(settings["cert"], root / "etc/ssl/host-pip-ca.pem")
        args += ["--cert", "/etc/ssl/host-pip-ca.pem"]
    return " ".join(args)


RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)", re.MULTILINE)
BANNER = re.compile(r"^(TASK|RUNNING HANDLER) \[(?P<name>[^\]]+)\]", re.MULTILINE)


@dataclass
class PlaybookRun:
    rc: int
    output: str
    seconds: float
    recap: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = None
        for m in RECAP.finditer(self.output):
            pass
        if m:
            self.recap = {k: int(v) for k, v in m.groupdict().items() if k != "host"}

    def _banners(self, kind: str, outcome: str) -> list[str]:
        """Names of tasks (or handlers) with at least one result line starting with ``outcome``."""
        names, parts = [], BANNER.split(self.output)
        for i in range(1, len(parts) - 2, 3):
            if parts[i] == kind and re.search(rf"^{outcome}: ", parts[i + 2], re.MULTILINE):
                names.append(parts[i + 1])
        return names

    @property
    def changed_tasks(self) -> list[str]:
        return self._banners("TASK", "changed") + self._banners("RUNNING HANDLER", "changed")

    @property
    def handlers(self) -> list[str]:
        """Handlers that were notified (in a chroot they are skipped: no systemd to talk to)."""
        return [h for outcome in ("changed", "ok", "skipping") for h in self._banners("RUNNING HANDLER", outcome)]

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


class Ansible:
    """ansible-playbook and friends from the private venv, with a clean environment: nothing of this host's
    pip or Ansible settings leaks into the root through the chroot connection."""

    def __init__(self, venv: Path, workdir: Path) -> None:
        self.venv = venv
        self.workdir = workdir
        self.runs = 0
        self.vault_password_file = workdir / "vault-password"
        self.vault_password_file.write_text(EXAMPLE_VAULT_PASSWORD + "\n")
        self.vault_password_file.chmod(0o600)
        self.env = {
            "PATH": f"{venv / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1",
            "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "true",  # so a notified handler shows even when it is skipped
            "ANSIBLE_DISPLAY_OK_HOSTS": "true",
        }

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=ANSIBLE_DIR, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def playbook(self, inventory: Path | str, extra_vars: dict, *args: str,
                 playbook: str = "site.yml", timeout: float = 600) -> PlaybookRun:
        vars_file = self.workdir / "extra-vars.json"
        vars_file.write_text(json.dumps(extra_vars))
        start = time.monotonic()
        proc = self.run("ansible-playbook", "-i", str(inventory), playbook, "-e", f"@{vars_file}",
                        "--vault-password-file", str(self.vault_password_file), *args, timeout=timeout)
        run = PlaybookRun(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start)
        self.runs += 1
        (self.workdir / f"playbook-{self.runs}.log").write_text(run.output)  # kept with pytest's tmp dirs
        return run

    def lint(self) -> subprocess.CompletedProcess:
        return self.run("ansible-lint", "--offline", "site.yml", "roles", "inventory")
