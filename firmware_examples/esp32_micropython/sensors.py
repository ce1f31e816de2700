"""Supply voltage and board temperature from the ADC, and the self-test built from them.

The self-test reports values with limits and lets the agent judge them (a step out of its limits fails the test
in WATS whatever the firmware thought); the firmware's own "P"/"F" is only its first opinion.
"""
import math
import os

from machine import ADC, Pin

from clock import ticks_diff, ticks_ms

NTC_BETA = 3950.0  # a 10 kOhm NTC (B 3950) from the ADC pin to GND, 10 kOhm from 3V3 to the pin
NTC_R25 = 10000.0
SERIES_R = 10000.0
SUPPLY_MV = 3300.0


class Sensors:
    def __init__(self, supply_pin, supply_divider, ntc_pin, counter_pin):
        self.supply = ADC(Pin(supply_pin), atten=ADC.ATTN_11DB)
        self.ntc = ADC(Pin(ntc_pin), atten=ADC.ATTN_11DB)
        self.supply_divider = supply_divider
        self.counter_pin = Pin(counter_pin)

    def supply_volts(self):
        return round(self.supply.read_uv() / 1e6 * self.supply_divider, 3)

    def temperature(self):
        """Degrees C, or None when the NTC is open or shorted (a reading that is not a temperature)."""
        mv = self.ntc.read_uv() / 1000
        if mv <= 1 or mv >= SUPPLY_MV - 1:
            return None
        r = SERIES_R * mv / (SUPPLY_MV - mv)
        kelvin = 1 / (1 / 298.15 + math.log(r / NTC_R25) / NTC_BETA)
        return round(kelvin - 273.15, 2)

    def environment(self):
        readings, units = {"supply_voltage": self.supply_volts()}, {"supply_voltage": "V"}
        t = self.temperature()
        if t is not None:
            readings["temperature"], units["temperature"] = t, "C"
        return readings, units

    def selftest(self):
        """(result, duration_ms, steps)."""
        t0 = ticks_ms()
        vcc = self.supply_volts()
        temp = self.temperature()
        st = os.statvfs("/")
        steps = [
            {"name": "vcc", "value": vcc, "unit": "V", "low": 3.2, "high": 3.4},
            {"name": "ntc_temperature", "value": -273.15 if temp is None else temp, "unit": "C",
             "low": -10, "high": 85},
            {"name": "counter_input_idle", "value": self.counter_pin.value(), "low": 1, "high": 1},
            {"name": "flash_free_kb", "value": st[0] * st[4] // 1024, "unit": "kB", "low": 32},
        ]
        ok = all(s.get("low", -math.inf) <= s["value"] <= s.get("high", math.inf) for s in steps)
        return ("P" if ok else "F"), ticks_diff(ticks_ms(), t0), steps
