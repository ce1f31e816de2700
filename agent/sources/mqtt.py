"""MQTT ingest: what ESP32 devices and sensors publish to the broker on the Pi, as durable events.

The broker holds a message until we acknowledge it, and we acknowledge it only after its events are in the
journal (paho's manual acknowledgement): a crash or a power cut between the two means the broker sends it again.
With a persistent session (fixed client id, ``clean_start = False`` and a session expiry), what devices publish
while the agent is down is queued at the broker and arrives after the restart.

Sent again means it may already be journaled. A redelivery carries the DUP flag and its original packet
identifier [MQTT-4.4.0-1], and every message journaled recently is remembered by a digest of packet id, topic
and payload, committed in the same transaction as its events (``events/recent.py``): a DUP message whose digest
is known is acknowledged and not journaled twice, so a test result never becomes two WATS reports, while a
device repeating the same payload as a new message (a new packet id) is journaled. The memory is
``dedup_window`` digests, at least the broker's in-flight limit (``receive_maximum``), which is all that can be
in doubt at once. A resumed session is not subscribed again (the broker would resend every retained message as
new), and with MQTT 5 retained messages are asked for only when a subscription is new.

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
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

import msgspec

from ..connections.mqtt_config import default_client_id
from .mqtt_plugin import MqttSourceSection
from ..events.backoff import backoff_delay
from ..events.model import Event
from ..events.recent import RecentKeys
from ..events.transports import BaseTransport, TransportState
from ..protocols import jsondepth, mqtt_adapters as adapters
from ..connections.mqtt import MqttConnection
from .base import StatusRecord

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

BATCH = 500  # messages journaled in one transaction at most
QOS0_BACKLOG = 10000  # QoS 0 messages waiting for the worker at most; beyond, they are dropped and counted
KEPT_OVERSIZE = 4096  # of an oversized payload, this much is kept in the dead letter
#: A device's own time ahead of our receive time by more than this does not become its mark: one message stamped
#: years ahead (a clock set wrong) must not make every later value stale.
MARK_AHEAD_MAX = timedelta(minutes=5)
MAX_MARKS = 10000  # assets whose latest counter time is remembered (made-up ids must not grow the state)


class BadMessage(ValueError):
    """Why a message cannot become an event; kept with it in the dead-letter table."""


@dataclass(frozen=True)
class Inbound:
    """A message as the network thread handed it over."""

    msg: Any  # paho MQTTMessage
    received: datetime
    connection: int  # which connection it came on: a packet id means nothing on another one
    size: int  # the payload's size as received (an oversized payload is cut before it is queued)


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
        # every count named from the start, so status says "received 0" rather than leaving the key out
        self.counts: Counter[str] = Counter(dict.fromkeys(
            ("received", "journaled", "duplicates", "bad", "rate_limited", "stale_counters", "dropped_qos0"), 0))
        self.limiter = DeviceRateLimit(cfg.rate_limit, cfg.rate_burst)
        self._limited_noted: dict[str, float] = {}
        self._bad: list[tuple[str, bytes, str]] = []  # the batch's bad input, journaled with it
        # Unbounded, but QoS 1 is bounded by flow control (receive_maximum) and QoS 0 by QOS0_BACKLOG: the network
        # thread must never block here (it would stop keepalives, and stopping would hang on it).
        self._inbox: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._qos0_waiting = 0
        self._qos0_lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.recent = RecentKeys(cfg.dedup_window)
        self.counter_marks: dict[str, str] = {}  # asset → the newest device time of its journaled counters (ISO)
        self.status = StatusRecord(self.name, lambda: self._bus.journal if self._bus is not None else None)
        self.conn: MqttConnection | None = None
        self._subscribing: dict[str, int] | None = None

    @property
    def recent_key(self) -> str:
        return f"mqtt-recent:{self.cfg.name}"

    @property
    def marks_key(self) -> str:
        return f"mqtt-counter-times:{self.cfg.name}"

    @property
    def topics_key(self) -> str:
        return f"mqtt-topics:{self.cfg.name}"

    def get_subscribed_topics(self) -> list[str]:
        return [r.topic for r in self.routes]

    # ------------------------------------------------------------------------------------------------ control
    def start(self) -> None:
        self.load_state()
        self.conn = MqttConnection(  # first: a config error (a bad password file) must not leave a worker behind
            self.cfg, client_id=self.client_id, what=f"sources.mqtt {self.cfg.name}", persistent=True,
            session_expiry=float(self.cfg.session_expiry), receive_maximum=self.cfg.receive_maximum,
            max_packet_size=int(self.cfg.max_packet_bytes or 0) or None, manual_ack=True, on_connected=self._subscribe, on_trouble=self._trouble, configure=self._configure,
        )
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name=f"source-{self.name}", daemon=True)
        self._worker.start()
        self._set_state(TransportState.CONNECTING)
        self.conn.start()

    def load_state(self) -> None:
        """What was journaled last (by digest), so a redelivery after a crash is recognised."""
        assert self._bus is not None, "register the source on a bus first"
        self.recent.load(self._bus.journal.get_state(self.recent_key))
        marks = self._bus.journal.get_state(self.marks_key)
        self.counter_marks = dict(marks) if isinstance(marks, dict) else {}

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
        """A resumed session with the same filters needs nothing: subscribing again would make the broker resend
        every retained message as if new. Otherwise subscribe, and drop filters the config no longer has (a
        persistent session would go on delivering them, telegraf#9703)."""
        assert self._bus is not None
        wanted = {r.topic: r.qos for r in self.routes}
        before = self._bus.journal.get_state(self.topics_key) or {}
        if session_present and before == wanted:
            self._online()
            return
        stale = sorted(set(before) - set(wanted))
        if stale:
            client.unsubscribe(stale)
            log.info("source %s: unsubscribing %s (no longer configured)", self.name, ", ".join(stale))
        if self.cfg.protocol == "5":
            from paho.mqtt.subscribeoptions import SubscribeOptions

            # retained messages only for a subscription the broker did not have yet
            client.subscribe([(t, SubscribeOptions(qos=q, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB))
                              for t, q in wanted.items()])
        else:
            client.subscribe(list(wanted.items()))
        self._subscribing = wanted

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        """The SUBACK: from now on the broker keeps what devices publish for us. Only now are we online. (The
        UNSUBSCRIBE went first on the same connection, so it is done too: the new filter set is recorded.)"""
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            self._last_error = f"broker refused {len(refused)} subscription(s): {', '.join(sorted(set(refused)))}"
            log.error("source %s: %s (check the broker's ACL for %s)", self.name, self._last_error, self.client_id)
        else:
            self._last_error = None
            if self._subscribing is not None and self._bus is not None:
                # if this cannot be kept, the next connect subscribes again: retained messages come again, and
                # their digests recognise the ones already journaled
                self.status.put(self._bus.journal, self.topics_key, self._subscribing)
        self._subscribing = None
        self._online()

    def _online(self) -> None:
        self._set_state(TransportState.CONNECTED)
        self._record_status(force=True)

    def _on_message(self, client, userdata, msg) -> None:
        # paho's network thread: hand over and return, never block. QoS 1 is bounded by flow control (the broker
        # sends at most receive_maximum unacknowledged); QoS 0 has none, so a backlog of it is cut here.
        size = len(msg.payload)
        if size > self.cfg.max_payload_bytes:
            msg.payload = msg.payload[:KEPT_OVERSIZE]  # not held in memory whole; adapt() turns it away
        if msg.qos == 0:
            with self._qos0_lock:
                if self._qos0_waiting >= QOS0_BACKLOG:
                    self.counts["dropped_qos0"] += 1
                    return
                self._qos0_waiting += 1
        self._inbox.put(Inbound(msg, datetime.now(timezone.utc), self.conn.connects if self.conn else 0, size))

    # ------------------------------------------------------------------------------------------------ ingest
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._inbox.get(timeout=0.2)
            except queue.Empty:
                self.status.flush_if_dirty(self._status_doc)
                continue
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            with self._qos0_lock:
                self._qos0_waiting -= sum(1 for b in batch if b.msg.qos == 0)
            attempt = 0
            while not self._stop.is_set():
                try:
                    self.ingest(batch)
                    break
                except Exception as e:  # noqa: BLE001 - a dead letter the journal refused (disk full): later, again
                    attempt += 1
                    self._report_error(e)
                    log.error("source %s: batch of %d not taken (%s: %s); trying it again", self.name, len(batch),
                              type(e).__name__, e)
                    self._stop.wait(backoff_delay(attempt, initial=1.0, maximum=30.0))

    def ingest(self, batch: list[Inbound]) -> None:
        """Journal a batch in one transaction, then acknowledge every message in it. A message that cannot become
        an event is a dead letter; a batch the journal cannot take is tried again here, never dropped (the broker
        would not resend it before the next reconnect)."""
        assert self._bus is not None
        events: list[Event] = []
        digests: list[str] = []
        self._bad = []  # dead letters of this batch: written with its events and digests, so kept once
        marks = dict(self.counter_marks)  # this batch's view; kept only once the batch is committed
        for item in batch:
            msg = item.msg
            self.counts["received"] += 1
            digest = hashlib.blake2b(b"%d\0%s\0%s" % (msg.mid, msg.topic.encode(), msg.payload),
                                     digest_size=8).hexdigest()
            if msg.dup and (digest in self.recent or digest in digests):
                self.counts["duplicates"] += 1
                continue
            try:
                events += self.latest_wins(self.adapt(msg, item.received, item.size), item.received, marks)
            except BadMessage as e:
                self.bad_input(msg, str(e))
            except Exception as e:  # noqa: BLE001 - a bug of ours for one message must not hold up the rest
                log.exception("source %s: message on %s failed", self.name, msg.topic)
                self.bad_input(msg, f"internal error: {type(e).__name__}: {e}")
            if msg.qos > 0:
                digests.append(digest)
        if events or digests or self._bad:
            # the digests commit with the events: after a crash, what the broker resends is recognised
            state: dict[str, Any] | None = {self.recent_key: self.recent.with_new(digests)} if digests else None
            if marks != self.counter_marks:  # and the counters' marks, so a restart judges the next one alike
                state = {**(state or {}), self.marks_key: marks}
            attempt = 0
            while True:
                try:
                    self._bus.publish_many(events, state=state, bad_input=self._bad)
                    break
                except Exception as e:  # noqa: BLE001 - journal full, disk error: keep the batch, try again
                    attempt += 1
                    self._report_error(e)
                    delay = backoff_delay(attempt, initial=1.0, maximum=30.0)
                    log.error("source %s: cannot journal %d message(s) (%s: %s); not acknowledging them, "
                              "trying again in %.0fs", self.name, len(batch), type(e).__name__, e, delay)
                    if self._stop.wait(delay):
                        return  # not acknowledged: the broker sends them again next session
            for d in digests:
                self.recent.add(d)
            self.counter_marks = marks
            self._published += len(events)
            self.counts["journaled"] += len(events)
        self._acknowledge(batch)
        self._record_status()

    def _acknowledge(self, batch: list[Inbound]) -> None:
        """PUBACK what came on the current connection. A packet id from an earlier one may now name another
        message; those are resent by the broker (DUP) and recognised then."""
        conn = self.conn
        if conn is None or not conn.connected.is_set():
            return
        current = conn.connects
        for item in batch:
            if item.msg.qos > 0 and item.connection == current:
                conn.client.ack(item.msg.mid, item.msg.qos)

    def adapt(self, msg: Any, received: datetime, size: int | None = None) -> list[Event]:
        size = len(msg.payload) if size is None else size
        route = self.route_for(msg.topic)
        levels = msg.topic.split("/")
        device = levels[route.device_level] if route is not None and route.device_level is not None else None
        # Before anything else is judged: a device flooding oversized (or unroutable) messages is rate-limited
        # like any other, instead of filling the dead letters with one each.
        if not self.limiter.allow(device or msg.topic, time.monotonic()):
            self._rate_limited(msg, device or msg.topic)
            return []
        if size > self.cfg.max_payload_bytes:
            raise BadMessage(f"payload of {size} bytes is over max_payload_bytes ({self.cfg.max_payload_bytes})")
        if route is None:
            raise BadMessage("no subscription maps this topic (a filter the session kept, or an overlap)")
        try:
            doc = jsondepth.decode(msg.payload)
        except msgspec.DecodeError as e:
            raise BadMessage(f"not JSON: {e}") from None
        except jsondepth.NestedTooDeep as e:
            raise BadMessage(str(e)) from None
        if not isinstance(doc, dict):
            raise BadMessage(f"expected a JSON object, got {type(doc).__name__}")
        try:
            events = route.adapt(adapters.Message(msg.topic, device, doc, received, self.name))
        except adapters.AdapterError as e:
            raise BadMessage(str(e)) from None
        return [msgspec.structs.replace(e, metadata=msgspec.structs.replace(e.metadata, source_topic=msg.topic))
                for e in events]

    def latest_wins(self, events: list[Event], received: datetime, marks: dict[str, str]) -> list[Event]:
        """Absolute counters are latest-wins by the device's own time: a counters event stamped earlier than the
        newest one journaled for its asset is old news (a message from a device's outbox that arrived late, a
        clock set back) and must not be sent over newer values. It is journaled, marked ``stale`` in its metadata
        (the uplinks send nothing for it), counted and logged. Equal times keep the order of arrival. A message
        without a time of its own carries the receive time: never stale, and it does not move the mark; nor does
        one stamped more than ``MARK_AHEAD_MAX`` ahead of the receive time."""
        out = []
        for e in events:
            if e.event_type != "asset.counters":
                out.append(e)
                continue
            asset, stamped = e.payload["asset_id"], _parse_time(e.payload.get("timestamp"))
            if stamped is None or stamped == received:
                out.append(e)
                continue
            mark = marks.get(asset)
            mark_time = _parse_time(mark)
            if mark_time is not None and stamped < mark_time:
                reason = (f"stale: device time {e.payload['timestamp']} is older than {mark}, already journaled "
                          f"for {asset}; not sent over the newer values")
                self.counts["stale_counters"] += 1
                if self._bus is not None:
                    self._bus.metrics.record_flagged(self.name, "stale_counters")
                log.warning("source %s: counters for %s: %s", self.name, asset, reason)
                e = msgspec.structs.replace(e, metadata=msgspec.structs.replace(
                    e.metadata, custom={**e.metadata.custom, "stale": reason}))
            elif stamped <= received + MARK_AHEAD_MAX and (mark_time is None or stamped > mark_time):
                if asset not in marks and len(marks) >= MAX_MARKS:
                    marks.pop(next(iter(marks)))
                marks[asset] = e.payload["timestamp"]
            out.append(e)
        return out

    def route_for(self, topic: str) -> Route | None:
        from paho.mqtt.client import topic_matches_sub

        for r in self.routes:
            if topic_matches_sub(r.topic, topic):
                return r
        return None

    def bad_input(self, msg: Any, reason: str, malformed: bool = True) -> None:
        assert self._bus is not None
        if malformed:
            self.counts["bad"] += 1
            self._bus.metrics.record_bad_input(self.name)
        log.warning("source %s: bad message on %s: %s", self.name, msg.topic, reason)
        self._bad.append((f"{self.name} {msg.topic}", bytes(msg.payload), reason))

    def _rate_limited(self, msg: Any, device: str) -> None:
        """Counted always; kept (one message a minute per device, with the reason) so the culprit is visible."""
        self.counts["rate_limited"] += 1
        now = time.monotonic()
        if now - self._limited_noted.get(device, -1e9) >= 60.0:
            if len(self._limited_noted) >= 10000:
                self._limited_noted.clear()  # made-up device ids must not grow memory
            self._limited_noted[device] = now
            self.bad_input(msg, f"device {device} is over the rate limit ({self.cfg.rate_limit:g}/s, burst "
                                f"{self.cfg.rate_burst}); messages over it are dropped and counted, one a minute "
                                "is kept here", malformed=False)

    # ------------------------------------------------------------------------------------------------ status
    def _record_status(self, force: bool = False) -> None:
        self.status.write(self._status_doc, force)

    def _status_doc(self) -> dict[str, Any]:
        conn = self.conn.describe() if self.conn is not None else {}
        return {"port": conn.get("broker", self.cfg.broker), "online": self.state is TransportState.CONNECTED,
                "client_id": self.client_id, "topics": self.get_subscribed_topics(), **dict(self.counts),
                "last_error": self._last_error or conn.get("last_error"), "since": datetime.now(timezone.utc).isoformat()}

    def get_stats(self) -> dict[str, Any]:
        stats = super().get_stats()
        stats.update(dict(self.counts))
        if self.conn is not None and self.conn.last_error and not stats["last_error"]:
            stats["last_error"] = self.conn.last_error
        return stats


def _parse_time(value: Any) -> datetime | None:
    """An event's stored timestamp (ISO 8601 with an offset) as a datetime; None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def build(section: MqttSourceSection, ctx) -> MqttSource:
    """The plugin's build (``mqtt_plugin.PLUGIN``)."""
    return MqttSource(section, ctx.station)
