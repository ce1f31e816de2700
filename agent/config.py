"""The TOML configuration, validated by msgspec: the core's sections, and one per source or sink from the plugin tables.

Every error names the file and the key (``config/site.toml: journal.max_bytes: …``), because the person reading it
is usually rolling a template out with Ansible to forty Pis. Unknown keys are errors too: a misspelt
``max_byte`` silently ignored is a journal that fills a card. Secrets are never inline: sections take
``*_file`` paths, so a config can be shown, diffed and logged without leaking anything.

Relative paths are taken relative to the current working directory (the demo keeps its data in ``./agent-data``).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import msgspec

from . import plugins
from .config_base import (  # noqa: F401 - the core's config vocabulary, re-exported for its callers
    ConfigError, FieldError, Section, parse_duration, parse_fields, parse_listen, parse_size, show_value,
)

DEFAULT_PATH = "/etc/fixture-agent/config.toml"


class AgentSection(Section):
    station: str = msgspec.field(default_factory=socket.gethostname)
    location: str = ""
    purpose: str = ""
    data_dir: str = "/var/lib/fixture-agent"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class JournalSection(Section):
    path: str | None = None  # default: <data_dir>/journal.db
    max_bytes: int | str = "512MB"
    max_age: float | str = "30d"
    sync: Literal["full", "normal"] = "full"
    #: Event types the journal may evict (oldest first, counted) when full; everything else is refused instead.
    evictable_types: list[str] = msgspec.field(default_factory=lambda: ["asset.telemetry"])
    #: The share of max_bytes bad input (a source's raw bytes kept as dead letters) may take; oldest deleted beyond
    #: it, so one device's junk cannot fill the journal for everyone. Default: a twentieth of max_bytes.
    bad_input_max_bytes: int | str | None = None

    def __post_init__(self) -> None:
        raw = self.max_bytes
        parse_fields(self, parse_size, "max_bytes")
        parse_fields(self, parse_duration, "max_age")
        if self.max_bytes < 64 * 1024:
            raise FieldError("max_bytes", raw, "is below the minimum: max_bytes must be at least 64KB (65536 bytes)")
        if self.bad_input_max_bytes is None:
            self.bad_input_max_bytes = max(4096, self.max_bytes // 20)
        else:
            self.bad_input_max_bytes = parse_size(self.bad_input_max_bytes)
            if not 4096 <= self.bad_input_max_bytes <= self.max_bytes // 2:
                raise ValueError("bad_input_max_bytes must be at least 4KB and at most half of max_bytes")


class MetricsSection(Section):
    enabled: bool = True
    listen: str = "127.0.0.1:9108"

    def __post_init__(self) -> None:
        try:
            parse_listen(self.listen)
        except FieldError as e:
            raise FieldError("listen", e.value, e.problem) from None


def _plugin_sections(kind: plugins.Kind, name: str) -> type:
    """``[sources]`` / ``[sinks]``: one optional key per plugin in the table (an array of tables for a plugin of
    ``many`` sections), each converted through the plugin's own section type."""
    fields: list[tuple[str, Any, Any]] = []
    for p in plugins.plugins(kind):
        if p.many:
            fields.append((p.name, list[p.section], msgspec.field(default_factory=list)))
        else:
            fields.append((p.name, p.section | None, None))
    return msgspec.defstruct(name, fields, bases=(Section,), kw_only=True, forbid_unknown_fields=True,
                             module=__name__)


SourcesSection = _plugin_sections("sources", "SourcesSection")
SinksSection = _plugin_sections("sinks", "SinksSection")


class Config(Section):
    agent: AgentSection = msgspec.field(default_factory=AgentSection)
    journal: JournalSection = msgspec.field(default_factory=JournalSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)
    sources: SourcesSection = msgspec.field(default_factory=SourcesSection)
    sinks: SinksSection = msgspec.field(default_factory=SinksSection)

    #: Where this config was read from (not a TOML key).
    source_path: str = ""

    def __post_init__(self) -> None:
        for plugin in plugins.all_plugins():  # the rules a plugin has about other sections (full key paths)
            if plugin.check is not None:
                plugin.check(self)

    @property
    def data_dir(self) -> Path:
        return Path(self.agent.data_dir)

    @property
    def journal_path(self) -> Path:
        return Path(self.journal.path) if self.journal.path else self.data_dir / "journal.db"

    def enabled_sinks(self) -> list[str]:
        return [p.name for p in plugins.plugins("sinks") if p.sections(self)]


# ------------------------------------------------------------------------------------------------ loading
#: msgspec's type names, as a config error says them
_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "array": "an array", "object": "a table", "null": "nothing", "datetime": "a date-time",
               "date": "a date", "time": "a time"}
_MISSING: Any = object()
_PATH_TOKEN = re.compile(r"\.?([A-Za-z0-9_-]+)|\[(\d+|\.\.\.)\]")


def _words(types: str) -> str:
    """``int | str`` → ``an integer or a string``."""
    return " or ".join(_TYPE_WORDS.get(t.strip(), t.strip()) for t in types.split("|"))


def _unwrap(tp: Any) -> Any:
    """``X | None`` → ``X`` (the Struct, list or dict inside an optional)."""
    args = [a for a in get_args(tp) if a is not type(None)] if get_origin(tp) in (types.UnionType, Union) else []
    return args[0] if len(args) == 1 else tp


def _field_types(cls: Any) -> dict[str, Any]:
    if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
        return {}
    hints = get_type_hints(cls)
    return {f: hints[f] for f in cls.__struct_fields__ if f != "source_path"}


def _join(path: str, key: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
        key = json.dumps(key, ensure_ascii=False)
    return f"{path}.{key}" if path else key


def _walk(data: Any, path: str) -> tuple[str, Any, Any]:
    """Follow msgspec's error path (``sources.serial[0].baud``, ``sinks.wats.process_codes[...]``) through the TOML
    data and the Config type: the key as the user writes it, the value found there and the type it must have. A
    dict entry (``[...]``: msgspec does not say which) is the first one that does not convert."""
    key, raw, tp = "", data, Config
    for name, index in _PATH_TOKEN.findall(path):
        tp = _unwrap(tp)
        if name:
            tp = _field_types(tp).get(name, Any)
            raw = raw.get(name, _MISSING) if isinstance(raw, dict) else _MISSING
            key = _join(key, name)
        elif index == "...":
            tp = get_args(tp)[1] if get_origin(tp) is dict and len(get_args(tp)) == 2 else Any
            if not isinstance(raw, dict) or not raw:
                return key, _MISSING, tp
            bad = next((k for k, v in raw.items() if not _converts(v, tp)), next(iter(raw)))
            key, raw = _join(key, str(bad)), raw[bad]
        else:
            tp = get_args(tp)[0] if get_origin(tp) is list and get_args(tp) else Any
            raw = raw[int(index)] if isinstance(raw, list) and int(index) < len(raw) else _MISSING
            key = f"{key}[{index}]"
    return key, raw, _unwrap(tp)


def _converts(value: Any, tp: Any) -> bool:
    try:
        msgspec.convert(value, tp)
        return True
    except (msgspec.ValidationError, TypeError, RecursionError):
        return False


def _one_of(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " (one of " + ", ".join(show_value(v) for v in get_args(tp)) + ")"
    return ""


def _error(name: str, key: str, value: Any, problem: str) -> ConfigError:
    where = f"{key} = {show_value(value)}" if value is not _MISSING else key
    if not where:
        return ConfigError(f"{name}: {problem}")
    sep = " " if value is not _MISSING and problem.startswith(("is ", "must ", "are ")) else ": "
    return ConfigError(f"{name}: {where}{sep}{problem}", key or None)


def _validation_error(e: msgspec.ValidationError, data: dict[str, Any], name: str) -> ConfigError:
    """msgspec's ``… - at `$.journal` `` (and the exception a ``__post_init__`` raised) → ``file: journal.max_bytes
    = -5: what is allowed``."""
    m = re.search(r" - at `\$\.?([^`]*)`$", str(e))
    path, msg = (m.group(1), str(e)[: m.start()]) if m else ("", str(e))
    cause = e.__cause__
    key, raw, tp = _walk(data, path)
    if isinstance(cause, FieldError):
        field = cause.field
        if field is None and isinstance(raw, dict):  # a parse helper that did not know its key: find it by value
            field = next((k for k, v in raw.items() if type(v) is type(cause.value) and v == cause.value), None)
        value = cause.value
        if field:
            if isinstance(raw, dict) and field in raw:
                value = raw[field]  # as written ("1s"), not as converted (1.0)
            key = f"{key}.{field}" if key else field
        return _error(name, key, value, cause.problem)
    if cause is not None:  # a plain ValueError from a section's own check: its first word is usually the field
        fields = _field_types(tp)
        first = re.match(r"[a-z_][a-z0-9_]*\b", msg)
        field = first.group(0) if first and first.group(0) in fields else None
        if field is None and isinstance(raw, dict):
            field = next((k for k, v in raw.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)
                          and (repr(v) in msg or show_value(v) in msg)), None)
        if field and isinstance(raw, dict):
            return _error(name, _join(key, field), raw.get(field, _MISSING), msg)
        return _error(name, key, _MISSING, msg)
    if (u := re.match(r"Object contains unknown field `(.*)`$", msg, re.S)):
        allowed = ", ".join(_field_types(tp)) or "none"
        value = raw.get(u.group(1), _MISSING) if isinstance(raw, dict) else _MISSING
        what = f"unknown key; [{key}] takes: {allowed}" if key else f"unknown section; the sections are: {allowed}"
        return _error(name, _join(key, u.group(1)), value, what)
    if (r := re.match(r"Object missing required field `(.*)`$", msg, re.S)):
        return _error(name, _join(key, r.group(1)), _MISSING, f"required in [{key}]" if key else "required")
    if (t := re.match(r"Expected `(.*)`, got `(.*)`$", msg, re.S)):
        return _error(name, key, raw, f"must be {_words(t.group(1))}, not {_words(t.group(2))}{_one_of(tp)}")
    if msg.startswith("Invalid enum value"):
        return _error(name, key, raw, f"not allowed{_one_of(tp)}")
    return _error(name, key, raw, msg[:1].lower() + msg[1:])


def _check_numbers(data: dict[str, Any], name: str) -> None:
    """TOML has ``nan`` and ``inf``; no key of ours means either (a rate of ``inf`` would spin a thread)."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        key, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise _error(name, key, v, "must be a finite number")
        if isinstance(v, dict):
            stack.extend((_join(key, str(k)), x) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((f"{key}[{i}]", x) for i, x in enumerate(v))


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file (``-c``, ``$FIXTURE_AGENT_CONFIG`` or the default path)."""
    p = Path(path or os.environ.get("FIXTURE_AGENT_CONFIG") or DEFAULT_PATH)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found (pass -c FILE or set FIXTURE_AGENT_CONFIG)") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a config file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None
    return parse_config(raw, str(p))


def parse_config(raw: bytes | str, name: str = "<config>") -> Config:
    """Parse and validate; every problem is a ``ConfigError`` naming ``name``, the key, the value and what is
    allowed (the fuzz tests hold it to that for any input)."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{name}: not valid TOML: not UTF-8 at byte {e.start}") from None
    else:
        text = raw
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{name}: not valid TOML: nested too deep") from None
    if "source_path" in data:
        raise ConfigError(f"{name}: source_path: not a config key", "source_path")
    _check_numbers(data, name)
    try:
        cfg = msgspec.convert(data, Config)
    except msgspec.ValidationError as e:
        raise _validation_error(e, data, name) from None
    except RecursionError:
        raise ConfigError(f"{name}: nested too deep") from None
    cfg.source_path = name
    return cfg
