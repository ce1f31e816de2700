"""MQTT telemetry: journal events, the agent's status and its health, published to a broker.

A durable subscriber (``mqtt``) with a window of unacknowledged QoS 1 publishes (``PipelinedHandler``): the
cursor moves past an event only when the broker's PUBACK for it came back, in journal order, so a broker outage
or an agent crash loses nothing; after a crash the unacknowledged window is sent again. While the broker is away
paho keeps the window and sends it, in order, when the connection is back; the backlog stays in the journal.

Topics under ``topic_prefix`` (``fixture-agent/<station>`` by default):

* ``<prefix>/events/<type>``: each event as JSON, with ``run`` (this agent run's id) and ``seq`` (1, 2, 3 … per
  run, in publish order) added, Sparkplug's ``bdSeq``/``seq`` idea: a consumer sees a gap as a jump in ``seq``
  within one ``run``, and drops a resend as an ``id`` it already has.
* ``<prefix>/status`` (retained): ``online`` with version, boot id and run id when connected (birth), ``offline``
  as the last will when the connection dies, and ``offline`` on a clean stop.
* ``<prefix>/health`` (retained, every ``health_interval``): backlog per subscriber, journal bytes, dead letters,
  uptime.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import msgspec

from .. import __version__
from ..connections.mqtt_config import default_client_id
from .mqtt_plugin import MqttSinkSection
from ..events.handlers import PipelinedHandler, Receipt, SettableReceipt
from ..events.ids import BOOT_ID, uuid7
from ..events.model import Event
from ..events.policies import CircuitBreaker, PermanentError, RetryPolicy, TransientError
from ..connections.mqtt import MqttConnection, topic_level

if TYPE_CHECKING:
    from ..events.journal import Journal

log = logging.getLogger(__name__)

#: PUBACK reason codes (MQTT 5) that no resend can fix: the event goes to the dead-letter table.
PERMANENT_REASONS = {0x90: "topic name invalid", 0x99: "payload format invalid", 0x95: "packet too large"}


class BrokerRefused(TransientError):
    """The broker said no (not authorized, quota exceeded): not the event's fault, so it waits, paused."""

    state = "paused"


class MqttTelemetrySink(PipelinedHandler):
    def __init__(self, cfg: MqttSinkSection, *, station: str, journal: "Journal | None" = None) -> None:
        self._name = "mqtt"
        self.cfg = cfg
        self.event_types = tuple(cfg.event_types)
        self.prefix = cfg.topic_prefix.replace("{station}", topic_level(station))
        self.client_id = cfg.client_id or default_client_id(station, "telemetry")
        self.retry_policy = RetryPolicy(max_retries=None, initial_delay=1.0, max_delay=float(cfg.reconnect_max))
        self.circuit_breaker = CircuitBreaker(failure_threshold=1_000_000)  # the window is the back-pressure here
        self.run_id = uuid7()
        self.started = time.monotonic()
        self._journal = journal
        self._seq = 0
        self._lock = threading.Lock()
        self._waiting: dict[int, SettableReceipt] = {}
        self._early: dict[int, BaseException | None] = {}  # PUBACKs that beat the registration of their mid
        self._stop = threading.Event()
        self._health: threading.Thread | None = None
        self.published = 0
        self.conn = MqttConnection(
            cfg, client_id=self.client_id,
            what="sinks.mqtt", persistent=False, on_connected=self._born, configure=self._configure,
        )

    # ------------------------------------------------------------------------------------------------ lifecycle
    def _configure(self, client) -> None:
        client.on_publish = self._on_publish
        client.max_inflight_messages_set(self.cfg.window + 8)  # the window, plus status and health
        client.max_queued_messages_set(0)
        client.will_set(f"{self.prefix}/status", self._status_doc("offline", "connection lost"), qos=1, retain=True)

    def start(self) -> None:
        self._stop.clear()
        self.conn.start()
        self._health = threading.Thread(target=self._health_loop, name="mqtt-health", daemon=True)
        self._health.start()

    def stop(self) -> None:
        """Say ``offline`` (retained) and disconnect cleanly, so the last will is not sent."""
        self._stop.set()
        if self._health is not None:
            self._health.join(2.0)

        def goodbye() -> None:
            self._publish(f"{self.prefix}/status", self._status_doc("offline", "stopped"), retain=True).wait(2.0)

        self.conn.stop(before_disconnect=goodbye)

    def _born(self, client, session_present: bool) -> None:
        self._publish(f"{self.prefix}/status", self._status_doc("online"), retain=True)
        self._publish_health()

    def _status_doc(self, state: str, reason: str | None = None) -> bytes:
        doc = {"state": state, "version": __version__, "boot_id": BOOT_ID, "run": self.run_id,
               "client_id": self.client_id,
               "time": datetime.now(timezone.utc).isoformat()}
        if reason:
            doc["reason"] = reason
        return msgspec.json.encode(doc)

    def _health_loop(self) -> None:
        while not self._stop.wait(float(self.cfg.health_interval)):
            if self.conn.connected.is_set():
                try:
                    self._publish_health()
                except Exception as e:  # noqa: BLE001 - the link dropped meanwhile; next time
                    log.debug("sinks.mqtt: health not published: %s", e)

    def _publish_health(self) -> None:
        doc: dict[str, Any] = {"run": self.run_id, "uptime_s": round(time.monotonic() - self.started, 1),
                               "published": self.published, "time": datetime.now(timezone.utc).isoformat()}
        if self._journal is not None:
            try:
                st = self._journal.stats()
                doc["journal"] = {"events": st.events, "used_bytes": st.used_bytes, "max_bytes": st.max_bytes,
                                  "dead_letters": st.dead_letters}
                doc["subscribers"] = {s["name"]: {"backlog": s["backlog"], "state": s["state"]}
                                      for s in st.subscribers}
            except Exception as e:  # noqa: BLE001 - health is best effort; never stop the loop over it
                doc["error"] = f"{type(e).__name__}: {e}"
        self._publish(f"{self.prefix}/health", msgspec.json.encode(doc), retain=True)

    # ------------------------------------------------------------------------------------------------ delivery
    @property
    def window(self) -> int:  # type: ignore[override]
        """At most what the broker takes unacknowledged (MQTT 5 Receive Maximum; mosquitto says 20), less room
        for status and health: paho resends the whole window at once after a reconnect, and a strict broker
        disconnects a client that sends more (EMQX: 0x93)."""
        rm = self.conn.receive_maximum
        return max(1, min(self.cfg.window, rm - 2)) if rm else self.cfg.window

    def wait_ready(self, timeout: float) -> bool:
        """New events go out only while connected: paho resends what was in flight first, in order."""
        return self.conn.connected.wait(timeout)

    def submit(self, event: Event) -> Receipt:
        body = msgspec.json.encode(event)
        with self._lock:
            seq = self._seq + 1
        payload = b'{"id":"%s","run":"%s","seq":%d,%s' % (event.id.encode(), self.run_id.encode(), seq, body[1:])
        receipt = self._publish(f"{self.prefix}/events/{topic_level(event.event_type)}", payload)
        with self._lock:
            self._seq = seq  # taken only once published: a gap in seq is always a missed event
        self.published += 1
        return receipt

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> SettableReceipt:
        import paho.mqtt.client as mqtt

        qos = self.cfg.qos
        try:
            info = self.conn.client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as e:  # payload too large for MQTT, a topic paho refuses: no resend can fix it
            raise PermanentError(f"cannot publish to {topic}: {e}") from None
        receipt = SettableReceipt()
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos > 0:
            pass  # queued by paho, sent when the connection is back
        elif info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise TransientError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        with self._lock:
            if info.mid in self._early:
                receipt.settle(self._early.pop(info.mid))
            else:
                self._waiting[info.mid] = receipt
        if qos == 0:
            receipt.settle(None)  # no acknowledgement will come: handed to the socket is all QoS 0 has
        return receipt

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        error: BaseException | None = None
        if reason_code.is_failure:
            why = PERMANENT_REASONS.get(reason_code.value)
            error = (PermanentError(f"broker refused the publish: {why}") if why
                     else BrokerRefused(f"broker refused the publish: {reason_code} (check its ACL for "
                                        f"{self.client_id} on {self.prefix}/#)"))
        with self._lock:
            receipt = self._waiting.pop(mid, None)
            if receipt is None:
                self._early[mid] = error
                return
        receipt.settle(error)

    def stalled(self) -> str | None:
        if self.conn.connected.is_set():
            return None
        return f"broker {self.cfg.broker} unreachable ({self.conn.last_error or 'connecting'}); events wait in " \
               "the journal"


def build(section: MqttSinkSection, ctx) -> MqttTelemetrySink:
    """The plugin's build (``mqtt_plugin.PLUGIN``)."""
    return MqttTelemetrySink(section, station=ctx.station, journal=ctx.journal)
