"""Secrets from files: a WATS token, a broker password. Never inline in the config, never in a log line.

A file readable by group or others is refused at start with the ``chmod`` that fixes it: on a fleet provisioned
by templates, a world-readable secret is a mistake that repeats forty times.
"""

from __future__ import annotations

import stat
from pathlib import Path

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
