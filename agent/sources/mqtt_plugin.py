"""``[sources.mqtt]``: what devices publish to a broker (usually the Pi's own mosquitto)."""

from __future__ import annotations

from typing import Any, Literal

from ..config_base import FieldError, Section, check_name, parse_duration, parse_fields, parse_size
from ..plugins import Plugin
from ..connections.mqtt_config import MqttConnectionSection, default_client_id


ADAPTER_NAMES = ("asset", "asset_alert", "test_result", "selftest", "measurements", "software", "unit")


class MqttSubscription(Section, kw_only=True):
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
        parse_fields(self, parse_size, "max_payload_bytes")
        parse_fields(self, parse_duration, "session_expiry")
        check_name(self.name)
        if not 16 <= self.max_payload_bytes <= 16 * 2**20:
            raise FieldError("max_payload_bytes", raw, "must be between 16 bytes and 16MiB")
        if self.max_packet_bytes is None:
            self.max_packet_bytes = max(2**20, 2 * self.max_payload_bytes)
        else:
            raw = self.max_packet_bytes
            parse_fields(self, parse_size, "max_packet_bytes")
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


def _distinct_client_ids(config: Any) -> None:
    """Source and telemetry sink on one broker with one client id: the sink's clean session would wipe the
    source's, and the broker's queue for it."""
    src, snk = config.sources.mqtt, config.sinks.mqtt
    if src and snk and src.enabled and snk.enabled and (src.host, src.port) == (snk.host, snk.port):
        ids = (src.client_id or default_client_id(config.agent.station, src.name),
               snk.client_id or default_client_id(config.agent.station, "telemetry"))
        if ids[0] == ids[1]:
            raise FieldError("sinks.mqtt.client_id", ids[1], f"sources.mqtt would connect to {src.broker} "
                             "with the same client id; give them different client_id (or another "
                             "sources.mqtt.name)")


PLUGIN = Plugin(
    kind="sources", name="mqtt", section=MqttSourceSection, build="agent.sources.mqtt:build",
    needs=("paho", "mqtt"), check=_distinct_client_ids, source_names=lambda s: [f"mqtt:{s.name}"],
    doc="what ESP32 devices publish to the broker: counters, status, results, self-tests, telemetry",
)
