"""``[sinks.cfx]``: the fixture as an IPC-CFX endpoint (AMQP 1.0)."""

from __future__ import annotations

from ..config_base import FieldError, parse_duration, parse_fields, parse_listen, parse_size
from ..plugins import Plugin
from ..connections.amqp_config import AmqpConnectionSection, check_handle


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
        check_handle(self.handle)
        parse_fields(self, parse_duration, "listen_idle_timeout")
        parse_fields(self, parse_size, "listen_max_message_bytes")
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


PLUGIN = Plugin(
    kind="sinks", name="cfx", section=CfxSinkSection, build="agent.sinks.cfx:build", needs=("proton", "cfx"),
    doc="the fixture's own results, state and faults as CFX messages; its request listener",
)
