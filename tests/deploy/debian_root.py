"""A Debian bookworm root made by debootstrap (what Raspberry Pi OS is built on), for the playbook to run against.

debootstrap takes most of a minute, so the bare root is made once per machine and kept as a tarball in the
cache, named after everything that shapes it; each test run extracts a fresh copy, so the playbook always meets
a clean system. Only /proc is mounted into it (debootstrap made the /dev nodes), and it is unmounted before the
copy is deleted: a delete that followed a live bind mount would reach the host.

A root of another architecture (``arch="arm64"`` or ``"armhf"``, the two Raspberry Pi OS ports) is made the same
way in two stages: debootstrap --foreign unpacks it here, then its own second stage runs inside it under
qemu-user-static, which binfmt_misc hands every foreign binary to. The handlers must be registered with the F
flag (the interpreter opened once, on the host), as qemu-user-static's are, so nothing of qemu is copied into
the root: it stays what a Pi would have.
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


# Debian's name for an architecture -> qemu-user-static's binfmt_misc handler for it
QEMU_HANDLERS = {"arm64": "qemu-aarch64", "armhf": "qemu-arm"}
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def ensure_emulation(arch: str) -> None:
    """Make binaries of ``arch`` run on this host: qemu-user-static, binfmt_misc mounted, its handler enabled.

    Raises with what is missing rather than letting debootstrap's second stage fail with "Exec format error"."""
    handler = QEMU_HANDLERS.get(arch)
    if handler is None:
        raise ValueError(f"arch = {arch!r}: this host ({_arch()}) emulates only {sorted(QEMU_HANDLERS)}")
    ensure_apt_packages("qemu-user-static", "binfmt-support", "debootstrap")
    if not (BINFMT / "status").exists():
        subprocess.run(["mount", "binfmt_misc", "-t", "binfmt_misc", str(BINFMT)], check=True, capture_output=True)
    entry = BINFMT / handler
    if not entry.exists() or entry.read_text().splitlines()[0] != "enabled":
        subprocess.run(["update-binfmts", "--enable", handler], check=False, capture_output=True)
    if not entry.exists() or entry.read_text().splitlines()[0] != "enabled":
        raise RuntimeError(f"binfmt_misc has no enabled {handler} handler ({entry}): "
                           f"`update-binfmts --display {handler}` says why")
    flags = next((line.split()[1] for line in entry.read_text().splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        raise RuntimeError(f"{entry} lacks the F flag (flags: {flags!r}): the interpreter would be looked up inside "
                           "the chroot; register qemu-user-static's handlers (update-binfmts --enable)")


def pristine_tarball(arch: str | None = None) -> Path:
    """The cached bare root for ``arch`` (default: this host's), made on first use (under a lock per
    architecture, so two runs do not debootstrap the same one twice)."""
    arch = arch or _arch()
    foreign = arch != _arch()
    if foreign:
        ensure_emulation(arch)
    key = hashlib.sha256(repr((SUITE, arch, "minbase", INCLUDE)).encode()).hexdigest()[:12]
    tarball = CACHE_DIR / f"debian-{SUITE}-{arch}-{key}.tar"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".debootstrap-{arch}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix=f"debootstrap-{arch}-") as tmp:
            root = Path(tmp) / "root"
            stage = ["--foreign", f"--arch={arch}"] if foreign else []
            _run_logged(["debootstrap", *stage, "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE,
                         str(root), debian_mirror()], root)
            if foreign:  # the second stage configures the packages, so it runs the root's own binaries
                _run_logged(["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"], root)
            subprocess.run(["chroot", str(root), "apt-get", "clean"], check=True)
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)  # whole or not at all: an interrupted run leaves no half root behind
    return tarball


def _run_logged(cmd: list[str], root: Path) -> None:
    """Run a debootstrap stage; on failure, raise with the end of its output and of debootstrap's own log."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        log = root / "debootstrap/debootstrap.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"{' '.join(cmd[:3])} … failed ({proc.returncode}):\n{proc.stdout[-2000:]}"
                           f"{proc.stderr[-2000:]}\n{tail}")


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    with open("/proc/self/mounts") as f:
        return [m for m in (line.split()[1] for line in f) if m == prefix or m.startswith(prefix + "/")]


@contextlib.contextmanager
def fresh_root(where: Path, arch: str | None = None) -> Iterator[Path]:
    """A clean copy of the cached root for ``arch`` (default: this host's) at ``where``, with /proc mounted while
    it is in use."""
    where.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(where), "-xf", str(pristine_tarball(arch))], check=True)
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
