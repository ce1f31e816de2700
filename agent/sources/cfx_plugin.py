"""``[sources.cfx]``: IPC-CFX messages other equipment publishes (AMQP 1.0)."""

from __future__ import annotations

import re

from ..config_base import FieldError, parse_fields, parse_size
from ..plugins import Plugin
from ..connections.amqp_config import AmqpConnectionSection, check_handle


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
        parse_fields(self, parse_size, "max_message_bytes", "max_inflated_bytes")
        for f in ("max_message_bytes", "max_inflated_bytes"):
            if getattr(self, f) < 1024:
                raise FieldError(f, getattr(self, f), "must be at least 1KB (1024 bytes)")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", self.name):
            raise ValueError(f"name {self.name!r}: use 1-40 letters, digits, '.', '_' or '-'")
        if self.handle is not None:
            check_handle(self.handle)
        if not 1 <= self.credit <= 10000:
            raise ValueError("credit must be between 1 and 10000")
        if self.dedup_window < self.credit:
            raise ValueError("dedup_window must be >= credit")


PLUGIN = Plugin(
    kind="sources", name="cfx", section=CfxSourceSection, build="agent.sources.cfx:build",
    needs=("proton", "cfx"), source_names=lambda s: [f"cfx:{s.name}"],
    doc="CFX messages of testers and inspection machines, from a broker queue",
)
