"""How to reach an AMQP 1.0 broker: the section part ``sources.cfx`` and ``sinks.cfx`` share."""

from __future__ import annotations

import re

from ..config_base import FieldError, Section, parse_duration


class AmqpConnectionSection(Section, kw_only=True):
    """How to reach an AMQP 1.0 broker (RabbitMQ with its AMQP 1.0 plugin, in CFX practice)."""

    url: str  # amqp://host:5672 or amqps://host:5671; no user or password in it
    enabled: bool = True
    username: str | None = None  # SASL PLAIN with password_file; without: ANONYMOUS
    password_file: str | None = None  # mode 0600; the password is never inline
    password_credential: str | None = None  # a systemd credential (LoadCredential=NAME:…), if no password_file
    password_env: str | None = None  # an environment variable, if neither
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
        for f in ("password_file", "password_credential", "password_env"):
            if getattr(self, f) and not self.username:
                raise FieldError("username", self.username, f"is needed with {f}")
        if self.reconnect_min <= 0 or self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_min must be > 0 and <= reconnect_max")

    @property
    def tls(self) -> bool:
        return self.url.startswith("amqps://")


def check_handle(handle: str) -> None:
    # reused as container id, link address, subject prefix and in queue names: no '/', spaces, '#', '*'
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", handle):
        raise FieldError("handle", handle, "must be a CFX handle like Vendor.Model.Serial (1-128 letters, digits, "
                         "'.', '_', ':', '-'; no spaces)")



