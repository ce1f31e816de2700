"""The plugin contract: what the core knows of a source or a sink, and nothing more.

Every source and sink declares itself in a light module of its own (``agent/sources/<name>_plugin.py``,
``agent/sinks/<name>_plugin.py``) as ``PLUGIN = Plugin(...)``: its config section (a msgspec Struct that checks its
own values), the package and pip extra it needs, how it is built (a ``"module:function"`` imported only when its
section is configured, so an agent without CFX never imports proton), the rules it has about other sections, and
what ``status`` says of it. ``agent.sources.PLUGINS`` and ``agent.sinks.PLUGINS`` are the name → module tables:
``config`` builds ``[sources]`` and ``[sinks]`` from them, and ``runtime`` and ``cli`` loop over them. No core module
names a plugin; adding one is its modules, one table line and its tests (docs/architecture.md has the walk-through).

Why declarations and not a base class: the core needs a plugin's section and its needs at config time, long before
(and often without ever) importing the code that talks to a serial port or a broker. Modelled on Telegraf, where a
plugin registers itself with its config struct and sample.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

Kind = Literal["sources", "sinks"]


@dataclass(frozen=True)
class Plugin:
    """One source or sink, as the core sees it.

    ``build(section, context)`` returns the running part: a source returns a transport (``BaseTransport``) the bus
    registers; a sink returns a handler the bus delivers to, and if that handler has ``start``/``stop`` it is also
    started before the bus delivers to it and stopped after (a connection to keep), and if it has ``close`` that is
    called when the agent closes. ``check(config)`` raises ``FieldError`` (with the full key path) for a rule that
    spans sections. ``status`` (a ``"module:function"``) gives ``(config, section, read-only connection) -> dict``
    for ``status --json`` and ``status_lines`` (same form) the words ``status`` prints under its subscriber."""

    kind: Kind
    name: str
    section: type
    build: str
    many: bool = False  # [[sources.serial]]: an array of tables, each a source
    needs: tuple[str, str] | None = None  # (module to import, pip extra that installs it)
    check: Callable[[Any], None] | None = None
    source_names: Callable[[Any], list[str]] | None = None  # sources: the names its sections run under
    status: str | None = None
    status_lines: str | None = None
    warns_itself: bool = False  # logs its own unprotected-transport warnings when built
    doc: str = ""

    @property
    def key(self) -> str:
        """``sources.mqtt``: the config key, and the prefix of every error about this plugin."""
        return f"{self.kind}.{self.name}"

    def sections(self, config: Any) -> list[Any]:
        """This plugin's configured and enabled sections in ``config`` (none, one, or for ``many`` several)."""
        value = getattr(getattr(config, self.kind), self.name)
        items = value if self.many else ([] if value is None else [value])
        return [s for s in items if getattr(s, "enabled", True)]

    def builder(self) -> Callable[[Any, BuildContext], Any]:
        return load(self.build)


@dataclass
class BuildContext:
    """What a plugin is built with: the whole config (read-only by convention), the journal, the data directory,
    and ``on_close`` for what must be released when the agent closes (a simulator's pseudo-terminal)."""

    config: Any
    journal: Any
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def station(self) -> str:
        return self.config.agent.station

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    def on_close(self, fn: Callable[[], None]) -> None:
        self.closers.append(fn)


def load(ref: str) -> Any:
    """``"agent.sinks.wats:build"`` → the object (its module imported now)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@cache
def plugins(kind: Kind) -> tuple[Plugin, ...]:
    """The plugins of one kind, in table order (the order of ``[sources]``'s keys in errors and of building)."""
    table = importlib.import_module(f"agent.{kind}").PLUGINS
    out = []
    for name, module in table.items():
        plugin = importlib.import_module(module).PLUGIN
        if (plugin.kind, plugin.name) != (kind, name):
            raise RuntimeError(f"{module} declares {plugin.key}, but agent.{kind}.PLUGINS lists it as {kind}.{name}")
        out.append(plugin)
    return tuple(out)


def all_plugins() -> tuple[Plugin, ...]:
    return plugins("sinks") + plugins("sources")


def configured(config: Any, kind: Kind | None = None) -> list[tuple[Plugin, Any]]:
    """(plugin, section) for every enabled section in ``config``, sinks first (they are built before sources)."""
    kinds: tuple[Kind, ...] = (kind,) if kind else ("sinks", "sources")
    return [(p, s) for k in kinds for p in plugins(k) for s in p.sections(config)]


def keyed_sections(config: Any) -> list[tuple[Plugin, str, Any]]:
    """(plugin, key path, section) for every enabled section, the key as errors name it: ``sinks.wats``,
    ``sources.serial[1]``. What reads a field of any section (a secret file, a listen address) uses this, so it
    need not know which plugins have the field."""
    out = []
    for p in plugins("sinks") + plugins("sources"):
        value = getattr(getattr(config, p.kind), p.name)
        items = list(enumerate(value)) if p.many else ([] if value is None else [(None, value)])
        out.extend((p, p.key if i is None else f"{p.key}[{i}]", s) for i, s in items if getattr(s, "enabled", True))
    return out
