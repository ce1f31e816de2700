"""How to reach an MQTT broker: the section part ``sources.mqtt`` and ``sinks.mqtt`` share (they may be
different brokers)."""

from __future__ import annotations

import re

from ..config_base import FieldError, Section, parse_duration, parse_fields


def default_client_id(station: str, role: str) -> str:
    """``fixture-agent-<station>-<role>``, in the characters every broker accepts. Stable across restarts: a
    persistent session is found again by its client id."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", f"fixture-agent-{station}-{role}")[:64]


class MqttConnectionSection(Section, kw_only=True):
    """How to reach a broker; shared by ``sources.mqtt`` and ``sinks.mqtt`` (they may be different brokers)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int | None = None  # 1883, or 8883 with TLS
    client_id: str | None = None  # default: fixture-agent-<station>-<role>; must be stable for a persistent session
    protocol: str | int = "5"  # "5" or "3.1.1"
    username: str | None = None
    password_file: str | None = None  # mode 0600; the password is never inline
    password_credential: str | None = None  # a systemd credential (LoadCredential=NAME:…), if no password_file
    password_env: str | None = None  # an environment variable, if neither
    tls: bool = False  # implied by ca_file / cert_file
    ca_file: str | None = None  # default with tls: the system's CAs
    cert_file: str | None = None  # client certificate (with key_file)
    key_file: str | None = None
    verify_tls: bool = True
    keepalive: float | str = "30s"
    reconnect_min: float | str = "1s"
    reconnect_max: float | str = "60s"

    def __post_init__(self) -> None:
        parse_fields(self, parse_duration, "keepalive", "reconnect_min", "reconnect_max")
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
        for f in ("password_file", "password_credential", "password_env"):
            if getattr(self, f) and not self.username:
                raise FieldError("username", self.username, f"is needed with {f}")
        if not 5 <= self.keepalive <= 3600:
            raise FieldError("keepalive", self.keepalive, "must be between 5s and 1h")
        if self.reconnect_min <= 0 or self.reconnect_max < self.reconnect_min:
            raise FieldError("reconnect_min", self.reconnect_min, "must be more than 0 and at most reconnect_max")
        if self.client_id is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", self.client_id):
            raise FieldError("client_id", self.client_id, "use 1-64 letters, digits, '.', '_', ':' or '-'")

    @property
    def broker(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"



