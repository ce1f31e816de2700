"""``[sinks.wats]``: the WATS uplink (REST)."""

from __future__ import annotations

import re
from typing import Any, Literal

from ..config_base import FieldError, Section, parse_duration, parse_fields
from ..plugins import Plugin


class WatsProductRule(Section, kw_only=True):
    """``[[sinks.wats.products]]``: results whose recipe (CFX ``RecipeName``, an MQTT or serial ``recipe``), or
    failing that their part number, match ``match`` (a glob, case-sensitive) are filed under this part number,
    revision and process code. Tried in order; the first match wins."""

    match: str
    part_number: str | None = None
    revision: str | None = None
    process_code: int | None = None

    def __post_init__(self) -> None:
        if not self.match.strip():
            raise FieldError("match", self.match, "must be a recipe or part-number pattern (a glob: \"PCB4711*\")")
        if self.part_number is None and self.revision is None and self.process_code is None:
            raise FieldError("match", self.match, "a rule needs part_number, revision or process_code")
        for key in ("part_number", "revision"):
            value = getattr(self, key)
            if value is not None and (not value.strip() or len(value) > 100
                                      or set(value) & set("*%?[]^!/\\")):
                raise FieldError(key, value, "must be 1-100 characters without * % ? [ ] ^ ! / \\")


class WatsSinkSection(Section, kw_only=True):
    """The WATS uplink. The token comes from ``token_file`` (mode 0600), a systemd credential, or ``token_env``."""

    url: str
    enabled: bool = True
    token_file: str | None = None
    token_env: str = "FIXTURE_AGENT_WATS_TOKEN"
    token_credential: str = "wats-token"  # the systemd credential's name, looked up in $CREDENTIALS_DIRECTORY
    verify_tls: bool = True
    timeout: float | str = "30s"
    #: test type ("test", "selftest", "poll", "inspection" …) → WATS test operation code
    process_codes: dict[str, int] = {}
    default_process_code: int | None = None
    default_part_number: str | None = None
    default_revision: str = "1"
    operator: str = "fixture-agent"
    requests_per_minute: int = 500
    require_clock_sync: bool = True
    processes_refresh: float | str = "1h"
    retry_max: float | str = "5m"  # the longest wait between attempts while WATS is away
    #: "absolute": SetRunningCount/SetTotalCount (WATS >= 25.3); "increment": Count?incrementBy from a ledger
    counters_api: str = "absolute"
    #: after an ambiguous failure (timeout, reset) of a non-idempotent request, how long WATS is given to finish
    #: with it before the agent checks whether it landed and, if not, sends it again
    in_doubt_grace: float | str = "60s"
    #: part-number rules, and what a result's recipe counts for when none matches (docs/wats-uplink.md)
    products: list[WatsProductRule] = []
    recipe_as_part_number: bool = False
    #: a part number, serial number or revision with a character WATS refuses (* % ? [ ] ^ ! / \\): "refuse"
    #: (a dead letter naming the field) or "replace" it with identifier_replacement
    identifier_chars: Literal["refuse", "replace"] = "refuse"
    identifier_replacement: str = "_"

    def __post_init__(self) -> None:
        parse_fields(self, parse_duration, "timeout", "processes_refresh", "retry_max", "in_doubt_grace")
        if len(self.identifier_replacement) != 1 or self.identifier_replacement in "*%?[]^!/\\":
            raise FieldError("identifier_replacement", self.identifier_replacement,
                             "must be one character WATS accepts (\"_\" or \"-\")")
        if not re.fullmatch(r"https?://[^/\s?#@]+(/\S*)?", self.url):
            raise FieldError("url", self.url, "must be https://host[/path] (or http:// for a test server)")
        if self.timeout <= 0:
            raise FieldError("timeout", self.timeout, "must be more than 0 seconds")
        if self.requests_per_minute <= 0:
            raise FieldError("requests_per_minute", self.requests_per_minute, "must be more than 0")
        if self.counters_api not in ("absolute", "increment"):
            raise FieldError("counters_api", self.counters_api, "must be \"absolute\" (WATS >= 25.3) or "
                             "\"increment\" (older servers)")


def _station_fits_wats(config: Any) -> None:
    """WSJF requires these on every report: a missing one is the station's config, not a bad event, so it stops the
    agent at start instead of dead-lettering every result. What goes into every report must fit WSJF
    (reference/wats-api.md §2.3): caught here, once, rather than as a dead letter per result."""
    w, agent = config.sinks.wats, config.agent
    if w is None or not w.enabled:
        return
    missing = [k for k in ("location", "purpose") if not getattr(agent, k)]
    if missing:
        raise FieldError(f"agent.{missing[0]}", getattr(agent, missing[0]),
                         f"sinks.wats needs agent.{' and agent.'.join(missing)} (every WATS report carries them)")
    if not w.process_codes and w.default_process_code is None:
        raise FieldError("sinks.wats.process_codes", w.process_codes, "sinks.wats needs process_codes (test "
                         "type → WATS test operation code) or default_process_code")
    for key, value, ident in (("agent.station", agent.station, False),
                              ("agent.location", agent.location, False),
                              ("agent.purpose", agent.purpose, False),
                              ("sinks.wats.operator", w.operator, False),
                              ("sinks.wats.default_part_number", w.default_part_number, True),
                              ("sinks.wats.default_revision", w.default_revision, True)):
        if value is None:
            continue
        if not value.strip() or len(value) > 100:
            raise FieldError(key, value, "must be 1-100 characters (WATS' limit for what every report carries)")
        if ident and set(value) & set("*%?[]^!/\\"):
            raise FieldError(key, value, "must not contain * % ? [ ] ^ ! / \\ (WATS refuses them in part "
                             "numbers and revisions)")


PLUGIN = Plugin(
    kind="sinks", name="wats", section=WatsSinkSection, build="agent.sinks.wats:build", needs=("httpx", "wats"),
    check=_station_fits_wats, status="agent.sinks.wats:status", status_lines="agent.sinks.wats:status_lines",
    warns_itself=True, doc="test results, counters and asset state to WATS (REST)",
)
