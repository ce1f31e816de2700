"""The fixture controller: actuation counts, lid state, a vacuum fault and a self-test, reported to the agent over
the serial line. ``run()`` is the firmware's main loop.

Counts are absolute and kept in flash (a reset loses none, and a message sent twice cannot count twice); the lid
switch gives the fixture's state (closed: busy, open: idle); the vacuum sensor raises fault E17 when it drops
below its threshold and clears it when it recovers.
"""
import os
from binascii import hexlify

from machine import ADC, UART, Pin, unique_id

from clock import Schedule, sleep_ms, ticks_diff, ticks_ms
from counter import Counter
from serial_link import SerialLink

FIRMWARE = "1.0.0"
LOOP_MS = 10


class Controller:
    def __init__(self, cfg):
        self.cfg = cfg
        state_dir = cfg.get("state_dir", "state")
        try:
            os.mkdir(state_dir)
        except OSError:
            pass  # already there
        uart = UART(cfg.get("uart", 0), cfg.get("baudrate", 115200), tx=Pin(cfg.get("tx_pin", 0)),
                    rx=Pin(cfg.get("rx_pin", 1)))
        self.link = SerialLink(uart, cfg.get("resend_ms", 2000), cfg.get("buffer_messages", 64))
        self.counter = Counter(cfg.get("counter_pin", 15), cfg.get("debounce_ms", 30), state_dir + "/counters.json")
        self.lid = Pin(cfg.get("lid_pin", 14), Pin.IN, Pin.PULL_UP)
        self.vacuum = ADC(Pin(cfg.get("vacuum_adc_pin", 26)))  # on an ESP32 add atten=ADC.ATTN_11DB (0-3.3 V)
        self.supply = ADC(Pin(cfg.get("supply_adc_pin", 27)))
        self.schedule = Schedule({"counters": int(cfg.get("counters_every_s", 1) * 1000),
                                  "selftest": int(cfg.get("selftest_every_s", 3600) * 1000)})
        self.counters_sent = None
        self.lid_closed = None
        self.vacuum_fault = False
        self.link.send({"type": "hello", "model": cfg.get("model", "FX-CTRL"),
                        "serial": hexlify(unique_id()).decode(), "firmware": FIRMWARE})
        print("controller: up, session %s, counters %d/%d"
              % (self.link.session, self.counter.running, self.counter.total))

    def run(self):
        while True:
            try:
                self.step()
            except Exception as e:  # flash full, a driver error: say it and go on; what is kept is resent
                print("controller: step failed:", repr(e))
            sleep_ms(LOOP_MS)

    def step(self):
        for name in self.schedule.due():
            getattr(self, "_" + name)()
        self._lid()
        self._vacuum()
        self.link.poll()

    def _counters(self):
        self.counter.take()
        now = (self.counter.running, self.counter.total)
        if now != self.counters_sent:
            self.counters_sent = now
            self.link.send({"type": "counters", "running_count": now[0], "total_count": now[1]})

    def _lid(self):
        closed = self.lid.value() == 0
        if closed != self.lid_closed:
            self.lid_closed = closed
            self.link.send({"type": "state", "state": "busy" if closed else "idle",
                            "reason": "lid closed" if closed else "lid open"})

    def _vacuum(self):
        low = _mv(self.vacuum) < self.cfg.get("vacuum_low_mv", 1200)
        if low != self.vacuum_fault:
            self.vacuum_fault = low
            self.link.send({"type": "fault", "code": "E17", "message": "vacuum low", "severity": "warning",
                            "cleared": not low})

    def _selftest(self):
        t0 = ticks_ms()
        vcc = round(_mv(self.supply) / 1000 * 2, 3)  # a 1:2 divider from the 3V3 rail
        steps = [{"name": "VCC", "value": vcc, "unit": "V", "low": 3.2, "high": 3.4},
                 {"name": "Vacuum sensor", "value": round(_mv(self.vacuum)), "unit": "mV",
                  "low": 100, "high": 3200}]
        ok = all(s["low"] <= s["value"] <= s["high"] for s in steps)
        self.link.send({"type": "selftest", "result": "pass" if ok else "fail",
                        "duration_ms": ticks_diff(ticks_ms(), t0), "steps": steps})


def _mv(adc):
    """Millivolts from a 16-bit reading against 3.3 V: ``read_u16`` is on every port (the Pico has no read_uv)."""
    return adc.read_u16() * 3300 / 65535
