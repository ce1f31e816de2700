"""The TOML configuration, validated by msgspec: one section per source or sink.

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
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import msgspec

DEFAULT_PATH = "/etc/fixture-agent/config.toml"


class ConfigError(ValueError):
    """A configuration problem; the message names the file, the key (``journal.max_bytes``), the value and what is
    allowed. ``key`` is the full key path (None when the file as a whole is wrong, such as bad TOML)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class FieldError(ValueError):
    """A wrong value for one key, raised while a section is validated.

    ``field`` is the key relative to the section (``"max_bytes"``, or a dotted path from the section such as
    ``"serial[1].name"``); ``None`` when the raiser does not know it (``parse_duration`` called in a loop): the loader
    then finds the key whose value it was. ``problem`` says what is allowed. The loader turns it into
    ``file: journal.max_bytes = -5: must be …``, so no raiser has to know the file or the section's path."""

    def __init__(self, field: str | None, value: Any, problem: str) -> None:
        self.field, self.value, self.problem = field, value, problem
        super().__init__(f"{field + ' = ' if field else ''}{show_value(value)}: {problem}")


def show_value(value: Any, limit: int = 160) -> str:
    """A value as it is written in TOML (``"30 seconds"``, ``-5``, ``true``), cut short: a config error quotes what
    the user wrote, not Python's spelling of it."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE_MAX = 2**50  # a pebibyte: anything larger is a typo, and would overflow SQLite's and the OS's sizes
_SIZE_HINT = "a size such as 4096, \"64MB\" or \"1GiB\""
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.I)
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_MAX = 100 * 365 * 86400.0  # a century: longer waits overflow threading's timeouts
_DURATION_HINT = "a duration such as 2.5, \"500ms\", \"12h\" or \"30d\""


def parse_size(value: int | str) -> int:
    """``"512MB"``, ``"1GiB"``, ``4096`` → bytes. A wrong value raises ``FieldError`` (a ``ValueError``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise FieldError(None, value, f"must not be negative ({_SIZE_HINT})")
        n = value
    else:
        m = _SIZE.match(str(value)) if isinstance(value, str) else None
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise FieldError(None, value, f"is not {_SIZE_HINT}")
        n = int(Decimal(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    if n > _SIZE_MAX:
        raise FieldError(None, value, "is too large (at most 1PiB)")
    return n


def parse_duration(value: float | int | str) -> float:
    """``"30d"``, ``"12h"``, ``"500ms"``, ``2.5`` → seconds. A wrong value raises ``FieldError``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise FieldError(None, value, f"is not {_DURATION_HINT}")
        if value < 0:
            raise FieldError(None, value, f"must not be negative ({_DURATION_HINT})")
        seconds = float(value)
    else:
        m = _DURATION.match(str(value)) if isinstance(value, str) else None
        if not m:
            raise FieldError(None, value, f"is not {_DURATION_HINT}")
        unit = m.group(2).lower() if m.group(2) else None
        seconds = float(m.group(1)) * _DURATION_UNITS[unit]
    if not seconds <= _DURATION_MAX:
        raise FieldError(None, value, "is too long (at most 100 years)")
    return seconds


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"``, ``"[::1]:9108"``, ``":9108"`` → (host, port)."""
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise FieldError(None, value, "is not host:port with a port from 0 to 65535 (example: \"127.0.0.1:9108\")")
    return host.strip("[]") or "127.0.0.1", int(port)


def _parse_fields(section: Any, parse: Callable[[Any], Any], *fields: str) -> None:
    """Convert ``fields`` of ``section`` in place with ``parse``, naming the field in the error."""
    for f in fields:
        try:
            setattr(section, f, parse(getattr(section, f)))
        except FieldError as e:
            raise FieldError(f, e.value, e.problem) from None


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class AgentSection(_Section):
    station: str = msgspec.field(default_factory=socket.gethostname)
    location: str = ""
    purpose: str = ""
    data_dir: str = "/var/lib/fixture-agent"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class JournalSection(_Section):
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
        _parse_fields(self, parse_size, "max_bytes")
        _parse_fields(self, parse_duration, "max_age")
        if self.max_bytes < 64 * 1024:
            raise FieldError("max_bytes", raw, "is below the minimum: max_bytes must be at least 64KB (65536 bytes)")
        if self.bad_input_max_bytes is None:
            self.bad_input_max_bytes = max(4096, self.max_bytes // 20)
        else:
            self.bad_input_max_bytes = parse_size(self.bad_input_max_bytes)
            if not 4096 <= self.bad_input_max_bytes <= self.max_bytes // 2:
                raise ValueError("bad_input_max_bytes must be at least 4KB and at most half of max_bytes")


class MetricsSection(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:9108"

    def __post_init__(self) -> None:
        try:
            parse_listen(self.listen)
        except FieldError as e:
            raise FieldError("listen", e.value, e.problem) from None


class SimulatedSourceSection(_Section):
    """The built-in simulated fixture: test results, absolute counters and telemetry, no hardware needed."""

    enabled: bool = True
    asset_id: str = "SIM-FIXTURE-1"
    part_number: str = "DEMO-PCBA-100"
    revision: str = "A"
    interval: float | str = 2.0
    fail_rate: float = 0.1
    telemetry_every: int = 5
    seed: int | None = None

    def __post_init__(self) -> None:
        raw = self.interval
        _parse_fields(self, parse_duration, "interval")
        if self.interval <= 0:
            raise FieldError("interval", raw, "must be more than 0 seconds")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise FieldError("fail_rate", self.fail_rate, "must be between 0 and 1")
        if self.telemetry_every < 0:
            raise FieldError("telemetry_every", self.telemetry_every, "must be 0 (never) or more")


class ScpiQuery(_Section):
    """One polled SCPI query: the agent judges the value against the limits under ``comp_op`` (WATS' operators;
    left out, it follows from the limits given: ``GELE``, ``GE``, ``LE`` or ``LOG``)."""

    name: str
    command: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    nominal: float | None = None
    comp_op: str | None = None

    def __post_init__(self) -> None:
        from .events import limits

        if self.comp_op is not None:
            self.comp_op = self.comp_op.strip().upper()
            try:
                limits.limits_of(self.comp_op, self.low, self.high)
            except limits.LimitError as e:
                raise FieldError("comp_op", self.comp_op, str(e)) from None


class SerialSourceSection(_Section, kw_only=True):
    """A fixture on a serial port; ``driver`` picks the protocol (``jsonl`` controller or ``scpi`` instrument)."""

    name: str
    port: str
    driver: Literal["jsonl", "scpi"]
    asset_id: str
    baud: int = 115200
    max_line_bytes: int = 4096
    reconnect_min: float | str = "0.5s"
    reconnect_max: float | str = "30s"
    # scpi only
    timeout: float | str = "2s"
    selftest_timeout: float | str = "30s"
    selftest_on_connect: bool = True
    poll_interval: float | str = "10s"
    queries: list[ScpiQuery] = []
    drain_errors: bool = True

    def __post_init__(self) -> None:
        _parse_fields(self, parse_duration, "reconnect_min", "reconnect_max", "timeout", "selftest_timeout",
                      "poll_interval")
        _check_name(self.name)
        if not 0 < self.baud <= 10_000_000:
            raise FieldError("baud", self.baud, "must be a baud rate from 1 to 10000000 (e.g. 115200)")
        if not 64 <= self.max_line_bytes <= 1_048_576:
            raise FieldError("max_line_bytes", self.max_line_bytes, "must be between 64 and 1048576")
        if self.reconnect_min <= 0 or self.reconnect_max < self.reconnect_min:
            raise FieldError("reconnect_min", self.reconnect_min, "must be more than 0 and at most reconnect_max")
        if self.driver != "scpi" and self.queries:
            raise FieldError("queries", [q.name for q in self.queries], "are for driver = \"scpi\"")


class GpioSourceSection(_Section, kw_only=True):
    """Fixture pins (BCM numbers): actuation counter, lid switch, pass/fail lamps, loopback self-test."""

    asset_id: str
    pin_factory: str | None = None  # gpiozero's: "lgpio", "rpigpio", "native", "mock" (tests, demos)
    counter_pin: int | None = None
    counter_active_low: bool = True  # a switch to ground with the internal pull-up
    counter_bounce: float | str = "20ms"
    lid_pin: int | None = None
    lid_closed_when_low: bool = True
    lid_closed_state: Literal["busy", "online", "idle"] = "busy"
    lid_open_state: Literal["idle", "online"] = "idle"
    pass_lamp_pin: int | None = None
    fail_lamp_pin: int | None = None
    lamp_hold: float | str = "5s"  # 0: until the next result
    loopback_out_pin: int | None = None
    loopback_in_pin: int | None = None
    selftest_interval: float | str = "1h"  # 0: only at start

    def __post_init__(self) -> None:
        _parse_fields(self, parse_duration, "counter_bounce", "lamp_hold", "selftest_interval")
        seen: dict[int, str] = {}
        for f in ("counter_pin", "lid_pin", "pass_lamp_pin", "fail_lamp_pin", "loopback_out_pin", "loopback_in_pin"):
            pin = getattr(self, f)
            if pin is None:
                continue
            if not 0 <= pin <= 53:
                raise FieldError(f, pin, "must be a BCM GPIO number from 0 to 53")
            if pin in seen:
                raise FieldError(f, pin, f"is already {seen[pin]}: every pin has one job")
            seen[pin] = f
        if (self.loopback_out_pin is None) != (self.loopback_in_pin is None):
            f = "loopback_out_pin" if self.loopback_in_pin is None else "loopback_in_pin"
            raise FieldError(f, getattr(self, f), "the loopback self-test needs both loopback_out_pin and "
                                                   "loopback_in_pin")


class SourcesSection(_Section):
    simulated: SimulatedSourceSection | None = None
    serial: list[SerialSourceSection] = []
    gpio: GpioSourceSection | None = None
    mqtt: "MqttSourceSection | None" = None
    cfx: "CfxSourceSection | None" = None

    def __post_init__(self) -> None:
        names = [s.name for s in self.serial]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise FieldError(f"serial[{i}].name", n, f"is the name of sources.serial[{names.index(n)}] too: "
                                 "every serial source needs its own")


class WatsProductRule(_Section, kw_only=True):
    """``[[sinks.wats.products]]``: results whose recipe (CFX ``RecipeName``, an MQTT or serial ``recipe``), or
    failing that their part number, match ``match`` (a glob, case-sensitive) are filed under this part number,
    revision and process code. Tried in order; the first match wins."""

    match: str
    part_number: str | None = None
    revision: str | None = None
    process_code: int | None = None

    def __post_init__(self) -> None:
        if not self.match.strip():
            raise FieldError("match", self.match, "must be a recipe or part-number pattern (a glob: \"PCB4711*\")")
        if self.part_number is None and self.revision is None and self.process_code is None:
            raise FieldError("match", self.match, "a rule needs part_number, revision or process_code")
        for key in ("part_number", "revision"):
            value = getattr(self, key)
            if value is not None and (not value.strip() or len(value) > 100
                                      or set(value) & set("*%?[]^!/\\")):
                raise FieldError(key, value, "must be 1-100 characters without * % ? [ ] ^ ! / \\")


class WatsSinkSection(_Section, kw_only=True):
    """The WATS uplink. The token comes from ``token_file`` (mode 0600), a systemd credential, or ``token_env``."""

    url: str
    enabled: bool = True
    token_file: str | None = None
    token_env: str = "FIXTURE_AGENT_WATS_TOKEN"
    token_credential: str = "wats-token"  # the systemd credential's name, looked up in $CREDENTIALS_DIRECTORY
    verify_tls: bool = True
    timeout: float | str = "30s"
    #: test type ("test", "selftest", "poll", "inspection" …) → WATS test operation code
    process_codes: dict[str, int] = {}
    default_process_code: int | None = None
    default_part_number: str | None = None
    default_revision: str = "1"
    operator: str = "fixture-agent"
    requests_per_minute: int = 500
    require_clock_sync: bool = True
    processes_refresh: float | str = "1h"
    retry_max: float | str = "5m"  # the longest wait between attempts while WATS is away
    #: "absolute": SetRunningCount/SetTotalCount (WATS >= 25.3); "increment": Count?incrementBy from a ledger
    counters_api: str = "absolute"
    #: after an ambiguous failure (timeout, reset) of a non-idempotent request, how long WATS is given to finish
    #: with it before the agent checks whether it landed and, if not, sends it again
    in_doubt_grace: float | str = "60s"
    #: part-number rules, and what a result's recipe counts for when none matches (docs/wats-uplink.md)
    products: list[WatsProductRule] = []
    recipe_as_part_number: bool = False
    #: a part number, serial number or revision with a character WATS refuses (* % ? [ ] ^ ! / \\): "refuse"
    #: (a dead letter naming the field) or "replace" it with identifier_replacement
    identifier_chars: Literal["refuse", "replace"] = "refuse"
    identifier_replacement: str = "_"

    def __post_init__(self) -> None:
        _parse_fields(self, parse_duration, "timeout", "processes_refresh", "retry_max", "in_doubt_grace")
        if len(self.identifier_replacement) != 1 or self.identifier_replacement in "*%?[]^!/\\":
            raise FieldError("identifier_replacement", self.identifier_replacement,
                             "must be one character WATS accepts (\"_\" or \"-\")")
        if not re.fullmatch(r"https?://[^/\s?#@]+(/\S*)?", self.url):
            raise FieldError("url", self.url, "must be https://host[/path] (or http:// for a test server)")
        if self.timeout <= 0:
            raise FieldError("timeout", self.timeout, "must be more than 0 seconds")
        if self.requests_per_minute <= 0:
            raise FieldError("requests_per_minute", self.requests_per_minute, "must be more than 0")
        if self.counters_api not in ("absolute", "increment"):
            raise FieldError("counters_api", self.counters_api, "must be \"absolute\" (WATS >= 25.3) or "
                             "\"increment\" (older servers)")


def default_client_id(station: str, role: str) -> str:
    """``fixture-agent-<station>-<role>``, in the characters every broker accepts. Stable across restarts: a
    persistent session is found again by its client id."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", f"fixture-agent-{station}-{role}")[:64]


class MqttConnectionSection(_Section, kw_only=True):
    """How to reach a broker; shared by ``sources.mqtt`` and ``sinks.mqtt`` (they may be different brokers)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int | None = None  # 1883, or 8883 with TLS
    client_id: str | None = None  # default: fixture-agent-<station>-<role>; must be stable for a persistent session
    protocol: str | int = "5"  # "5" or "3.1.1"
    username: str | None = None
    password_file: str | None = None  # mode 0600; the password is never inline
    tls: bool = False  # implied by ca_file / cert_file
    ca_file: str | None = None  # default with tls: the system's CAs
    cert_file: str | None = None  # client certificate (with key_file)
    key_file: str | None = None
    verify_tls: bool = True
    keepalive: float | str = "30s"
    reconnect_min: float | str = "1s"
    reconnect_max: float | str = "60s"

    def __post_init__(self) -> None:
        _parse_fields(self, parse_duration, "keepalive", "reconnect_min", "reconnect_max")
        if str(self.protocol) not in ("5", "3.1.1"):
            raise FieldError("protocol", self.protocol, "must be \"5\" or \"3.1.1\"")
        self.protocol = str(self.protocol)
        if self.ca_file or self.cert_file:
            self.tls = True
        if self.port is None:
            self.port = 8883 if self.tls else 1883
        if not 0 < self.port < 65536:
            raise FieldError("port", self.port, "must be a TCP port from 1 to 65535")
        if not self.host or any(c.isspace() for c in self.host) or "/" in self.host:
            raise FieldError("host", self.host, "must be a host name or address (no scheme, port or spaces)")
        if bool(self.cert_file) != bool(self.key_file):
            f = "key_file" if self.cert_file else "cert_file"
            raise FieldError(f, getattr(self, f), "cert_file and key_file go together (the client certificate and "
                                                 "its key)")
        if self.password_file and not self.username:
            raise FieldError("username", self.username, "is needed with password_file")
        if not 5 <= self.keepalive <= 3600:
            raise FieldError("keepalive", self.keepalive, "must be between 5s and 1h")
        if self.reconnect_min <= 0 or self.reconnect_max < self.reconnect_min:
            raise FieldError("reconnect_min", self.reconnect_min, "must be more than 0 and at most reconnect_max")
        if self.client_id is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", self.client_id):
            raise FieldError("client_id", self.client_id, "use 1-64 letters, digits, '.', '_', ':' or '-'")

    @property
    def broker(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


ADAPTER_NAMES = ("asset", "asset_alert", "test_result", "selftest", "measurements", "software", "unit")


class MqttSubscription(_Section, kw_only=True):
    """A topic filter and how its messages become events: a built-in ``adapter``, or a ``mapping`` (an
    ``event_type`` and, for each field of its payload, the dotted path it is read from in the message)."""

    topic: str
    adapter: str | None = None
    event_type: str | None = None
    fields: dict[str, str] = {}
    device_field: str | None = None  # payload field that gets the device id from the topic's '+' level
    qos: Literal[0, 1] = 1

    def __post_init__(self) -> None:
        _check_topic_filter(self.topic)
        if (self.adapter is None) == (self.event_type is None):
            raise FieldError("adapter", self.adapter, f"give either adapter (one of {', '.join(ADAPTER_NAMES)}) "
                             "or event_type + fields")
        if self.adapter is not None and self.adapter not in ADAPTER_NAMES:
            raise FieldError("adapter", self.adapter, f"must be one of {', '.join(ADAPTER_NAMES)}")
        if self.event_type is not None and not self.fields:
            raise FieldError("fields", self.fields, "event_type needs fields (payload field = \"path.in.message\")")
        if self.adapter is not None and (self.fields or self.device_field):
            f = "fields" if self.fields else "device_field"
            raise FieldError(f, getattr(self, f), "fields and device_field are for event_type mappings, not adapter")


def _check_topic_filter(topic: str) -> None:
    levels = topic.split("/")
    if not topic or any(("+" in lv and lv != "+") or ("#" in lv and lv != "#") for lv in levels) \
            or "#" in levels[:-1] or "\0" in topic or len(topic.encode()) > 65535:
        raise FieldError("topic", topic, "is not an MQTT topic filter ('+' and '#' must be whole levels, "
                         "'#' only last)")


class MqttSourceSection(MqttConnectionSection, kw_only=True):
    """Ingest from devices on a broker (usually the Pi's own mosquitto)."""

    name: str = "mqtt"
    default_topics: bool = True  # the seed's topic plan (assets/+/status …); site subscriptions are tried first
    subscriptions: list[MqttSubscription] = []
    max_payload_bytes: int | str = "64KB"
    #: MQTT 5: the largest packet the broker may send us (CONNECT's Maximum Packet Size); a bigger one the broker
    #: drops instead of making us buffer it whole. Default: 1MiB, or twice max_payload_bytes if that is more.
    max_packet_bytes: int | str | None = None
    #: per device (the topic's '+' level): sustained messages per second, and the burst allowed above it
    rate_limit: float = 20.0
    rate_burst: int = 200
    session_expiry: float | str = "7d"  # how long the broker keeps our session (and queues for us) while we are down
    receive_maximum: int = 64  # MQTT 5: the most unacknowledged messages the broker sends us at once
    dedup_window: int = 256  # redelivered messages recognised among this many recently journaled ones

    def __post_init__(self) -> None:
        super().__post_init__()
        raw = self.max_payload_bytes
        _parse_fields(self, parse_size, "max_payload_bytes")
        _parse_fields(self, parse_duration, "session_expiry")
        _check_name(self.name)
        if not 16 <= self.max_payload_bytes <= 16 * 2**20:
            raise FieldError("max_payload_bytes", raw, "must be between 16 bytes and 16MiB")
        if self.max_packet_bytes is None:
            self.max_packet_bytes = max(2**20, 2 * self.max_payload_bytes)
        else:
            raw = self.max_packet_bytes
            _parse_fields(self, parse_size, "max_packet_bytes")
            if not self.max_payload_bytes < self.max_packet_bytes <= 268435455:
                raise FieldError("max_packet_bytes", raw, f"must be more than max_payload_bytes "
                                 f"({self.max_payload_bytes} bytes: a packet carries the topic too) and at most "
                                 "256MiB")
        if not 0 < self.rate_limit <= 1e6:
            raise FieldError("rate_limit", self.rate_limit, "must be more than 0 and at most 1000000 (messages per second per device)")
        if self.rate_burst < 1:
            raise FieldError("rate_burst", self.rate_burst, "must be at least 1")
        if not 1 <= self.receive_maximum <= 65535:
            raise FieldError("receive_maximum", self.receive_maximum, "must be between 1 and 65535")
        if self.dedup_window < self.receive_maximum:
            raise FieldError("dedup_window", self.dedup_window, "must be >= receive_maximum (every message in flight "
                             "must be recognised if the broker sends it again)")
        if not self.default_topics and not self.subscriptions:
            raise FieldError("default_topics", self.default_topics, "no topics: set default_topics = true or add "
                             "[[sources.mqtt.subscriptions]]")


class MqttSinkSection(MqttConnectionSection, kw_only=True):
    """Telemetry: journal events, status and health published to a broker (the local one or the plant's)."""

    topic_prefix: str = "fixture-agent/{station}"
    event_types: list[str] = []  # empty: every event
    qos: Literal[0, 1] = 1
    window: int = 100  # unacknowledged publishes at once
    health_interval: float | str = "60s"

    def __post_init__(self) -> None:
        super().__post_init__()
        _parse_fields(self, parse_duration, "health_interval")
        if any(c in self.topic_prefix for c in "+#\0") or self.topic_prefix.startswith("/") \
                or self.topic_prefix.endswith("/") or not self.topic_prefix:
            raise FieldError("topic_prefix", self.topic_prefix, "must be a topic with no wildcards and no leading "
                             "or trailing '/'")
        if not 1 <= self.window <= 10000:
            raise FieldError("window", self.window, "must be between 1 and 10000")
        if self.health_interval < 1:
            raise FieldError("health_interval", self.health_interval, "must be at least 1s")


class AmqpConnectionSection(_Section, kw_only=True):
    """How to reach an AMQP 1.0 broker (RabbitMQ with its AMQP 1.0 plugin, in CFX practice)."""

    url: str  # amqp://host:5672 or amqps://host:5671; no user or password in it
    enabled: bool = True
    username: str | None = None  # SASL PLAIN with password_file; without: ANONYMOUS
    password_file: str | None = None
    virtual_host: str | None = None  # RabbitMQ: sent as the AMQP open hostname "vhost:NAME"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify_tls: bool = True
    reconnect_min: float | str = "1s"
    reconnect_max: float | str = "60s"
    heartbeat: float | str = "30s"  # AMQP idle timeout we ask the peer to keep

    def __post_init__(self) -> None:
        for f in ("reconnect_min", "reconnect_max", "heartbeat"):
            setattr(self, f, parse_duration(getattr(self, f)))
        m = re.match(r"^(amqps?)://([^/@:]+|\[[0-9a-fA-F:]+\])(?::(\d+))?/?$", self.url)
        if not m:
            raise ValueError(f"url {self.url!r} must be amqp://host[:port] or amqps://host[:port] (credentials go in "
                             "username and password_file)")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        if self.password_file and not self.username:
            raise ValueError("password_file needs username")
        if self.reconnect_min <= 0 or self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_min must be > 0 and <= reconnect_max")

    @property
    def tls(self) -> bool:
        return self.url.startswith("amqps://")


def _check_handle(handle: str) -> None:
    # reused as container id, link address, subject prefix and in queue names: no '/', spaces, '#', '*'
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", handle):
        raise FieldError("handle", handle, "must be a CFX handle like Vendor.Model.Serial (1-128 letters, digits, "
                         "'.', '_', ':', '-'; no spaces)")


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", name):
        raise FieldError("name", name, "use 1-40 letters, digits, '.', '_' or '-'")


class CfxSourceSection(AmqpConnectionSection, kw_only=True):
    """CFX ingest: messages other equipment publishes, from a broker queue (or an exchange binding)."""

    name: str = "cfx"
    address: str = "/queue/CFXQueue"  # RabbitMQ v1 addresses: /queue/Q, /amq/queue/Q, /exchange/X/key, /topic/key
    handle: str | None = None  # our own CFX handle (the AMQP container id); default: FixtureAgent.<station>
    credit: int = 100  # messages held unaccepted at most (the broker sends more only as we accept)
    dedup_window: int = 1000  # UniqueIDs remembered (8-byte digests): an SDK's spool may resend after a reconnect
    max_message_bytes: int | str = "4MB"  # larger: refused while it arrives, a dead letter, settled
    max_inflated_bytes: int | str = "16MB"  # what a gzip body may inflate to (a decompression bomb is bad input)

    def __post_init__(self) -> None:
        super().__post_init__()
        _parse_fields(self, parse_size, "max_message_bytes", "max_inflated_bytes")
        for f in ("max_message_bytes", "max_inflated_bytes"):
            if getattr(self, f) < 1024:
                raise FieldError(f, getattr(self, f), "must be at least 1KB (1024 bytes)")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", self.name):
            raise ValueError(f"name {self.name!r}: use 1-40 letters, digits, '.', '_' or '-'")
        if self.handle is not None:
            _check_handle(self.handle)
        if not 1 <= self.credit <= 10000:
            raise ValueError("credit must be between 1 and 10000")
        if self.dedup_window < self.credit:
            raise ValueError("dedup_window must be >= credit")


class CfxSinkSection(AmqpConnectionSection, kw_only=True):
    """The fixture as a CFX endpoint: its own events published as CFX messages, and its request listener."""

    handle: str
    address: str = "/exchange/CFXExchange"  # where to publish; the subject (routing key) is <handle>.<MessageName>
    compress: bool = True  # gzip, the SDK's default since 2020
    heartbeat_interval: float | str = "60s"  # CFX Heartbeat (1 s - 5 min)
    window: int = 100
    listen: str | None = None  # "0.0.0.0:5673": answer AreYouThere / GetEndpointInformation requests here
    event_types: list[str] = []  # default: test.result, asset.state_changed, asset.fault
    # Events other equipment reported (CFX ingest, MQTT devices) are not the fixture's: published only with this,
    # and then under their origin (their CFX handle as Source, their UniqueID, their message body)
    republish: bool = False
    listen_max_connections: int = 16  # request connections at once; more are closed at once
    listen_idle_timeout: float | str = "30s"  # a request connection silent this long is closed
    listen_max_message_bytes: int | str = "1MB"  # a larger request is refused (requests are a few hundred bytes)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_handle(self.handle)
        _parse_fields(self, parse_duration, "listen_idle_timeout")
        _parse_fields(self, parse_size, "listen_max_message_bytes")
        if not 1 <= self.listen_max_connections <= 1000:
            raise FieldError("listen_max_connections", self.listen_max_connections, "must be between 1 and 1000")
        if not 1 <= self.listen_idle_timeout <= 3600:
            raise FieldError("listen_idle_timeout", self.listen_idle_timeout, "must be between 1s and 1h")
        if self.listen_max_message_bytes < 1024:
            raise FieldError("listen_max_message_bytes", self.listen_max_message_bytes,
                             "must be at least 1KB (1024 bytes)")
        self.heartbeat_interval = parse_duration(self.heartbeat_interval)
        if not 1 <= self.heartbeat_interval <= 300:
            raise ValueError("heartbeat_interval must be between 1s and 5m (CFX)")
        if not 1 <= self.window <= 10000:
            raise ValueError("window must be between 1 and 10000")
        if self.listen is not None:
            parse_listen(self.listen)


class SinksSection(_Section):
    wats: WatsSinkSection | None = None
    mqtt: MqttSinkSection | None = None
    cfx: CfxSinkSection | None = None


class Config(_Section):
    agent: AgentSection = msgspec.field(default_factory=AgentSection)
    journal: JournalSection = msgspec.field(default_factory=JournalSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)
    sources: SourcesSection = msgspec.field(default_factory=SourcesSection)
    sinks: SinksSection = msgspec.field(default_factory=SinksSection)

    #: Where this config was read from (not a TOML key).
    source_path: str = ""

    def __post_init__(self) -> None:
        src, snk = self.sources.mqtt, self.sinks.mqtt
        if src and snk and src.enabled and snk.enabled and (src.host, src.port) == (snk.host, snk.port):
            ids = (src.client_id or default_client_id(self.agent.station, src.name),
                   snk.client_id or default_client_id(self.agent.station, "telemetry"))
            if ids[0] == ids[1]:
                # the sink's clean session would wipe the source's, and the broker's queue for it
                raise FieldError("sinks.mqtt.client_id", ids[1], f"sources.mqtt would connect to {src.broker} "
                                 "with the same client id; give them different client_id (or another "
                                 "sources.mqtt.name)")
        w = self.sinks.wats
        if w is not None and w.enabled:
            # WSJF requires these on every report: a missing one is the station's config, not a bad event,
            # so it must stop the agent at start instead of dead-lettering every result.
            missing = [k for k in ("location", "purpose") if not getattr(self.agent, k)]
            if missing:
                raise FieldError(f"agent.{missing[0]}", getattr(self.agent, missing[0]),
                                 f"sinks.wats needs agent.{' and agent.'.join(missing)} (every WATS report carries "
                                 "them)")
            if not w.process_codes and w.default_process_code is None:
                raise FieldError("sinks.wats.process_codes", w.process_codes, "sinks.wats needs process_codes (test "
                                 "type → WATS test operation code) or default_process_code")
            # what goes into every report must fit WSJF (reference/wats-api.md §2.3): caught here, once, rather
            # than as a dead letter per result
            for key, value, ident in (("agent.station", self.agent.station, False),
                                      ("agent.location", self.agent.location, False),
                                      ("agent.purpose", self.agent.purpose, False),
                                      ("sinks.wats.operator", w.operator, False),
                                      ("sinks.wats.default_part_number", w.default_part_number, True),
                                      ("sinks.wats.default_revision", w.default_revision, True)):
                if value is None:
                    continue
                if not value.strip() or len(value) > 100:
                    raise FieldError(key, value, "must be 1-100 characters (WATS' limit for what every report "
                                     "carries)")
                if ident and set(value) & set("*%?[]^!/\\"):
                    raise FieldError(key, value, "must not contain * % ? [ ] ^ ! / \\ (WATS refuses them in part "
                                     "numbers and revisions)")

    @property
    def data_dir(self) -> Path:
        return Path(self.agent.data_dir)

    @property
    def journal_path(self) -> Path:
        return Path(self.journal.path) if self.journal.path else self.data_dir / "journal.db"

    def enabled_sinks(self) -> list[str]:
        return [name for name in ("wats", "mqtt", "cfx") if (s := getattr(self.sinks, name)) and s.enabled]


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
