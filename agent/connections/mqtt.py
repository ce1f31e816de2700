"""One broker connection (paho-mqtt 2.x, callback API 2) as both MQTT parts use it: the ingest source and the
telemetry sink each own one, configured from the same kind of section.

What is decided here, once: the protocol version and the persistent session (MQTT 5 ``clean_start = False`` with
a session expiry; 3.1.1 ``clean_session = False``), username and password (read from a 0600 file), TLS with
verification on by default, and reconnecting. paho's own network thread does the reconnecting; before each of
its waits we set the delay from ``events.backoff`` (exponential, jittered), so a line of Pis that lost the same
broker does not come back in lockstep. The password never reaches a log line or ``status``.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config_base import ConfigError
from .mqtt_config import MqttConnectionSection
from ..events.backoff import backoff_delay
from .. import secrets

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)


def topic_level(name: str) -> str:
    """A name (a station) as one topic level: no '/', '+', '#'."""
    return re.sub(r"[/+#\s]", "-", name)


def _ordered_client_class(mqtt: Any) -> type:
    """paho calls on_connect *before* it resends the QoS 1 publishes that were in flight when the connection
    dropped; a publish from another thread in between overtakes them, and a telemetry consumer sees events out of
    order (found by the broker-restart test). This client calls ``after_connack`` once that resend is written, and
    the connection counts as usable only from then on."""

    class OrderedClient(mqtt.Client):
        def after_connack(self) -> None:
            pass

        def _handle_connack(self) -> Any:
            try:
                return super()._handle_connack()
            finally:
                self.after_connack()

    if not hasattr(mqtt.Client, "_handle_connack"):
        raise RuntimeError("this paho-mqtt has no Client._handle_connack: check the resend order before using it")
    return OrderedClient


class MqttConnection:
    """A paho client on its own network thread. ``on_connected(client, session_present)`` runs after every
    accepted CONNACK (subscribe, publish a birth message), ``on_trouble(why)`` after every lost connection or
    failed attempt; ``configure(client)`` may set callbacks and a will before the first connect."""

    def __init__(self, cfg: MqttConnectionSection, *, client_id: str, what: str, persistent: bool,
                 session_expiry: float = 0.0, receive_maximum: int | None = None,
                 max_packet_size: int | None = None, manual_ack: bool = False,
                 on_connected: Callable[["mqtt.Client", bool], None] | None = None,
                 on_trouble: Callable[[str], None] | None = None,
                 configure: Callable[["mqtt.Client"], None] | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.cfg = cfg
        self.what = what
        self.client_id = client_id
        self._on_connected = on_connected
        self._on_trouble = on_trouble
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.connects = 0
        self.receive_maximum: int | None = None
        self._failures = 0
        self._stopping = False
        self._refused = False
        self._why = ""
        v5 = cfg.protocol == "5"
        self._accepted = False
        self.client = _ordered_client_class(mqtt)(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not persistent, manual_ack=manual_ack,
        )
        self._connect_kw: dict[str, Any] = {}
        if v5:
            props = Properties(PacketTypes.CONNECT)
            if persistent:
                props.SessionExpiryInterval = int(min(session_expiry, 0xFFFFFFFE))
            if receive_maximum:
                props.ReceiveMaximum = receive_maximum
            if max_packet_size:
                # the broker drops (does not send) a packet larger than this: paho would read it whole into memory
                # before anyone could look at its size (a 150 MB publish took the agent to 481 MB)
                props.MaximumPacketSize = max_packet_size
            self._connect_kw = {"clean_start": not persistent, "properties": props}
        if cfg.username:
            self._set_credentials(required=True)
        if cfg.tls:
            self._set_tls()
        self.client.on_connect = self._connected
        self.client.after_connack = self._resent
        self.client.on_disconnect = self._disconnected
        self.client.on_connect_fail = self._connect_failed
        if configure is not None:
            configure(self.client)
        self._next_delay()

    def _set_credentials(self, required: bool) -> None:
        """Username and the password (a file, a systemd credential or a variable: ``secrets.resolve``). Read again
        after each failed attempt, so a corrected password file is picked up without a restart."""
        password = None
        if secrets.configured(self.cfg, "password"):
            try:
                password, where = secrets.resolve(self.cfg, "password", f"{self.what}.password")
            except ConfigError:
                if required:
                    raise
                return
            if password is None:
                if required:
                    raise ConfigError(f"{self.what}.password: nothing at {where}")
                return
        self.client.username_pw_set(self.cfg.username, password)

    def _set_tls(self) -> None:
        cfg = self.cfg
        try:
            self.client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file,
                                cert_reqs=ssl.CERT_REQUIRED if cfg.verify_tls else ssl.CERT_NONE)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise ConfigError(f"{self.what}: TLS files: {e}") from None
        if not cfg.verify_tls:
            self.client.tls_insecure_set(True)
            log.warning("%s: TLS verification is off (verify_tls = false): anyone on the path can read and "
                        "change this traffic", self.what)

    # ------------------------------------------------------------------------------------------------ control
    def start(self) -> None:
        self._stopping = False
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=int(self.cfg.keepalive),
                                  **self._connect_kw)
        self.client.loop_start()

    def stop(self, before_disconnect: Callable[[], None] | None = None) -> None:
        """Disconnect cleanly (no last will), after ``before_disconnect`` (say goodbye) if connected."""
        self._stopping = True
        if self.connected.is_set() and before_disconnect is not None:
            try:
                before_disconnect()
            except Exception:  # noqa: BLE001 - a goodbye that fails must not keep us from stopping
                log.debug("%s: goodbye failed", self.what, exc_info=True)
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    @property
    def state(self) -> str:
        return "connected" if self.connected.is_set() else ("reconnecting" if self.last_error else "connecting")

    def describe(self) -> dict[str, Any]:
        """For ``status``: where, as whom, and how it is going (no password)."""
        return {"broker": self.cfg.broker, "client_id": self.client_id, "protocol": self.cfg.protocol,
                "username": self.cfg.username, "state": self.state, "connects": self.connects,
                "last_error": self.last_error}

    # ------------------------------------------------------------------------------------------------ callbacks
    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = True  # the disconnect that follows is this, not news
            self._failed(f"broker refused the connection: {reason_code}")
            return
        self._failures = 0
        self._next_delay()
        # MQTT 5: how many unacknowledged QoS 1 publishes the broker accepts from us (None: no limit said)
        self.receive_maximum = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        self.connects += 1
        self.last_error = None
        self._accepted = True  # ``connected`` is set once paho has resent what was in flight (_resent)
        log.info("%s: connected to %s as %s%s", self.what, self.cfg.broker, self.client_id,
                 " (session resumed)" if flags.session_present else "")
        if self._on_connected is not None:
            try:
                self._on_connected(client, bool(flags.session_present))
            except Exception:  # noqa: BLE001 - paho would swallow it silently; say it
                log.exception("%s: on connect failed", self.what)

    def _resent(self) -> None:
        if self._accepted:
            self._accepted = False
            self.connected.set()

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        self._accepted = False
        self.connected.clear()
        refused, self._refused = self._refused, False
        if not self._stopping and not refused:
            self._failed(f"connection lost: {reason_code}")

    def _connect_failed(self, client, userdata) -> None:
        # Finding out why costs a connection attempt of its own: only when it would be logged (as _failed logs)
        if self._failures + 1 in (1, 10, 100) or (self._failures + 1) % 1000 == 0 or not self.last_error:
            self._why = self._diagnose()
        self._failed(f"cannot connect to {self.cfg.broker}: {self._why}")

    def _diagnose(self) -> str:
        """paho does not say why a connect failed; find out (refused, no route, a TLS certificate problem)."""
        import socket

        try:
            with socket.create_connection((self.cfg.host, self.cfg.port), timeout=2) as sock:
                ctx = getattr(self.client, "_ssl_context", None)
                if self.cfg.tls and ctx is not None:
                    with ctx.wrap_socket(sock, server_hostname=self.cfg.host):
                        pass
        except (OSError, ssl.SSLError) as e:
            return str(e) if isinstance(e, ssl.SSLError) else (e.strerror or str(e))
        return "the connection attempt failed"

    def _failed(self, why: str) -> None:
        self._failures += 1
        if self.cfg.username:
            self._set_credentials(required=False)
        delay = self._next_delay()
        if self.last_error != why or self._failures in (1, 10, 100) or self._failures % 1000 == 0:
            log.warning("%s: %s; retrying in %.1fs (attempt %d)", self.what, why, delay, self._failures)
        self.last_error = why
        if self._on_trouble is not None:
            try:
                self._on_trouble(why)
            except Exception:  # noqa: BLE001
                log.exception("%s: trouble callback failed", self.what)

    def _next_delay(self) -> float:
        """Set paho's next reconnect wait (it waits between min and max; we make them one jittered value)."""
        delay = backoff_delay(max(1, self._failures), initial=self.cfg.reconnect_min,
                              maximum=self.cfg.reconnect_max)
        delay = max(0.05, delay)
        self.client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]
        return delay
