"""[sinks.wats] values that every report carries are checked at start against WSJF's limits (issue 15 item 5),
and part-number rules name their key when wrong."""

import pytest

from agent.config import ConfigError, parse_config

BASE = '[agent]\nlocation = "L"\npurpose = "P"\n[sinks.wats]\nurl = "https://w"\ndefault_process_code = 1\n'


@pytest.mark.parametrize("extra,key", [
    ('operator = "' + "x" * 101 + '"', "sinks.wats.operator"),
    ('default_part_number = "A/B"', "sinks.wats.default_part_number"),
    ('default_revision = "r*1"', "sinks.wats.default_revision"),
    ('[[sinks.wats.products]]\nmatch = "PCB*"\npart_number = "X?1"', "sinks.wats.products[0].part_number"),
    ('[[sinks.wats.products]]\nmatch = "PCB*"', "sinks.wats.products[0].match"),
    ('identifier_replacement = "/"', "sinks.wats.identifier_replacement"),
    ('identifier_chars = "drop"', "sinks.wats.identifier_chars"),
])
def test_values_every_report_carries_must_fit_wsjf(extra, key):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + extra + "\n", "site.toml")
    assert f"site.toml: {key}" in str(err.value)


def test_a_long_location_is_refused_at_start():
    with pytest.raises(ConfigError, match="agent.location"):
        parse_config(BASE.replace('location = "L"', 'location = "' + "L" * 101 + '"'), "site.toml")


def test_rules_are_read_in_order():
    cfg = parse_config(BASE + '[[sinks.wats.products]]\nmatch = "A*"\npart_number = "PA"\n'
                       '[[sinks.wats.products]]\nmatch = "*"\nprocess_code = 7\n', "site.toml")
    assert [(r.match, r.part_number, r.process_code) for r in cfg.sinks.wats.products] == [("A*", "PA", None),
                                                                                            ("*", None, 7)]
