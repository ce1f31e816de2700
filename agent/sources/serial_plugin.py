"""``[[sources.serial]]``: fixtures on serial ports (a JSON-lines controller or a SCPI instrument)."""

from __future__ import annotations

from typing import Any, Literal

from ..config_base import FieldError, Section, check_name, parse_duration, parse_fields
from ..plugins import Plugin


class ScpiQuery(Section):
    """One polled SCPI query: the agent judges the value against the limits under ``comp_op`` (WATS' operators;
    left out, it follows from the limits given: ``GELE``, ``GE``, ``LE`` or ``LOG``)."""

    name: str
    command: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    nominal: float | None = None
    comp_op: str | None = None

    def __post_init__(self) -> None:
        from ..events import limits

        if self.comp_op is not None:
            self.comp_op = self.comp_op.strip().upper()
            try:
                limits.limits_of(self.comp_op, self.low, self.high)
            except limits.LimitError as e:
                raise FieldError("comp_op", self.comp_op, str(e)) from None


class SerialSourceSection(Section, kw_only=True):
    """A fixture on a serial port; ``driver`` picks the protocol (``jsonl`` controller or ``scpi`` instrument)."""

    name: str
    port: str
    driver: Literal["jsonl", "scpi"]
    asset_id: str
    baud: int = 115200
    max_line_bytes: int = 4096
    reconnect_min: float | str = "0.5s"
    reconnect_max: float | str = "30s"
    # scpi only
    timeout: float | str = "2s"
    selftest_timeout: float | str = "30s"
    selftest_on_connect: bool = True
    poll_interval: float | str = "10s"
    queries: list[ScpiQuery] = []
    drain_errors: bool = True

    def __post_init__(self) -> None:
        parse_fields(self, parse_duration, "reconnect_min", "reconnect_max", "timeout", "selftest_timeout",
                      "poll_interval")
        check_name(self.name)
        if not 0 < self.baud <= 10_000_000:
            raise FieldError("baud", self.baud, "must be a baud rate from 1 to 10000000 (e.g. 115200)")
        if not 64 <= self.max_line_bytes <= 1_048_576:
            raise FieldError("max_line_bytes", self.max_line_bytes, "must be between 64 and 1048576")
        if self.reconnect_min <= 0 or self.reconnect_max < self.reconnect_min:
            raise FieldError("reconnect_min", self.reconnect_min, "must be more than 0 and at most reconnect_max")
        if self.driver != "scpi" and self.queries:
            raise FieldError("queries", [q.name for q in self.queries], "are for driver = \"scpi\"")


def _unique_names(config: Any) -> None:
    names = [s.name for s in config.sources.serial]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise FieldError(f"sources.serial[{i}].name", n, f"is the name of sources.serial[{names.index(n)}] too: "
                             "every serial source needs its own")


PLUGIN = Plugin(
    kind="sources", name="serial", section=SerialSourceSection, build="agent.sources.serial:build", many=True,
    needs=("serial", "serial"), check=_unique_names, source_names=lambda s: [f"serial:{s.name}"],
    doc="a fixture controller (JSON lines) or a SCPI instrument on a serial port",
)
