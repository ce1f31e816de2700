"""``[sinks.mqtt]``: telemetry, every journal event, status and health, to a broker."""

from __future__ import annotations

from typing import Literal

from ..config_base import FieldError, parse_duration, parse_fields
from ..plugins import Plugin
from ..connections.mqtt_config import MqttConnectionSection


class MqttSinkSection(MqttConnectionSection, kw_only=True):
    """Telemetry: journal events, status and health published to a broker (the local one or the plant's)."""

    topic_prefix: str = "fixture-agent/{station}"
    event_types: list[str] = []  # empty: every event
    qos: Literal[0, 1] = 1
    window: int = 100  # unacknowledged publishes at once
    health_interval: float | str = "60s"

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_fields(self, parse_duration, "health_interval")
        if any(c in self.topic_prefix for c in "+#\0") or self.topic_prefix.startswith("/") \
                or self.topic_prefix.endswith("/") or not self.topic_prefix:
            raise FieldError("topic_prefix", self.topic_prefix, "must be a topic with no wildcards and no leading "
                             "or trailing '/'")
        if not 1 <= self.window <= 10000:
            raise FieldError("window", self.window, "must be between 1 and 10000")
        if self.health_interval < 1:
            raise FieldError("health_interval", self.health_interval, "must be at least 1s")


PLUGIN = Plugin(
    kind="sinks", name="mqtt", section=MqttSinkSection, build="agent.sinks.mqtt:build", needs=("paho", "mqtt"),
    doc="events, status and health as MQTT telemetry",
)
