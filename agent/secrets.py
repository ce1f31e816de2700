"""Secrets: a WATS token, a broker password. Never inline in the config, never in a log line.

One resolver for every secret (``resolve``), with the same keys in every section that has one: ``<name>_file`` (a
file of mode 0600), ``<name>_credential`` (a systemd credential, ``LoadCredential=`` in the unit, found in
``$CREDENTIALS_DIRECTORY``) and ``<name>_env`` (an environment variable), tried in that order. A file readable by
group or others is refused with the ``chmod`` that fixes it: on a fleet provisioned by templates, a world-readable
secret is a mistake that repeats forty times.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .config_base import ConfigError


def mode_problem(path: Path, mode: int | None = None) -> str | None:
    """The one rule for secret files, for ``config check`` (preflight) and for reading them here: no access for
    group or others. None if the file is fine or absent."""
    if mode is None:
        try:
            mode = path.stat().st_mode
        except OSError:
            return None
    mode = stat.S_IMODE(mode)
    if mode & 0o077:
        return f"must not be readable by group or others (mode {mode:04o}): chmod 600 {path}"
    return None


def read_secret_file(path: str | Path, what: str) -> str | None:
    """The file's content stripped, or None if it does not exist (yet). ``what`` names the setting in errors."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    if (problem := mode_problem(p, st.st_mode)) is not None:
        raise ConfigError(f"{what} file {p}: {problem}")
    try:
        return p.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{what} file {p}: cannot read it: {e.strerror}") from None


def locate(section: Any, name: str) -> tuple[Path | None, str | None]:
    """Where ``section``'s secret ``name`` (``"token"``, ``"password"``) is to be read from: (a file, or None and
    the environment variable's name), or (None, None) when none of its keys is set."""
    path = getattr(section, f"{name}_file", None)
    if path:
        return Path(path), None
    credential = getattr(section, f"{name}_credential", None)
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if credential and creds and (Path(creds) / credential).exists():
        return Path(creds) / credential, None
    return None, getattr(section, f"{name}_env", None) or None


def resolve(section: Any, name: str, key: str) -> tuple[str | None, str]:
    """``section``'s secret ``name``: (the value, or None if it is not there yet; where it was looked for, for
    messages: a path or ``$VARIABLE``, never the value). ``key`` (``sinks.wats.token``) names it in errors: a file
    readable by others or unreadable raises ``ConfigError``."""
    path, env = locate(section, name)
    if path is not None:
        return read_secret_file(path, key), str(path)
    if env:
        return (os.environ.get(env) or "").strip() or None, f"${env}"
    return None, f"{key}_file"


def configured(section: Any, name: str) -> bool:
    """Whether any of the secret's keys is set (a file, a credential name, an environment variable)."""
    return any(getattr(section, f"{name}_{k}", None) for k in ("file", "credential", "env"))
