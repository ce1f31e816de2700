"""A Debian bookworm root made by debootstrap (what Raspberry Pi OS is built on), for the playbook to run against.

debootstrap takes most of a minute, so the bare root is made once per machine and kept as a tarball in the
cache, named after everything that shapes it; each test run extracts a fresh copy, so the playbook always meets
a clean system. Only /proc is mounted into it (debootstrap made the /dev nodes), and it is unmounted before the
copy is deleted: a delete that followed a live bind mount would reach the host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

CACHE_DIR = Path(os.environ.get("FIXTURE_AGENT_TEST_CACHE", "/var/cache/fixture-agent-tests"))
SUITE = "bookworm"
# What a Raspberry Pi OS Lite image has and a minbase root lacks: Python with venv, systemd, the CA bundle.
INCLUDE = ("python3", "python3-venv", "systemd", "ca-certificates")
# No service may start inside the root: package scripts ask invoke-rc.d, which asks this (101: not allowed).
# A real Pi needs nothing of the kind.
POLICY_RC_D = "#!/bin/sh\nexit 101\n"


def ensure_apt_packages(*packages: str) -> None:
    """Install what the host lacks, non-interactively (the caller made sure we are root on Debian)."""
    missing = [p for p in packages if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                                     text=True, check=False).stdout != "install ok installed"]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env,
                   capture_output=True)


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses for the suite (deb822 .sources files, then sources.list)."""
    apt = Path("/etc/apt")
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and SUITE in fields.get("suites", []) \
                    and "main" in fields.get("components", []):
                return fields["uris"][0]
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        for line in path.read_text().splitlines() if path.exists() else []:
            words = [w for w in line.split() if not w.startswith("[")]
            if len(words) >= 4 and words[0] == "deb" and words[2] == SUITE and "main" in words[3:]:
                return words[1]
    raise RuntimeError(f"no Debian {SUITE} mirror in /etc/apt: the deploy test takes debootstrap's mirror from there")


def _arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip() or platform.machine()


def pristine_tarball() -> Path:
    """The cached bare root, made on first use (under a lock, so two runs do not debootstrap twice)."""
    key = hashlib.sha256(repr((SUITE, _arch(), "minbase", INCLUDE)).encode()).hexdigest()[:12]
    tarball = CACHE_DIR / f"debian-{SUITE}-{_arch()}-{key}.tar"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".debootstrap.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="debootstrap-") as tmp:
            root = Path(tmp) / "root"
            subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE, str(root),
                            debian_mirror()], check=True, capture_output=True)
            subprocess.run(["chroot", str(root), "apt-get", "clean"], check=True)
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)  # whole or not at all: an interrupted run leaves no half root behind
    return tarball


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    with open("/proc/self/mounts") as f:
        return [m for m in (line.split()[1] for line in f) if m == prefix or m.startswith(prefix + "/")]


@contextlib.contextmanager
def fresh_root(where: Path) -> Iterator[Path]:
    """A clean copy of the cached root at ``where``, with /proc mounted while it is in use."""
    where.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(where), "-xf", str(pristine_tarball())], check=True)
    policy = where / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    shutil.copy("/etc/resolv.conf", where / "etc/resolv.conf")  # apt and pip inside look names up
    subprocess.run(["mount", "-t", "proc", "proc", str(where / "proc")], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where / "proc")], check=False)
        left = _mounts_under(where)
        if left:
            raise RuntimeError(f"not deleting {where}: still mounted: {left}")
        shutil.rmtree(where)


def in_root(root: Path, *cmd: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """A command inside the root, its output as text."""
    return subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, check=check,
                          timeout=timeout, **kw)
