"""The plugin tables: every source and sink declares itself, and the core names none of them (issue 17 item 1)."""

import ast
import re
from pathlib import Path

import pytest

from agent import plugins
from agent.config import ConfigError, parse_config

AGENT = Path(__file__).resolve().parents[2] / "agent"
CORE = ["runtime.py", "config.py", "cli.py", "plugins.py", "preflight.py", *(p.name for p in (AGENT / "events").glob("*.py"))]


def test_every_table_line_is_a_plugin_of_its_kind_with_its_section():
    for kind in ("sources", "sinks"):
        for p in plugins.plugins(kind):
            assert p.kind == kind and p.key == f"{kind}.{p.name}"
            assert plugins.load(p.build).__module__.startswith(f"agent.{kind}.")  # the build imports
            assert p.section.__module__.endswith("_plugin")


def test_the_core_names_no_plugin():
    """No import of a plugin's module, and no plugin's config key as a literal, in the core's modules."""
    names = {p.name for p in plugins.all_plugins()}
    for rel in CORE:
        path = AGENT / rel if (AGENT / rel).exists() else AGENT / "events" / rel
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                assert not (("sources" in parts or "sinks" in parts) and len(parts) > parts.index(
                    "sources" if "sources" in parts else "sinks") + 1), f"{rel} imports {node.module}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not re.fullmatch(r"(sources|sinks)\.(%s)(\..*)?" % "|".join(names), node.value), \
                    f"{rel} names {node.value!r}"


def test_a_new_plugin_is_one_table_line(monkeypatch):
    """A sink added to the table is a [sinks.<name>] section the config takes, with its own errors by key path."""
    import sys
    import types

    import msgspec

    import agent.sinks
    from agent.config_base import FieldError, Section

    class InfluxSection(Section, kw_only=True):
        url: str
        batch: int = 100

        def __post_init__(self):
            if self.batch < 1:
                raise FieldError("batch", self.batch, "must be at least 1")

    mod = types.ModuleType("agent.sinks.influx_plugin")
    mod.PLUGIN = plugins.Plugin(kind="sinks", name="influx", section=InfluxSection, build="agent.sinks.influx:build")
    monkeypatch.setitem(sys.modules, "agent.sinks.influx_plugin", mod)
    monkeypatch.setitem(agent.sinks.PLUGINS, "influx", "agent.sinks.influx_plugin")
    plugins.plugins.cache_clear()
    try:
        from agent import config as config_module

        struct = config_module._plugin_sections("sinks", "SinksSection")
        cfg = msgspec.convert({"influx": {"url": "http://x"}}, struct)
        assert cfg.influx.url == "http://x" and cfg.wats is None
        with pytest.raises(msgspec.ValidationError, match="batch = 0: must be at least 1"):
            msgspec.convert({"influx": {"url": "http://x", "batch": 0}}, struct)
        assert [p.name for p in plugins.plugins("sinks")][-1] == "influx"
    finally:
        plugins.plugins.cache_clear()


def test_a_cross_section_rule_is_the_plugins_and_names_the_full_key():
    with pytest.raises(ConfigError, match=r"agent\.location = \"\": sinks\.wats needs agent\.location"):
        parse_config('[sinks.wats]\nurl = "https://x"\nprocess_codes = {test = 1}\n')
    with pytest.raises(ConfigError, match=r"sources\.serial\[1\]\.name = \"a\" is the name of sources\.serial\[0\]"):
        parse_config("".join(f'[[sources.serial]]\nname = "a"\nport = "/dev/x{i}"\ndriver = "jsonl"\nasset_id = "A"\n'
                             for i in range(2)))


def test_the_wats_routes_are_what_it_sends():
    from agent.sinks.wats import ROUTES, SENT_TYPES, WatsSink

    assert sorted(ROUTES) == sorted(SENT_TYPES) == sorted(WatsSink.DISPATCH)
