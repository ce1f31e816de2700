"""Wi-Fi and the MQTT connection to the fixture Pi's broker (umqtt.simple), with backoff and a last will.

Never blocks the main loop for long and never raises: a failed attempt schedules the next one (exponential backoff
with jitter, so forty devices do not reconnect in step after the broker restarts) and the caller keeps buffering.
Every publish is QoS 1 and returns only once the broker has acknowledged it: that is what lets the outbox forget a
message.
"""
import random

import network
from umqtt.simple import MQTTClient

import payloads
from clock import ticks_add, ticks_diff, ticks_ms

KEEPALIVE_S = 60
PUBACK_TIMEOUT_S = 5


class Link:
    def __init__(self, cfg):
        self.cfg = cfg
        self.device_id = cfg["device_id"]
        self.status_topic = payloads.topic("assets", self.device_id, "status").encode()
        self.wlan = network.WLAN(network.STA_IF)
        self.client = None
        self.delay_ms = int(cfg.get("reconnect_min_s", 1) * 1000)
        self.next_try = ticks_ms()
        self.last_ping = ticks_ms()
        self.clock_set = False

    @property
    def up(self):
        return self.client is not None

    def ensure(self, online_extra):
        """Connect if down and an attempt is due; True when connected. ``online_extra`` goes into the retained
        online status (e.g. how many buffered messages had to be dropped)."""
        if self.client is not None:
            self._keepalive()
            return self.client is not None
        if ticks_diff(ticks_ms(), self.next_try) < 0:
            return False
        try:
            joined = self._wifi()
        except OSError as e:  # the driver refuses a connect while it is still joining: look again later
            joined = False
            print("wifi:", e)
        if not joined:
            self._backoff("wifi not connected")
            return False
        client = MQTTClient(self.device_id.encode(), self.cfg["broker_host"], self.cfg.get("broker_port", 1883),
                            user=_opt(self.cfg.get("mqtt_user")), password=_opt(self.cfg.get("mqtt_password")),
                            keepalive=KEEPALIVE_S)
        client.set_last_will(self.status_topic, payloads.status("offline").encode(), retain=True, qos=1)
        try:
            client.connect()
            self.client = client
            self.publish(self.status_topic.decode(), payloads.status("online", **online_extra), retain=True)
        except Exception as e:  # refused (bad password: MQTTException), unreachable, reset: all mean "later"
            _close(client)
            self.client = None
            self._backoff("connect: %r" % (e,))
            return False
        if self.client is None:
            return False
        print("mqtt: connected to", self.cfg["broker_host"])
        self.delay_ms = int(self.cfg.get("reconnect_min_s", 1) * 1000)
        self.last_ping = ticks_ms()
        return True

    def publish(self, topic, payload, retain=False):
        """QoS 1; True once the broker acknowledged it, False (and the link down) if it could not."""
        if self.client is None:
            return False
        try:
            # umqtt.simple has no timeouts of its own: without one a half-open connection (the access point lost
            # power, no reset ever comes) would hold the loop until TCP gives up, minutes later
            self.client.sock.settimeout(PUBACK_TIMEOUT_S)
            self.client.publish(topic.encode(), payload.encode(), retain, 1)
            return True
        except Exception as e:
            self.lost("publish: %r" % (e,))
            return False

    def lost(self, why):
        _close(self.client)
        self.client = None
        self._backoff(why)

    def _keepalive(self):
        try:
            self.client.check_msg()  # reads a PINGRESP; raises when the broker closed the connection
            if ticks_diff(ticks_ms(), self.last_ping) >= KEEPALIVE_S * 500:
                self.client.ping()
                self.last_ping = ticks_ms()
        except Exception as e:
            self.lost("connection: %r" % (e,))

    def _wifi(self):
        if not self.wlan.isconnected():
            self.wlan.active(True)
            if self.wlan.status() != getattr(network, "STAT_CONNECTING", -1):  # it is already trying: let it
                self.wlan.connect(self.cfg["wifi_ssid"], self.cfg["wifi_password"])
            return False  # joining takes seconds: look again at the next attempt
        if not self.clock_set:
            self.clock_set = _set_clock(self.cfg.get("ntp_host"))
        return True

    def _backoff(self, why):
        jitter = random.getrandbits(16) % (self.delay_ms // 5 + 1)
        self.next_try = ticks_add(ticks_ms(), self.delay_ms + jitter)
        print("mqtt: down (%s); next attempt in %d ms" % (why, self.delay_ms + jitter))
        self.delay_ms = min(self.delay_ms * 2, int(self.cfg.get("reconnect_max_s", 60) * 1000))


def _opt(s):
    return s.encode() if s else None


def _close(client):
    try:
        client.sock.close()
    except Exception:
        pass


def _set_clock(host):
    """NTP from the Pi (MicroPython's ntptime); where there is no ntptime the clock is already right."""
    try:
        import ntptime
    except ImportError:
        return True
    try:
        if host:
            ntptime.host = host
        ntptime.settime()
        return True
    except Exception as e:
        print("ntp:", e)
        return False
