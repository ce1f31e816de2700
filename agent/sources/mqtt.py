"""MQTT ingest: what ESP32 devices and sensors publish to the broker on the Pi, as durable events.

The broker holds a message until we acknowledge it, and we acknowledge it only after its events are in the
journal (paho's manual acknowledgement): a crash or a power cut between the two means the broker sends it again.
With a persistent session (fixed client id, ``clean_start = False`` and a session expiry), what devices publish
while the agent is down is queued at the broker and arrives after the restart.

Sent again means it may already be journaled. A redelivery carries the DUP flag, and every message journaled
recently is remembered by a digest of topic and payload, committed in the same transaction as its events: a
DUP message whose digest is known is acknowledged and not journaled twice, so a test result never becomes two
WATS reports. The memory is ``dedup_window`` digests, at least the broker's in-flight limit
(``receive_maximum``), which is all that can be in doubt at once.

Bad input (oversized, not JSON, a schema violation, a topic no subscription maps) is counted and kept in the
dead-letter table with the topic and the raw payload, then acknowledged: one bad message never blocks the ones
behind it (telegraf's consumer stopped after N parse errors). A device over its rate limit has the excess
counted and dropped, so a runaway firmware loop cannot wear out the SD card.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import msgspec

from ..config import MqttSourceSection
from ..events.journal import JournalFull
from ..events.model import Event
from ..events.transports import BaseTransport, TransportState
from ..protocols import mqtt_adapters as adapters
from ..protocols.mqtt_connection import MqttConnection, default_client_id

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

BATCH = 500  # messages journaled in one transaction at most
STATUS_EVERY = 1.0  # seconds between status records while counts change


class BadMessage(ValueError):
    """Why a message cannot become an event; kept with it in the dead-letter table."""


@dataclass(frozen=True)
class Route:
    topic: str
    adapt: Callable[[adapters.Message], list[Event]]
    qos: int
    device_level: int | None  # index of the first '+' level: the device id


def build_routes(cfg: MqttSourceSection) -> list[Route]:
    """Site subscriptions first (they may refine a default topic), then the seed's topic plan."""
    routes = []
    for s in cfg.subscriptions:
        fn = adapters.ADAPTERS[s.adapter] if s.adapter else adapters.mapping(s.event_type or "", s.fields,
                                                                                 s.device_field)
        routes.append(Route(s.topic, fn, s.qos, _plus_level(s.topic)))
    if cfg.default_topics:
        have = {r.topic for r in routes}
        routes += [Route(t, adapters.ADAPTERS[a], 1, _plus_level(t))
                   for t, a in adapters.DEFAULT_SUBSCRIPTIONS if t not in have]
    return routes


def _plus_level(topic: str) -> int | None:
    levels = topic.split("/")
    return levels.index("+") if "+" in levels else None


class DeviceRateLimit:
    """A token bucket per device: ``rate`` messages a second sustained, ``burst`` above it."""

    def __init__(self, rate: float, burst: int, max_devices: int = 10000) -> None:
        self.rate, self.burst, self.max_devices = rate, float(burst), max_devices
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, device: str, now: float) -> bool:
        tokens, last = self._buckets.get(device, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_devices and device not in self._buckets:
            self._buckets.clear()  # a flood of made-up device ids must not grow memory without bound
        if tokens < 1.0:
            self._buckets[device] = (tokens, now)
            return False
        self._buckets[device] = (tokens - 1.0, now)
        return True


class MqttSource(BaseTransport):
    def __init__(self, cfg: MqttSourceSection, station: str) -> None:
        super().__init__(f"mqtt:{cfg.name}")
        self.cfg = cfg
        self.routes = build_routes(cfg)
        self.client_id = cfg.client_id or default_client_id(station, cfg.name)
        self.counts: Counter[str] = Counter()
        self.limiter = DeviceRateLimit(cfg.rate_limit, cfg.rate_burst)
        self._limited_noted: dict[str, float] = {}
        self._inbox: queue.Queue[tuple[Any, datetime]] = queue.Queue(maxsize=10000)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._recent: deque[str] = deque(maxlen=cfg.dedup_window)
        self._recent_set: set[str] = set()
        self._status_at = 0.0
        self._status_dirty = False
        self.conn: MqttConnection | None = None

    @property
    def recent_key(self) -> str:
        return f"mqtt-recent:{self.cfg.name}"

    @property
    def topics_key(self) -> str:
        return f"mqtt-topics:{self.cfg.name}"

    def get_subscribed_topics(self) -> list[str]:
        return [r.topic for r in self.routes]

    # ------------------------------------------------------------------------------------------------ control
    def start(self) -> None:
        self.load_state()
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name=f"source-{self.name}", daemon=True)
        self._worker.start()
        self.conn = MqttConnection(
            self.cfg, client_id=self.client_id, what=f"sources.mqtt {self.cfg.name}", persistent=True,
            session_expiry=float(self.cfg.session_expiry), receive_maximum=self.cfg.receive_maximum,
            manual_ack=True, on_connected=self._subscribe, on_trouble=self._trouble, configure=self._configure,
        )
        self._set_state(TransportState.CONNECTING)
        self.conn.start()

    def load_state(self) -> None:
        """What was journaled last (by digest), so a redelivery after a crash is recognised."""
        assert self._bus is not None, "register the source on a bus first"
        for d in self._bus.journal.get_state(self.recent_key) or []:
            self._remember(d)

    def stop(self, timeout: float = 5.0) -> None:
        # The worker finishes its batch and acknowledges it; what is still queued here was never acknowledged
        # and the broker sends it again next time.
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)
        if self.conn is not None:
            self.conn.stop()
        self._set_state(TransportState.DISCONNECTED)
        self._record_status(force=True)

    def _configure(self, client: "mqtt.Client") -> None:
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe

    def _trouble(self, why: str) -> None:
        self._set_state(TransportState.RECONNECTING)
        self._record_status(force=True)

    def _subscribe(self, client: "mqtt.Client", session_present: bool) -> None:
        """Subscribe every time (a resumed session keeps them, a new one does not) and drop filters the config no
        longer has: a persistent session would otherwise keep delivering them (telegraf#9703)."""
        assert self._bus is not None
        wanted = {r.topic: r.qos for r in self.routes}
        before = self._bus.journal.get_state(self.topics_key) or {}
        stale = sorted(set(before) - set(wanted))
        if stale:
            client.unsubscribe(stale)
            log.info("source %s: unsubscribed %s (no longer configured)", self.name, ", ".join(stale))
        client.subscribe(list(wanted.items()))
        if before != wanted:
            try:
                self._bus.journal.set_state(self.topics_key, wanted)
            except JournalFull:
                pass

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        """The SUBACK: from now on the broker keeps what devices publish for us. Only now are we online."""
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            self._last_error = f"broker refused {len(refused)} subscription(s): {', '.join(sorted(set(refused)))}"
            log.error("source %s: %s (check the broker's ACL for %s)", self.name, self._last_error, self.client_id)
        else:
            self._last_error = None
        self._set_state(TransportState.CONNECTED)
        self._record_status(force=True)

    def _on_message(self, client, userdata, msg) -> None:
        # paho's network thread: hand over and return. The broker sends at most receive_maximum unacknowledged
        # QoS 1 messages, so this queue stays short; if it ever fills, waiting here is backpressure on the broker.
        self._inbox.put((msg, datetime.now(timezone.utc)))

    # ------------------------------------------------------------------------------------------------ ingest
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._inbox.get(timeout=0.2)
            except queue.Empty:
                if self._status_dirty:
                    self._record_status()
                continue
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            try:
                self.ingest(batch)
            except Exception as e:  # noqa: BLE001 - a bug here must not end ingest; the batch stays unacknowledged
                self._report_error(e)
                log.exception("source %s: batch of %d not journaled; the broker will send it again", self.name,
                              len(batch))
                self._stop.wait(1.0)

    def ingest(self, batch: list[tuple[Any, datetime]]) -> None:
        """Journal a batch in one transaction, then acknowledge every message in it."""
        assert self._bus is not None
        events: list[Event] = []
        digests: list[str] = []
        for msg, received in batch:
            self.counts["received"] += 1
            digest = hashlib.blake2b(msg.topic.encode() + b"\0" + msg.payload, digest_size=8).hexdigest()
            if msg.dup and digest in self._recent_set:
                self.counts["duplicates"] += 1
                continue
            try:
                events += self.adapt(msg, received)
            except BadMessage as e:
                self.bad_input(msg, str(e))
            if msg.qos > 0:
                digests.append(digest)
        if events or digests:
            # the digests commit with the events: after a crash, what the broker resends is recognised
            state = {self.recent_key: (list(self._recent) + digests)[-self.cfg.dedup_window:]} if digests else None
            while True:
                try:
                    self._bus.publish_many(events, state=state)
                    break
                except JournalFull as e:
                    log.error("source %s: %s; not acknowledging, the broker keeps the messages", self.name, e)
                    if self._stop.wait(1.0):
                        return
            for d in digests:
                self._remember(d)
            self._published += len(events)
            self.counts["journaled"] += len(events)
        for msg, _ in batch:
            if msg.qos > 0 and self.conn is not None:
                self.conn.client.ack(msg.mid, msg.qos)
        self._record_status()

    def adapt(self, msg: Any, received: datetime) -> list[Event]:
        size = len(msg.payload)
        if size > self.cfg.max_payload_bytes:
            raise BadMessage(f"payload of {size} bytes is over max_payload_bytes ({self.cfg.max_payload_bytes})")
        route = self.route_for(msg.topic)
        if route is None:
            raise BadMessage("no subscription maps this topic (a filter the session kept, or an overlap)")
        levels = msg.topic.split("/")
        device = levels[route.device_level] if route.device_level is not None else None
        if not self.limiter.allow(device or msg.topic, time.monotonic()):
            self._rate_limited(msg, device or msg.topic)
            return []
        try:
            doc = msgspec.json.decode(msg.payload)
        except msgspec.DecodeError as e:
            raise BadMessage(f"not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise BadMessage(f"expected a JSON object, got {type(doc).__name__}")
        try:
            events = route.adapt(adapters.Message(msg.topic, device, doc, received, self.name))
        except adapters.AdapterError as e:
            raise BadMessage(str(e)) from None
        return [msgspec.structs.replace(e, metadata=msgspec.structs.replace(e.metadata, source_topic=msg.topic))
                for e in events]

    def route_for(self, topic: str) -> Route | None:
        from paho.mqtt.client import topic_matches_sub

        for r in self.routes:
            if topic_matches_sub(r.topic, topic):
                return r
        return None

    def bad_input(self, msg: Any, reason: str) -> None:
        assert self._bus is not None
        self.counts["bad"] += 1
        self._bus.metrics.record_bad_input(self.name)
        log.warning("source %s: bad message on %s: %s", self.name, msg.topic, reason)
        try:
            self._bus.dead_letters.add_bad_input(f"{self.name} {msg.topic}", bytes(msg.payload), reason)
        except JournalFull:
            log.error("source %s: journal full; bad message on %s not kept", self.name, msg.topic)

    def _rate_limited(self, msg: Any, device: str) -> None:
        """Counted always; kept (one message a minute per device, with the reason) so the culprit is visible."""
        self.counts["rate_limited"] += 1
        now = time.monotonic()
        if now - self._limited_noted.get(device, -1e9) >= 60.0:
            self._limited_noted[device] = now
            self.bad_input(msg, f"device {device} is over the rate limit ({self.cfg.rate_limit:g}/s, burst "
                                f"{self.cfg.rate_burst}); messages over it are dropped and counted, one a minute "
                                "is kept here")
            self.counts["bad"] -= 1  # counted as rate limited, not as malformed

    def _remember(self, digest: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(digest)
        self._recent_set.add(digest)

    # ------------------------------------------------------------------------------------------------ status
    def _record_status(self, force: bool = False) -> None:
        now = time.monotonic()
        self._status_dirty = True
        if self._bus is None or (not force and now - self._status_at < STATUS_EVERY):
            return
        self._status_at = now
        self._status_dirty = False
        conn = self.conn.describe() if self.conn is not None else {}
        doc = {"port": conn.get("broker", self.cfg.broker), "online": self.state is TransportState.CONNECTED,
               "client_id": self.client_id, "topics": self.get_subscribed_topics(), **dict(self.counts),
               "last_error": self._last_error or conn.get("last_error"), "since": datetime.now(timezone.utc).isoformat()}
        try:
            self._bus.journal.set_state(f"source:{self.name}", doc)
        except JournalFull:
            pass

    def get_stats(self) -> dict[str, Any]:
        stats = super().get_stats()
        stats.update(dict(self.counts))
        if self.conn is not None and self.conn.last_error and not stats["last_error"]:
            stats["last_error"] = self.conn.last_error
        return stats
