from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, parse_config, parse_duration, parse_size

ROOT = Path(__file__).resolve().parents[2]


def test_demo_and_example_configs_are_valid():
    for name in ("demo.toml", "example.toml"):
        cfg = load_config(ROOT / "config" / name)
        assert cfg.agent.station


def test_sizes_and_durations():
    assert parse_size("64MB") == 64_000_000 and parse_size("1GiB") == 2**30 and parse_size(4096) == 4096
    assert parse_duration("500ms") == 0.5 and parse_duration("7d") == 604800 and parse_duration(2) == 2.0
    for bad in ("lots", "-1MB", "1XB"):
        with pytest.raises(ValueError):
            parse_size(bad)


@pytest.mark.parametrize("text,expected", [
    ('[journal]\nmax_bytes = "huge"\n', "site.toml: journal: 'huge' is not a size"),
    ('[journal]\nsync = "sometimes"\n', "site.toml: journal.sync: Invalid enum value 'sometimes'"),
    ('[journal]\nmax_byte = "1MB"\n', "site.toml: journal: Object contains unknown field `max_byte`"),
    ('[metrics]\nlisten = "localhost"\n', "site.toml: metrics: 'localhost' is not host:port"),
    ('[sources.simulated]\nfail_rate = 2\n', "site.toml: sources.simulated: fail_rate must be between 0 and 1"),
    ('[sinks.wats]\ntoken_file = "/x"\n', "site.toml: sinks.wats: Object missing required field `url`"),
    ('[agent\nstation = 1', "site.toml: not valid TOML"),
    ('[sinks.wats]\nurl = "https://w"\nprocess_codes = { test = 1 }\n', "sinks.wats needs agent.location and agent.purpose"),
    ('[agent]\nlocation = "L"\npurpose = "P"\n[sinks.wats]\nurl = "https://w"\n', "sinks.wats needs process_codes"),
    ('[agent]\nlocation = "L"\npurpose = "P"\n[sinks.wats]\nurl = "ftp://w"\ndefault_process_code = 1\n', "must start with https://"),
])
def test_errors_name_the_file_and_the_key(text, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "site.toml")
    assert expected in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_defaults_bind_metrics_to_loopback_and_keep_journal_in_data_dir():
    cfg = parse_config('[agent]\ndata_dir = "/srv/fa"\n')
    assert cfg.metrics.listen.startswith("127.0.0.1:")
    assert str(cfg.journal_path) == "/srv/fa/journal.db"
    assert cfg.journal.sync == "full" and cfg.enabled_sinks() == []
