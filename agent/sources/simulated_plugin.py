"""``[sources.simulated]``: a test station in the agent itself (the demo's fixture)."""

from __future__ import annotations


from ..config_base import FieldError, Section, parse_duration, parse_fields
from ..plugins import Plugin


class SimulatedSourceSection(Section):
    """The built-in simulated fixture: test results, absolute counters and telemetry, no hardware needed."""

    enabled: bool = True
    asset_id: str = "SIM-FIXTURE-1"
    part_number: str = "DEMO-PCBA-100"
    revision: str = "A"
    interval: float | str = 2.0
    fail_rate: float = 0.1
    telemetry_every: int = 5
    seed: int | None = None

    def __post_init__(self) -> None:
        raw = self.interval
        parse_fields(self, parse_duration, "interval")
        if self.interval <= 0:
            raise FieldError("interval", raw, "must be more than 0 seconds")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise FieldError("fail_rate", self.fail_rate, "must be between 0 and 1")
        if self.telemetry_every < 0:
            raise FieldError("telemetry_every", self.telemetry_every, "must be 0 (never) or more")


PLUGIN = Plugin(
    kind="sources", name="simulated", section=SimulatedSourceSection, build="agent.sources.simulated:build",
    source_names=lambda s: ["simulated"],
    doc="a simulated test station: results, counters and telemetry with no hardware",
)
