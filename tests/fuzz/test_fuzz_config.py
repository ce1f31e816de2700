"""Fuzzing the config parser: any file, and any value in any key, is a Config or a ConfigError that names the
file (and, for a value, the full key path it is about). Never another exception: a RecursionError or an
OverflowError from a config is a traceback at start instead of the operator's one line."""

from __future__ import annotations

import copy
from typing import Any, get_args, get_origin

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import Config, ConfigError, _field_types, _unwrap, parse_config

from .strategies import Tally, fuzz_settings, toml_document, toml_value, toml_values

pytestmark = pytest.mark.fuzz
NAME = "fuzz.toml"

#: The least each section needs to be valid, so a value put into one of its keys is judged by that key.
BASE: dict[str, Any] = {
    "agent": {"station": "s1", "location": "L", "purpose": "P"},
    "sources": {
        "simulated": {},
        "serial": [{"name": "dut", "port": "/dev/ttyUSB0", "driver": "scpi", "asset_id": "A1",
                    "queries": [{"name": "v", "command": "MEAS:VOLT?"}]}],
        "gpio": {"asset_id": "F1"},
        "mqtt": {"subscriptions": [{"topic": "a/+/b", "adapter": "asset"}]},
        "cfx": {"url": "amqp://broker"},
    },
    "sinks": {"wats": {"url": "https://wats.example", "default_process_code": 10},
              "mqtt": {"host": "plant-broker"}, "cfx": {"url": "amqp://broker", "handle": "Vendor.Fixture.SN1"}},
}


def _keys(cls: Any, prefix: str = "") -> list[tuple[str, list[str | int]]]:
    """Every key of the config as (its path as an error says it, the steps into BASE), lists at element 0."""
    out: list[tuple[str, list[str | int]]] = []
    for name, tp in _field_types(cls).items():
        tp = _unwrap(tp)
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            out += [(k, [name, *steps]) for k, steps in _keys(tp, path)]
        elif get_origin(tp) is list and get_args(tp) and isinstance(get_args(tp)[0], type) \
                and issubclass(get_args(tp)[0], msgspec.Struct):
            out.append((path, [name]))
            out += [(k, [name, 0, *steps]) for k, steps in _keys(get_args(tp)[0], f"{path}[0]")]
        else:
            out.append((path, [name]))
    return out


KEYS = _keys(Config)


def _with(steps: list[str | int], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    node: Any = doc
    for step in steps[:-1]:
        if isinstance(step, int):
            while len(node) <= step:
                node.append({})
        else:
            node = node.setdefault(step, {} if not isinstance(steps[steps.index(step) + 1], int) else [])
            continue
        node = node[step]
    node[steps[-1]] = value
    return doc


def test_the_base_document_is_valid():
    assert len(KEYS) > 150
    cfg = parse_config(toml_document(BASE), NAME)
    assert cfg.sources.serial[0].queries[0].name == "v"


_tally_values = Tally("config: any value in any key")


@fuzz_settings()
@given(key=st.sampled_from(KEYS), value=toml_values)
def test_any_value_in_any_key_is_valid_or_an_error_naming_that_key(key, value):
    path, steps = key
    text = toml_document(_with(steps, value))
    try:
        parse_config(text, NAME)
    except ConfigError as e:
        msg = str(e)
        assert msg.startswith(f"{NAME}: "), msg
        assert e.key, msg
        assert e.key in msg and "\n" not in msg, msg
        # the error is about the key given the value, or one beside it in the same section (a pair such as
        # reconnect_min/reconnect_max, or agent.location that sinks.wats needs)
        assert e.key.split(".")[0] == path.split(".")[0] or e.key.startswith("agent."), (path, msg)
        _tally_values.refuse(msg.split(": ", 2)[-1])
    else:
        _tally_values.accept()


_tally_text = Tally("config: any text")


@fuzz_settings()
@given(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    # TOML-shaped text with the config's own table and key names, so the fuzzer gets past the syntax
    st.lists(st.one_of(
        st.sampled_from(["[agent]", "[journal]", "[metrics]", "[sources.simulated]", "[[sources.serial]]",
                         "[sources.gpio]", "[sources.mqtt]", "[[sources.mqtt.subscriptions]]", "[sinks.wats]",
                         "[sinks.mqtt]", "[sinks.cfx]", "[sources.cfx]", "[sinks]", "[[sinks.wats]]"]),
        st.builds(lambda k, v: f"{k.rsplit('.', 1)[-1].split('[')[0]} = {toml_value(v)}",
                  st.sampled_from([k for k, _ in KEYS]), toml_values)), max_size=12).map("\n".join),
))
def test_any_text_is_a_config_or_a_config_error_naming_the_file(raw):
    try:
        parse_config(raw, NAME)
    except ConfigError as e:
        assert str(e).startswith(f"{NAME}: "), str(e)
        assert e.key is None or e.key in str(e)
        _tally_text.refuse(str(e).split(": ", 2)[-1])
    else:
        _tally_text.accept()


def teardown_module():
    """The tallies, once every test of the file ran (printed with -s; appended to $FIXTURE_AGENT_FUZZ_REPORT)."""
    for t in (_tally_values, _tally_text):
        print(t.report())
