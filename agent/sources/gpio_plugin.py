"""``[sources.gpio]``: the fixture's own pins (counter, lid, lamps, loopback self-test)."""

from __future__ import annotations

from typing import Literal

from ..config_base import FieldError, Section, parse_duration, parse_fields
from ..plugins import Plugin


class GpioSourceSection(Section, kw_only=True):
    """Fixture pins (BCM numbers): actuation counter, lid switch, pass/fail lamps, loopback self-test."""

    asset_id: str
    pin_factory: str | None = None  # gpiozero's: "lgpio", "rpigpio", "native", "mock" (tests, demos)
    counter_pin: int | None = None
    counter_active_low: bool = True  # a switch to ground with the internal pull-up
    counter_bounce: float | str = "20ms"
    lid_pin: int | None = None
    lid_closed_when_low: bool = True
    lid_closed_state: Literal["busy", "online", "idle"] = "busy"
    lid_open_state: Literal["idle", "online"] = "idle"
    pass_lamp_pin: int | None = None
    fail_lamp_pin: int | None = None
    lamp_hold: float | str = "5s"  # 0: until the next result
    loopback_out_pin: int | None = None
    loopback_in_pin: int | None = None
    selftest_interval: float | str = "1h"  # 0: only at start

    def __post_init__(self) -> None:
        parse_fields(self, parse_duration, "counter_bounce", "lamp_hold", "selftest_interval")
        seen: dict[int, str] = {}
        for f in ("counter_pin", "lid_pin", "pass_lamp_pin", "fail_lamp_pin", "loopback_out_pin", "loopback_in_pin"):
            pin = getattr(self, f)
            if pin is None:
                continue
            if not 0 <= pin <= 53:
                raise FieldError(f, pin, "must be a BCM GPIO number from 0 to 53")
            if pin in seen:
                raise FieldError(f, pin, f"is already {seen[pin]}: every pin has one job")
            seen[pin] = f
        if (self.loopback_out_pin is None) != (self.loopback_in_pin is None):
            f = "loopback_out_pin" if self.loopback_in_pin is None else "loopback_in_pin"
            raise FieldError(f, getattr(self, f), "the loopback self-test needs both loopback_out_pin and "
                                                   "loopback_in_pin")


PLUGIN = Plugin(
    kind="sources", name="gpio", section=GpioSourceSection, build="agent.sources.gpio:build",
    needs=("gpiozero", "gpio"), source_names=lambda s: ["gpio"],
    doc="the fixture's pins: actuation counter, lid switch, pass/fail lamps, loopback self-test",
)
