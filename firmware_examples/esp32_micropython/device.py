"""The device: what it measures, when, and the order it goes out in. ``run()`` is the firmware's main loop.

Every message goes out in the order it was made. While the broker is reachable and nothing is waiting, a message
is sent at once; otherwise it joins the outbox in flash behind the older ones, and the outbox is emptied, oldest
first, as soon as the broker is back. Status is not buffered: ``online`` (retained) is sent at every connect, and
the broker publishes the last will ``offline`` when the device drops off.
"""
import os

import payloads
from clock import Schedule, sleep_ms
from counter import Counter
from link import Link
from outbox import Outbox
from sensors import Sensors

LOOP_MS = 20
SEND_PER_STEP = 20  # a long backlog is sent a slice per loop, so the counter and the schedule keep up


class Device:
    def __init__(self, cfg):
        self.cfg = cfg
        self.id = cfg["device_id"]
        state_dir = cfg.get("state_dir", "state")
        try:
            os.mkdir(state_dir)
        except OSError:
            pass  # already there
        self.counter = Counter(cfg.get("counter_pin", 4), cfg.get("debounce_ms", 30), state_dir + "/counters.json")
        self.sensors = Sensors(cfg.get("supply_adc_pin", 34), cfg.get("supply_divider", 2.0),
                               cfg.get("ntc_adc_pin", 35), cfg.get("counter_pin", 4))
        self.outbox = Outbox(state_dir, cfg.get("buffer_messages", 200))
        self.link = Link(cfg)
        self.schedule = Schedule({"counters": _ms(cfg, "counters_every_s", 5),
                                  "selftest": _ms(cfg, "selftest_every_s", 600),
                                  "environment": _ms(cfg, "environment_every_s", 60)})
        self.counters_sent = None
        print("device: up, %s, counters %d/%d, %d messages waiting in flash"
              % (self.id, self.counter.running, self.counter.total, len(self.outbox)))

    def run(self):
        while True:
            try:
                self.step()
            except Exception as e:  # flash full, a driver error: say it and go on; the counter keeps counting
                print("device: step failed:", repr(e))
            sleep_ms(LOOP_MS)

    def step(self):
        for name in self.schedule.due():
            getattr(self, "_" + name)()
        if self.link.ensure({"dropped": self.outbox.dropped} if self.outbox.dropped else {}):
            self._send_waiting()

    def _counters(self):
        """Absolute counts, when they changed (and once after boot): a repeat is harmless, a gap repairs itself."""
        self.counter.take()
        now = (self.counter.running, self.counter.total)
        if now != self.counters_sent:
            self.counters_sent = now
            self._emit("assets", "counters", payloads.counters(*now))

    def _selftest(self):
        self._emit("devices", "selftest", payloads.selftest(*self.sensors.selftest()))

    def _environment(self):
        self._emit("assets", "environment", payloads.environment(*self.sensors.environment()))

    def _emit(self, family, kind, payload):
        topic = payloads.topic(family, self.id, kind)
        if len(self.outbox) or not self.link.publish(topic, payload):
            self.outbox.append(topic, payload)

    def _send_waiting(self):
        for _ in range(SEND_PER_STEP):
            msg = self.outbox.peek()
            if msg is None:
                if self.outbox.dropped:
                    self.outbox.dropped = 0  # reported in the online status of this connection
                return
            if not self.link.publish(*msg):
                return
            self.outbox.pop()


def _ms(cfg, key, default):
    return int(cfg.get(key, default) * 1000)
