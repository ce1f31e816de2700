"""Secrets from files: a WATS token, a broker password. Never inline in the config, never in a log line.

A file readable by group or others is refused at start with the ``chmod`` that fixes it: on a fleet provisioned
by templates, a world-readable secret is a mistake that repeats forty times.
"""

from __future__ import annotations

import stat
from pathlib import Path

from .config import ConfigError


def read_secret_file(path: str | Path, what: str) -> str | None:
    """The file's content stripped, or None if it does not exist (yet). ``what`` names the setting in errors."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(f"{what} file {p}: must not be readable by group or others (chmod 600 {p})")
    try:
        return p.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{what} file {p}: cannot read it: {e.strerror}") from None
