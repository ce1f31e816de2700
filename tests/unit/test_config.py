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


#: Wrong values over every section, as a new user writes them: (TOML, the full key path the error must name, the
#: offending value as it must be quoted, a word of what is allowed). The first 28 are issue 16's.
BASE = '[agent]\nstation = "s1"\nlocation = "L"\npurpose = "P"\n'
SERIAL = '[[sources.serial]]\nname = "dut"\nport = "/dev/ttyUSB0"\ndriver = "jsonl"\nasset_id = "A1"\n'
MQTT_SUB = '[sources.mqtt]\nhost = "127.0.0.1"\n[[sources.mqtt.subscriptions]]\ntopic = "a/+/b"\nadapter = "asset"\n'
WATS = '[sinks.wats]\nurl = "https://wats.example"\ndefault_process_code = 10\n'
CFX_SRC = '[sources.cfx]\nurl = "amqp://broker"\n'
CFX_SNK = '[sinks.cfx]\nurl = "amqp://broker"\nhandle = "Vendor.Fixture.SN1"\n'
WRONG_VALUES = [
    ("[agent]\nlog_level = \"verbose\"\n", "agent.log_level", "verbose", "info"),
    ("[agent]\nstation = 5\n", "agent.station", "5", "string"),
    ("[journal]\nmax_bytes = -5\n", "journal.max_bytes", "-5", "negative"),
    ("[journal]\nmax_bytes = \"-5MB\"\n", "journal.max_bytes", "-5MB", "64MB"),
    ("[journal]\nmax_bytes = \"1KB\"\n", "journal.max_bytes", "1KB", "at least 64KB"),
    ("[journal]\nmax_age = \"forever\"\n", "journal.max_age", "forever", "30d"),
    ("[journal]\nsync = \"sometimes\"\n", "journal.sync", "sometimes", "normal"),
    ("[journal]\nmax_byte = \"1MB\"\n", "journal.max_byte", "1MB", "max_bytes"),
    ("[metrics]\nlisten = \"127.0.0.1:99999\"\n", "metrics.listen", "127.0.0.1:99999", "65535"),
    ("[metrics]\nenabled = \"yes\"\n", "metrics.enabled", "yes", "true or false"),
    ("[sources.simulated]\nfail_rate = 2\n", "sources.simulated.fail_rate", "2", "between 0 and 1"),
    ("[sources.simulated]\ninterval = \"0s\"\n", "sources.simulated.interval", "0s", "more than 0"),
    (SERIAL + "baud = 0\n", "sources.serial[0].baud", "0", "115200"),
    (SERIAL + "baud = \"fast\"\n", "sources.serial[0].baud", "fast", "integer"),
    (SERIAL.replace('"dut"', '"my port"'), "sources.serial[0].name", "my port", "letters"),
    (SERIAL + "max_line_bytes = 10\n", "sources.serial[0].max_line_bytes", "10", "between 64"),
    (SERIAL.replace('"jsonl"', '"modbus"'), "sources.serial[0].driver", "modbus", "scpi"),
    (SERIAL + "reconnect_min = \"soon\"\n", "sources.serial[0].reconnect_min", "soon", "500ms"),
    (SERIAL + SERIAL.replace('"/dev/ttyUSB0"', '"/dev/ttyUSB1"'), "sources.serial[1].name", "dut", "own"),
    ('[sources.gpio]\nasset_id = "F1"\ncounter_bounce = "short"\n', "sources.gpio.counter_bounce", "short", "500ms"),
    ('[sources.gpio]\nasset_id = "F1"\ncounter_pin = 17\nlid_pin = 17\n', "sources.gpio.lid_pin", "17", "counter_pin"),
    ("[sources.mqtt]\nport = 70000\n", "sources.mqtt.port", "70000", "65535"),
    ("[sources.mqtt]\nkeepalive = \"1s\"\n", "sources.mqtt.keepalive", "1", "between 5s and 1h"),
    ("[sources.mqtt]\nprotocol = \"4\"\n", "sources.mqtt.protocol", "4", "3.1.1"),
    ("[sources.mqtt]\nclient_id = \"has space\"\n", "sources.mqtt.client_id", "has space", "letters"),
    ("[sources.mqtt]\nmax_payload_bytes = \"1GB\"\n", "sources.mqtt.max_payload_bytes", "1GB", "16MiB"),
    (MQTT_SUB.replace('"a/+/b"', '"a/#/b"'), "sources.mqtt.subscriptions[0].topic", "a/#/b", "only last"),
    (MQTT_SUB.replace('"asset"', '"nope"'), "sources.mqtt.subscriptions[0].adapter", "nope", "test_result"),
    (WATS.replace("https://", "ftp://"), "sinks.wats.url", "ftp://wats.example", "https://"),
    (WATS + "timeout = \"30 seconds\"\n", "sinks.wats.timeout", "30 seconds", "500ms"),
    (WATS + "requests_per_minute = 0\n", "sinks.wats.requests_per_minute", "0", "more than 0"),
    (WATS + "counters_api = \"relative\"\n", "sinks.wats.counters_api", "relative", "increment"),
    (WATS + "process_codes = { test = \"ten\" }\n", "sinks.wats.process_codes.test", "ten", "integer"),
    ("[sinks.mqtt]\ntopic_prefix = \"a/+/b\"\n", "sinks.mqtt.topic_prefix", "a/+/b", "wildcards"),
    ("[sinks.mqtt]\nwindow = 0\n", "sinks.mqtt.window", "0", "between 1 and 10000"),
    (CFX_SRC.replace("amqp://", "http://"), "sources.cfx.url", "http://broker", "amqp://"),
    (CFX_SRC + "handle = \"My Handle\"\n", "sources.cfx.handle", "My Handle", "Vendor.Model.Serial"),
    (CFX_SRC + "credit = 0\n", "sources.cfx.credit", "0", "between 1 and 10000"),
    (CFX_SNK.replace("Vendor.Fixture.SN1", "Vendor Fixture"), "sinks.cfx.handle", "Vendor Fixture", "Vendor.Model.Serial"),
    (CFX_SNK + "heartbeat_interval = \"10m\"\n", "sinks.cfx.heartbeat_interval", "10m", "5m"),
    (CFX_SNK + "listen = \"0.0.0.0:99999\"\n", "sinks.cfx.listen", "0.0.0.0:99999", "65535"),
    ("[sink.wats]\nurl = \"https://w\"\n", "sink", "https://w", "sinks"),
]


@pytest.mark.parametrize("text,key,value,allowed", WRONG_VALUES, ids=[c[1] for c in WRONG_VALUES])
def test_every_error_names_the_file_the_full_key_the_value_and_what_is_allowed(text, key, value, allowed):
    with pytest.raises(ConfigError) as err:
        parse_config(text if text.startswith("[agent]") else BASE + text, "site.toml")
    msg = str(err.value)
    assert msg.startswith("site.toml: "), msg
    assert key in msg and err.value.key == key, msg
    assert value in msg, msg
    assert allowed in msg, msg
    assert "\n" not in msg and "Traceback" not in msg


@pytest.mark.parametrize("text,expected", [
    ('[agent\nstation = 1', "site.toml: not valid TOML"),
    ('[sinks.wats]\ntoken_file = "/x"\n', "site.toml: sinks.wats.url: required in [sinks.wats]"),
    ('[sinks.wats]\nurl = "https://w"\nprocess_codes = { test = 1 }\n',
     "site.toml: agent.location = \"\": sinks.wats needs agent.location and agent.purpose"),
    ('[agent]\nlocation = "L"\npurpose = "P"\n[sinks.wats]\nurl = "https://w"\n',
     "site.toml: sinks.wats.process_codes = {}: sinks.wats needs process_codes"),
    ('source_path = "x"\n', "site.toml: source_path: not a config key"),
    ("x = " + "[" * 5000 + "]" * 5000, "site.toml: not valid TOML: nested too deep"),
    (b"[agent]\nstation = \"\xff\"\n", "site.toml: not valid TOML: not UTF-8 at byte 19"),
    ("[sources.simulated]\nfail_rate = nan\n", "site.toml: sources.simulated.fail_rate = nan must be a finite number"),
    ("[journal]\nmax_bytes = \"" + "9" * 400 + "TB\"\n", "is too large"),
    ("[journal]\nmax_age = \"" + "9" * 400 + "d\"\n", "is too long"),
])
def test_whole_file_and_cross_key_errors(text, expected):
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
