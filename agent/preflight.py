"""What must hold before the agent can start, checked the same way by ``config check`` and by ``run``.

A config can be valid TOML with every value in range and still not run here: a token file others can read, a
``data_dir`` that is a regular file, a journal directory that cannot be created, a package that is not installed.
``config check`` said "ok" to all of those and ``run`` then died with a traceback. Now both call ``problems()``;
``run`` also turns what only start-up can know (a port another process holds) into the same one-line error.

Every problem is one line — the file, the key and its value, what is wrong, what to do — and carries an exit
status from sysexits.h, so systemd (``RestartPreventExitStatus=``) and a deploy script can tell a configuration
mistake (78) from a directory that cannot be created (73) or an address in use (69) without reading the text.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import pwd
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import plugins, secrets
from .config import Config, ConfigError, parse_listen, show_value

if TYPE_CHECKING:
    from .events.journal import Journal

# sysexits.h
EX_OK = 0
EX_UNAVAILABLE = 69  # a service or resource the config names is not available (an address in use)
EX_SOFTWARE = 70  # an internal error: a bug, or a thread that died (systemd starts the agent again)
EX_CANTCREAT = 73  # a directory or file the agent must create cannot be
EX_IOERR = 74  # the journal cannot be read or written (a disk error, no room for a salvage)
EX_TEMPFAIL = 75  # another agent holds the data directory: try again when it has stopped
EX_NOPERM = 77  # the agent's user may not read or write what the config names
EX_CONFIG = 78  # the configuration is wrong: systemd should not retry before it is fixed


class StartupError(Exception):
    """A reason the agent cannot start: one line for the operator and an exit status for the service manager."""

    def __init__(self, message: str, exit_code: int, key: str | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.key = key


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _where(cfg: Config, key: str, value: Any) -> str:
    return f"{cfg.source_path}: {key} = {show_value(str(value), limit=4096)}"


# ---------------------------------------------------------------------------------------------------- directories
def _dir_problem(cfg: Config, key: str, value: Any, directory: Path) -> StartupError | None:
    """Whether ``directory`` is (or can be made) a directory the agent can write, without creating anything."""
    where = _where(cfg, key, value)
    if directory.exists() or directory.is_symlink():
        if not directory.is_dir():
            return StartupError(f"{where}: {directory} is a file, not a directory: move it away or set {key} to a "
                                "directory", EX_CANTCREAT, key)
        if not os.access(directory, os.W_OK | os.X_OK):
            return StartupError(f"{where}: {directory} is not writable by {_user()}: chown it to the agent's user",
                                EX_NOPERM, key)
        return None
    parent = directory.parent
    while not (parent.exists() or parent.is_symlink()) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return StartupError(f"{where}: {directory} cannot be created: {parent} is a file, not a directory: move "
                            f"it away or set {key} elsewhere", EX_CANTCREAT, key)
    if not os.access(parent, os.W_OK | os.X_OK):
        return StartupError(f"{where}: {directory} cannot be created: {parent} is not writable by {_user()} "
                            f"(create {directory} for the agent's user)", EX_CANTCREAT, key)
    return None


def _journal_key(cfg: Config) -> tuple[str, Any]:
    return ("journal.path", cfg.journal.path) if cfg.journal.path else ("agent.data_dir", cfg.agent.data_dir)


def _directory_problems(cfg: Config) -> list[StartupError]:
    found = [p for p in (_dir_problem(cfg, "agent.data_dir", cfg.agent.data_dir, cfg.data_dir),) if p]
    key, value = _journal_key(cfg)
    if cfg.journal.path and not found:
        if (p := _dir_problem(cfg, key, value, cfg.journal_path.parent)) is not None:
            found.append(p)
    if not found and cfg.journal_path.is_dir():
        found.append(StartupError(f"{_where(cfg, key, value)}: {cfg.journal_path} is a directory; the journal is a "
                                  "file (set journal.path to a file name)", EX_CANTCREAT, key))
    return found


def make_directories(cfg: Config) -> None:
    """Create ``data_dir`` and the journal's directory (``run``), or raise the one-line ``StartupError``."""
    from .events.opening import make_dirs

    targets = [("agent.data_dir", cfg.agent.data_dir, cfg.data_dir)]
    if cfg.journal.path:
        targets.append(("journal.path", cfg.journal.path, cfg.journal_path.parent))
    for key, value, directory in targets:
        try:
            make_dirs(directory)  # made durable (parents fsynced) before anything is acknowledged in it
        except OSError as e:
            problem = _dir_problem(cfg, key, value, directory)
            raise problem or StartupError(f"{_where(cfg, key, value)}: cannot create {directory}: "
                                          f"{e.strerror or e}", EX_CANTCREAT, key) from None


def open_journal(cfg: Config, progress: Callable[[str], None] | None = None) -> "Journal":
    """The journal as ``[journal]`` configures it: the one place that builds a ``Journal`` from a config, for ``run``
    and for the CLI's commands alike (they once built it each their own way, the CLI without ``bad_input_max_bytes``).
    ``progress`` is told how a salvage at open is going (``run`` extends systemd's start timeout with it). Its
    failures are the one-line ``StartupError`` naming the key: a journal that cannot be created is the operator's to
    fix (EX_CANTCREAT), one that cannot be opened, read or salvaged is the disk's (EX_IOERR; the message says what
    was tried)."""
    from .events.journal import Journal, JournalError

    key, value = _journal_key(cfg)
    where = _where(cfg, key, value)
    existed = cfg.journal_path.exists()
    j = cfg.journal
    try:
        return Journal(cfg.journal_path, max_bytes=j.max_bytes, max_age=j.max_age, sync=j.sync,
                       evictable_types=j.evictable_types, bad_input_max_bytes=j.bad_input_max_bytes,
                       progress=progress)
    except JournalError as e:
        raise StartupError(f"{where}: {e}", EX_IOERR, key) from None
    except (OSError, sqlite3.Error) as e:
        what = getattr(e, "strerror", None) or str(e)
        if existed:
            raise StartupError(f"{where}: cannot open the journal {cfg.journal_path}: {what}", EX_IOERR,
                               key) from None
        raise StartupError(f"{where}: cannot create the journal {cfg.journal_path}: {what}", EX_CANTCREAT,
                           key) from None


# ---------------------------------------------------------------------------------------------------- files
#: the fields of any section that name a secret file, or a TLS file (PEM), whichever plugin it is
SECRET_FIELDS = ("token_file", "password_file")
TLS_FIELDS = ("ca_file", "cert_file", "key_file")


def _fields(cfg: Config, names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(f"{key}.{f}", getattr(sec, f)) for _, key, sec in plugins.keyed_sections(cfg) for f in names
            if getattr(sec, f, None)]


def _secret_files(cfg: Config) -> list[tuple[str, str]]:
    """(key, path) of every secret file an enabled section reads."""
    return _fields(cfg, SECRET_FIELDS)


def _tls_files(cfg: Config) -> list[tuple[str, str]]:
    return _fields(cfg, TLS_FIELDS)


def _file_problems(cfg: Config) -> list[StartupError]:
    found: list[StartupError] = []
    for key, value in _secret_files(cfg):
        p = Path(value)
        if (problem := secrets.mode_problem(p)) is not None:
            found.append(StartupError(f"{_where(cfg, key, value)}: {problem}", EX_CONFIG, key))
        elif p.exists() and not os.access(p, os.R_OK):
            found.append(StartupError(f"{_where(cfg, key, value)}: not readable by {_user()}: chown it to the "
                                      "agent's user", EX_NOPERM, key))
        elif p.is_dir():
            found.append(StartupError(f"{_where(cfg, key, value)}: is a directory, not a file", EX_CONFIG, key))
        # a secret file that does not exist yet is not an error: the sink holds its events until it appears
    for key, value in _tls_files(cfg):
        p = Path(value)
        if not p.is_file():
            what = "is a directory" if p.is_dir() else "does not exist"
            found.append(StartupError(f"{_where(cfg, key, value)}: {what}: give the path of the PEM file",
                                      EX_CONFIG, key))
        elif not os.access(p, os.R_OK):
            found.append(StartupError(f"{_where(cfg, key, value)}: not readable by {_user()}", EX_NOPERM, key))
    return found


# ---------------------------------------------------------------------------------------------------- packages
#: (section key, module, the extra that installs it)
def package_problem(cfg_source: str, key: str, module: str, extra: str) -> StartupError | None:
    if importlib.util.find_spec(module) is None:
        return StartupError(f"{cfg_source}: [{key}] needs the {module} package: pip install 'fixture-agent[{extra}]'",
                            EX_CONFIG, key)
    return None


def _package_problems(cfg: Config) -> list[StartupError]:
    needed = dict.fromkeys((p.key, *p.needs) for p, _ in plugins.configured(cfg) if p.needs)  # in build order
    return [e for key, module, extra in needed
            if (e := package_problem(cfg.source_path, key, module, extra)) is not None]


# ---------------------------------------------------------------------------------------------------- addresses
def listen_error(cfg: Config, key: str, value: str, e: OSError) -> StartupError:
    """A bind that failed, as the one line ``run`` prints."""
    where = _where(cfg, key, value)
    if e.errno == errno.EADDRINUSE:
        return StartupError(f"{where}: the address is in use by another process: stop it, or set {key} to a free "
                            "port", EX_UNAVAILABLE, key)
    if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(e, socket.gaierror):
        return StartupError(f"{where}: not an address of this machine: use 127.0.0.1, 0.0.0.0 or one of its "
                            "addresses", EX_CONFIG, key)
    if e.errno == errno.EACCES:
        return StartupError(f"{where}: ports below 1024 need privileges the agent does not have: use a port from "
                            "1024 up", EX_NOPERM, key)
    return StartupError(f"{where}: cannot listen: {e.strerror or e}", EX_UNAVAILABLE, key)


def listen_problem(cfg: Config, key: str, value: str) -> StartupError | None:
    """Try to bind ``value`` now (and let go at once). Only meaningful while the agent is not running: a running
    agent holds its own port."""
    host, port = parse_listen(value)
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
    except OSError as e:
        return listen_error(cfg, key, value, e)
    return None


def listen_addresses(cfg: Config) -> list[tuple[str, str]]:
    """(key, host:port) of everything the agent listens on: the metrics listener, and any section's ``listen``."""
    out = [("metrics.listen", cfg.metrics.listen)] if cfg.metrics.enabled else []
    return out + _fields(cfg, ("listen",))


# ---------------------------------------------------------------------------------------------------- together
def problems(cfg: Config) -> list[StartupError]:
    """Everything that would stop ``run`` and can be known without starting it, in the order ``run`` meets them."""
    return _directory_problems(cfg) + _file_problems(cfg) + _package_problems(cfg)


def check(cfg: Config) -> None:
    """Raise the first of ``problems()`` (``run``)."""
    found = problems(cfg)
    if found:
        raise found[0]


__all__ = ["EX_CANTCREAT", "EX_CONFIG", "EX_IOERR", "EX_NOPERM", "EX_OK", "EX_SOFTWARE", "EX_TEMPFAIL",
           "EX_UNAVAILABLE", "ConfigError", "StartupError", "check", "listen_addresses", "listen_error",
           "listen_problem", "make_directories", "open_journal", "problems"]
