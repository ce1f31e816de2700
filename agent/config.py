"""The TOML configuration, validated by msgspec: one section per source or sink.

Every error names the file and the key (``config/site.toml: journal.max_bytes: …``), because the person reading it
is usually rolling a template out with Ansible to forty Pis. Unknown keys are errors too: a misspelt
``max_byte`` silently ignored is a journal that fills a card. Secrets are never inline: sections take
``*_file`` paths, so a config can be shown, diffed and logged without leaking anything.

Relative paths are taken relative to the current working directory (the demo keeps its data in ``./agent-data``).
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

DEFAULT_PATH = "/etc/fixture-agent/config.toml"


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.I)
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_size(value: int | str) -> int:
    """``"512MB"``, ``"1GiB"``, ``4096`` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    m = _SIZE.match(str(value))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size (examples: 4096, \"64MB\", \"1GiB\")")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_duration(value: float | int | str) -> float:
    """``"30d"``, ``"12h"``, ``"500ms"``, ``2.5`` → seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a duration (examples: 2.5, \"500ms\", \"12h\", \"30d\")")
    unit = m.group(2).lower() if m.group(2) else None
    return float(m.group(1)) * _DURATION_UNITS[unit]


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (example: \"127.0.0.1:9108\")")
    return host.strip("[]") or "127.0.0.1", int(port)


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

    def __post_init__(self) -> None:
        self.max_bytes = parse_size(self.max_bytes)
        self.max_age = parse_duration(self.max_age)
        if self.max_bytes < 64 * 1024:
            raise ValueError("max_bytes must be at least 64KB")


class MetricsSection(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:9108"

    def __post_init__(self) -> None:
        parse_listen(self.listen)


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
        self.interval = parse_duration(self.interval)
        if self.interval <= 0:
            raise ValueError("interval must be > 0")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")


class ScpiQuery(_Section):
    """One polled SCPI query: the agent judges the value against the limits."""

    name: str
    command: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    nominal: float | None = None


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
        for f in ("reconnect_min", "reconnect_max", "timeout", "selftest_timeout", "poll_interval"):
            setattr(self, f, parse_duration(getattr(self, f)))
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", self.name):
            raise ValueError(f"name {self.name!r}: use 1-40 letters, digits, '.', '_' or '-'")
        if self.baud <= 0:
            raise ValueError("baud must be > 0")
        if not 64 <= self.max_line_bytes <= 1_048_576:
            raise ValueError("max_line_bytes must be between 64 and 1048576")
        if self.driver != "scpi" and self.queries:
            raise ValueError("queries are for driver = \"scpi\"")


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
        for f in ("counter_bounce", "lamp_hold", "selftest_interval"):
            setattr(self, f, parse_duration(getattr(self, f)))
        pins = [p for p in (self.counter_pin, self.lid_pin, self.pass_lamp_pin, self.fail_lamp_pin,
                            self.loopback_out_pin, self.loopback_in_pin) if p is not None]
        if len(pins) != len(set(pins)):
            raise ValueError(f"a pin is used twice: {sorted(pins)}")
        if (self.loopback_out_pin is None) != (self.loopback_in_pin is None):
            raise ValueError("loopback needs both loopback_out_pin and loopback_in_pin")


class SourcesSection(_Section):
    simulated: SimulatedSourceSection | None = None
    serial: list[SerialSourceSection] = []
    gpio: GpioSourceSection | None = None
    mqtt: "MqttSourceSection | None" = None
    cfx: "CfxSourceSection | None" = None

    def __post_init__(self) -> None:
        names = [s.name for s in self.serial]
        if len(names) != len(set(names)):
            raise ValueError(f"serial source names must be unique: {names}")


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

    def __post_init__(self) -> None:
        self.timeout = parse_duration(self.timeout)
        self.processes_refresh = parse_duration(self.processes_refresh)
        self.retry_max = parse_duration(self.retry_max)
        self.in_doubt_grace = parse_duration(self.in_doubt_grace)
        if not self.url.startswith(("https://", "http://")):
            raise ValueError(f"url {self.url!r} must start with https:// (or http:// for a test server)")
        if self.requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be > 0")
        if self.counters_api not in ("absolute", "increment"):
            raise ValueError(f"counters_api {self.counters_api!r} must be \"absolute\" (WATS >= 25.3) or "
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
        for f in ("keepalive", "reconnect_min", "reconnect_max"):
            setattr(self, f, parse_duration(getattr(self, f)))
        self.protocol = str(self.protocol)
        if self.protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol {self.protocol!r} must be \"5\" or \"3.1.1\"")
        if self.ca_file or self.cert_file:
            self.tls = True
        if self.port is None:
            self.port = 8883 if self.tls else 1883
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not a TCP port")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together (the client certificate and its key)")
        if self.password_file and not self.username:
            raise ValueError("password_file needs username")
        if not 5 <= self.keepalive <= 3600:
            raise ValueError("keepalive must be between 5s and 1h")
        if self.reconnect_min <= 0 or self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_min must be > 0 and <= reconnect_max")
        if self.client_id is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", self.client_id):
            raise ValueError(f"client_id {self.client_id!r}: use 1-64 letters, digits, '.', '_', ':' or '-'")

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
            raise ValueError(f"subscription {self.topic!r}: give either adapter (one of {', '.join(ADAPTER_NAMES)}) "
                             "or event_type + fields")
        if self.adapter is not None and self.adapter not in ADAPTER_NAMES:
            raise ValueError(f"subscription {self.topic!r}: adapter {self.adapter!r} is not one of "
                             f"{', '.join(ADAPTER_NAMES)}")
        if self.event_type is not None and not self.fields:
            raise ValueError(f"subscription {self.topic!r}: event_type needs fields (payload field = \"path.in.message\")")
        if self.adapter is not None and (self.fields or self.device_field):
            raise ValueError(f"subscription {self.topic!r}: fields and device_field are for event_type mappings")


def _check_topic_filter(topic: str) -> None:
    levels = topic.split("/")
    if not topic or any(("+" in lv and lv != "+") or ("#" in lv and lv != "#") for lv in levels) \
            or "#" in levels[:-1]:
        raise ValueError(f"topic {topic!r} is not an MQTT topic filter ('+' and '#' must be whole levels, "
                         "'#' only last)")


class MqttSourceSection(MqttConnectionSection, kw_only=True):
    """Ingest from devices on a broker (usually the Pi's own mosquitto)."""

    name: str = "mqtt"
    default_topics: bool = True  # the seed's topic plan (assets/+/status …); site subscriptions are tried first
    subscriptions: list[MqttSubscription] = []
    max_payload_bytes: int | str = "64KB"
    #: per device (the topic's '+' level): sustained messages per second, and the burst allowed above it
    rate_limit: float = 20.0
    rate_burst: int = 200
    session_expiry: float | str = "7d"  # how long the broker keeps our session (and queues for us) while we are down
    receive_maximum: int = 64  # MQTT 5: the most unacknowledged messages the broker sends us at once
    dedup_window: int = 256  # redelivered messages recognised among this many recently journaled ones

    def __post_init__(self) -> None:
        super().__post_init__()
        self.max_payload_bytes = parse_size(self.max_payload_bytes)
        self.session_expiry = parse_duration(self.session_expiry)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", self.name):
            raise ValueError(f"name {self.name!r}: use 1-40 letters, digits, '.', '_' or '-'")
        if not 16 <= self.max_payload_bytes <= 16 * 2**20:
            raise ValueError("max_payload_bytes must be between 16 bytes and 16MiB")
        if self.rate_limit <= 0 or self.rate_burst < 1:
            raise ValueError("rate_limit must be > 0 and rate_burst >= 1")
        if not 1 <= self.receive_maximum <= 65535:
            raise ValueError("receive_maximum must be between 1 and 65535")
        if self.dedup_window < self.receive_maximum:
            raise ValueError("dedup_window must be >= receive_maximum (every message in flight must be recognised "
                             "if the broker sends it again)")
        if not self.default_topics and not self.subscriptions:
            raise ValueError("no topics: set default_topics = true or add [[sources.mqtt.subscriptions]]")


class MqttSinkSection(MqttConnectionSection, kw_only=True):
    """Telemetry: journal events, status and health published to a broker (the local one or the plant's)."""

    topic_prefix: str = "fixture-agent/{station}"
    event_types: list[str] = []  # empty: every event
    qos: Literal[0, 1] = 1
    window: int = 100  # unacknowledged publishes at once
    health_interval: float | str = "60s"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.health_interval = parse_duration(self.health_interval)
        if any(c in self.topic_prefix for c in "+#") or self.topic_prefix.startswith("/") \
                or self.topic_prefix.endswith("/") or not self.topic_prefix:
            raise ValueError(f"topic_prefix {self.topic_prefix!r}: no wildcards, no leading or trailing '/'")
        if not 1 <= self.window <= 10000:
            raise ValueError("window must be between 1 and 10000")
        if self.health_interval < 1:
            raise ValueError("health_interval must be at least 1s")


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
        raise ValueError(f"handle {handle!r}: a CFX handle like Vendor.Model.Serial (letters, digits, '.', '_', "
                         "':', '-')")


class CfxSourceSection(AmqpConnectionSection, kw_only=True):
    """CFX ingest: messages other equipment publishes, from a broker queue (or an exchange binding)."""

    name: str = "cfx"
    address: str = "/queue/CFXQueue"  # RabbitMQ v1 addresses: /queue/Q, /amq/queue/Q, /exchange/X/key, /topic/key
    handle: str | None = None  # our own CFX handle (the AMQP container id); default: FixtureAgent.<station>
    credit: int = 100  # messages held unaccepted at most (the broker sends more only as we accept)
    dedup_window: int = 1000  # UniqueIDs remembered (8-byte digests): an SDK's spool may resend after a reconnect
    max_message_bytes: int | str = "4MB"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.max_message_bytes = parse_size(self.max_message_bytes)
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

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_handle(self.handle)
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
                raise ValueError(f"sources.mqtt and sinks.mqtt would both connect to {src.broker} as {ids[0]}; "
                                 "give them different client_id (or another sources.mqtt.name)")
        w = self.sinks.wats
        if w is not None and w.enabled:
            # WSJF requires these on every report: a missing one is the station's config, not a bad event,
            # so it must stop the agent at start instead of dead-lettering every result.
            missing = [k for k in ("location", "purpose") if not getattr(self.agent, k)]
            if missing:
                raise ValueError(f"sinks.wats needs agent.{' and agent.'.join(missing)} (every WATS report carries them)")
            if not w.process_codes and w.default_process_code is None:
                raise ValueError("sinks.wats needs process_codes (test type → WATS test operation code) or "
                                 "default_process_code")

    @property
    def data_dir(self) -> Path:
        return Path(self.agent.data_dir)

    @property
    def journal_path(self) -> Path:
        return Path(self.journal.path) if self.journal.path else self.data_dir / "journal.db"

    def enabled_sinks(self) -> list[str]:
        return [name for name in ("wats", "mqtt", "cfx") if (s := getattr(self.sinks, name)) and s.enabled]


def _key_path(message: str) -> tuple[str, str]:
    """msgspec says ``… - at `$.journal.max_bytes` ``; we say ``journal.max_bytes: …``."""
    m = re.search(r" - at `\$\.?([^`]*)`$", message)
    if not m:
        return "", message
    return m.group(1), message[: m.start()]


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file (``-c``, ``$FIXTURE_AGENT_CONFIG`` or the default path)."""
    p = Path(path or os.environ.get("FIXTURE_AGENT_CONFIG") or DEFAULT_PATH)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found (pass -c FILE or set FIXTURE_AGENT_CONFIG)") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None
    return parse_config(raw, str(p))


def parse_config(raw: bytes | str, name: str = "<config>") -> Config:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name}: not valid TOML: {e}") from None
    if "source_path" in data:
        raise ConfigError(f"{name}: source_path: not a config key")
    try:
        cfg = msgspec.convert(data, Config)
    except msgspec.ValidationError as e:
        key, msg = _key_path(str(e))
        raise ConfigError(f"{name}: {key + ': ' if key else ''}{msg}") from None
    cfg.source_path = name
    return cfg
