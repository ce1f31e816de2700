"""Reload without restart (SIGHUP, ``systemctl reload fixture-agent``): the config file read again, and only the
sources and sinks whose section changed stopped and started again.

Why a part and not the whole agent: a restart drops every broker connection, every serial port and the WATS
session to change one rate limit, and a fixture's MQTT devices see the agent go offline (its last will) for it.
What keeps a reload safe is the journal: a sink is a durable subscriber whose cursor is in the journal, so the
rebuilt sink resumes exactly after the last event the old one had confirmed (the old one's delivery thread is
waited for and its cursor flushed before the new one reads it: nothing skipped, nothing sent twice), and a source
acknowledges its input only once it is journaled, so one stopped mid-message leaves that message with its sender.

What is refused, with one log line naming the key, while the running config is kept: a file that does not
validate, one that ``preflight`` would refuse at start (a secret readable by others, a package not installed), and
a change to ``[agent]``, ``[journal]`` or ``[metrics]`` (the station every report carries, the open journal, the
bound listener: those need a restart). "Changed" is the section as msgspec reads it, compared with the running one:
for a plugin of ``many`` sections (``[[sources.serial]]``) per entry, keyed by its name, so reordering the entries
restarts nothing. A file a section names (a token, a certificate) is not part of the section: the WATS sink reads
its token again on a 401 by itself; a new certificate needs a restart.

What happened is kept in the journal's state table (``agent:config``): when the running config was loaded, and the
last reload's outcome and reason, which ``status`` shows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import plugins, preflight
from .config import Config, ConfigError, load_config, parse_config

if TYPE_CHECKING:
    from .runtime import Agent

log = logging.getLogger("agent")

#: the journal state key ``status`` reads
STATE_KEY = "agent:config"
#: sections a running agent cannot change (why: see the module docstring)
FIXED_SECTIONS = ("agent", "journal", "metrics")
#: how long a reload waits for a replaced sink's delivery thread to finish the event it is sending
STOP_PATIENCE = 120.0


@dataclass
class Part:
    """One running source or sink: what was built from which section, and what its build asked to have closed."""

    plugin: plugins.Plugin
    ident: str  # "sinks.wats", "sources.serial[name=fx1]": stable across reloads, unlike a list index
    section: Any
    instance: Any = None
    context: plugins.BuildContext | None = None

    @property
    def is_sink(self) -> bool:
        return self.plugin.kind == "sinks"

    @property
    def lifecycle(self) -> bool:
        """A sink with a connection of its own to open and close (``start``/``stop``)."""
        return self.is_sink and hasattr(self.instance, "start") and hasattr(self.instance, "stop")


@dataclass
class Outcome:
    """What a reload did: ``applied`` (with the parts it restarted), ``unchanged`` or ``refused`` (and why)."""

    result: str
    reason: str = ""
    key: str | None = None
    restarted: list[str] = field(default_factory=list)


class StuckSink(RuntimeError):
    """A replaced sink's delivery thread that does not end: neither its successor nor itself may be started again
    (the event it holds would be sent twice), so the agent stops and the service manager starts it afresh."""


class PartFailed(Exception):
    """A part of the new config that could not be built or started (``ident`` names it)."""

    def __init__(self, ident: str, error: BaseException) -> None:
        super().__init__(f"could not start {ident}: {type(error).__name__}: {error}")
        self.ident = ident


class ReloadRefused(Exception):
    def __init__(self, reason: str, key: str | None) -> None:
        super().__init__(reason)
        self.key = key


# ------------------------------------------------------------------------------------------------ what is configured
def identified(config: Config) -> list[tuple[plugins.Plugin, str, Any]]:
    """(plugin, identity, section) for every enabled section, sinks first (built and started in that order)."""
    out = []
    for plugin, section in plugins.configured(config):
        if plugin.many:
            name = getattr(section, "name", None)
            if name is None:  # a many plugin without names: its place in the list is all there is
                name = str(plugin.sections(config).index(section))
            out.append((plugin, f"{plugin.key}[name={name}]", section))
        else:
            out.append((plugin, plugin.key, section))
    return out


def fixed_change(old: Config, new: Config) -> str | None:
    """The first key of ``[agent]``, ``[journal]`` or ``[metrics]`` whose value differs (``journal.max_bytes``)."""
    for name in FIXED_SECTIONS:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        for f in a.__struct_fields__:
            if getattr(a, f) != getattr(b, f):
                return f"{name}.{f}"
        return name
    return None


# ------------------------------------------------------------------------------------------------ building parts
def build(agent: "Agent", config: Config, plugin: plugins.Plugin, ident: str, section: Any) -> Part:
    """Build one part (not yet attached to the bus), with a context of its own so what its build opened (a
    simulator's pseudo-terminal) is closed with it and not only with the agent."""
    from .runtime import _require

    if plugin.needs:
        _require(plugin.needs[0], plugin.key, plugin.needs[1])
    part = Part(plugin, ident, section, context=plugins.BuildContext(config=config, journal=agent.journal))
    part.instance = plugin.builder()(section, part.context)
    if part.is_sink and hasattr(part.instance, "close"):
        part.context.on_close(part.instance.close)
    return part


def attach(agent: "Agent", part: Part, *, live: bool) -> None:
    """Hand a built part to the bus. ``live``: the agent is running, so a sink's connection is opened here, before
    the bus delivers to it (at start the lifecycle opens it, in the same order)."""
    if not part.is_sink:
        agent.bus.register_transport(part.instance)  # started now if the bus runs
        return
    name = f"sink:{part.plugin.name}"
    if part.lifecycle and live:
        part.instance.start()
        agent.lifecycle.add_running(part.instance, priority=9, name=name)
    elif part.lifecycle:
        agent.lifecycle.add_component(part.instance, priority=9, name=name)
    agent.bus.register_handler(part.instance)


def detach(agent: "Agent", part: Part) -> None:
    """Stop one part while the rest runs; a sink's cursor is in the journal when this returns."""
    if not part.is_sink:
        agent.bus.unregister_transport(part.instance)
    else:
        name = part.instance.name
        sub = agent.bus.subscription(name)
        agent.bus.unregister_handler(name, timeout=5.0)
        started, said = time.monotonic(), 0.0
        while sub is not None and not sub.join(1.0):
            # a sink still sending: the new one must not start before it is done, or the event is sent twice
            waited = time.monotonic() - started
            if waited >= STOP_PATIENCE:
                raise StuckSink(f"{part.ident}: the delivery thread of subscriber {name} did not stop within "
                                   f"{STOP_PATIENCE:.0f} s")
            if waited - said >= 10.0:
                said = waited
                log.info("reload: waiting for subscriber %s to finish the event it is sending", name)
            agent.notify.send("WATCHDOG=1")  # the main loop is here, and alive
        agent.journal.flush()  # the old cursor committed before the new subscription reads it
        if part.lifecycle:
            agent.lifecycle.remove_component(part.instance)
            part.instance.stop()
    close(part)


def close(part: Part) -> None:
    if part.context is None:
        return
    for fn in reversed(part.context.closers):
        try:
            fn()
        except Exception:  # noqa: BLE001 - close the rest
            log.exception("closing %s: %r failed", part.ident, fn)
    part.context.closers.clear()


# ------------------------------------------------------------------------------------------------ the reload
def read(path: str) -> tuple[Config, str]:
    """The config at ``path`` and the sha256 of the bytes it was parsed from (``status`` compares the file's)."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        load_config(path)  # raises the ConfigError that names the file and what is wrong with it
        raise
    return parse_config(raw, path), hashlib.sha256(raw).hexdigest()


def reload(agent: "Agent") -> Outcome:
    """Read the config file again and apply what changed. Never raises for a config: a refusal is an Outcome."""
    path = agent.config.source_path
    try:
        new, digest = read(path)
        found = preflight.problems(new)
        if found:
            raise ReloadRefused(str(found[0]), found[0].key)
        key = fixed_change(agent.config, new)
        if key:
            raise ReloadRefused(f"{path}: {key} changed, and [{key.split('.')[0]}] cannot change while the agent "
                                "runs: restart it to apply (systemctl restart fixture-agent)", key)
    except ConfigError as e:
        return _refused(agent, str(e), e.key)
    except ReloadRefused as e:
        return _refused(agent, str(e), e.key)

    old = {p.ident: p for p in agent.parts}
    wanted = identified(new)
    keep = {i for _, i, s in wanted if i in old and old[i].section == s}
    stops = [p for p in agent.parts if p.ident not in keep]
    starts = [(pl, i, s) for pl, i, s in wanted if i not in keep]
    if not stops and not starts:
        agent.config = new
        _record(agent, Outcome("unchanged", "no source or sink section changed"), digest)
        log.info("reload: %s: no source or sink section changed", path)
        return Outcome("unchanged")

    restarted = sorted({p.ident for p in stops} | {i for _, i, _ in starts})
    log.info("reload: %s: restarting %s; everything else keeps running", path, ", ".join(restarted))
    try:
        started = _swap(agent, new, stops, starts)
    except StuckSink as e:
        log.critical("reload: %s; stopping so the service manager starts the agent again (with the new config)", e)
        agent.thread_died = f"reload: {e}"
        agent.request_stop()
        return _refused(agent, str(e), None, log_it=False)
    except PartFailed as e:  # a part that would not start: the old ones again
        reason = f"{path}: {e}"
        log.error("reload refused: %s; starting the running config's parts again", reason)
        try:
            _swap(agent, agent.config, [], [(p.plugin, p.ident, p.section) for p in stops])
        except Exception:  # noqa: BLE001 - then the service manager starts the agent afresh
            log.critical("reload: the previous parts could not be started again either; stopping so the service "
                         "manager starts the agent again", exc_info=True)
            agent.thread_died = "reload: could not start the previous sources and sinks again"
            agent.request_stop()
        return _refused(agent, reason, e.ident, log_it=False)
    agent.config = new
    _log_new_warnings(agent, new, {i for _, i, _ in starts})
    agent.warn_unconfigured_subscribers()
    outcome = Outcome("applied", restarted=restarted)
    _record(agent, outcome, digest)
    log.info("reload applied: %d part(s) restarted (%s)", len(started), ", ".join(restarted))
    return outcome


def _swap(agent: "Agent", config: Config, stops: list[Part], starts: list[tuple[plugins.Plugin, str, Any]]
          ) -> list[Part]:
    """Stop ``stops`` (sources first), then build and start ``starts`` (sinks first). On a failure the parts it
    started are stopped again and the error (with ``ident``) raised; ``agent.parts`` is kept current throughout."""
    for part in sorted(stops, key=lambda p: p.is_sink):
        try:
            detach(agent, part)
        except StuckSink:
            raise
        except Exception:  # noqa: BLE001 - it is stopped as far as it goes; keep going
            log.exception("reload: stopping %s failed", part.ident)
        agent.parts = [p for p in agent.parts if p is not part]
    started: list[Part] = []
    for plugin, ident, section in sorted(starts, key=lambda s: s[0].kind != "sinks"):
        try:
            part = build(agent, config, plugin, ident, section)
            try:
                attach(agent, part, live=True)
            except BaseException:
                _undo(agent, part)  # as far as it was attached
                raise
        except Exception as e:
            for p in reversed(started):
                _undo(agent, p)
                agent.parts = [q for q in agent.parts if q is not p]
            raise PartFailed(ident, e) from e
        started.append(part)
        agent.parts = [*agent.parts, part]
    return started


def _undo(agent: "Agent", part: Part) -> None:
    try:
        detach(agent, part)
    except Exception:  # noqa: BLE001 - a part that failed to start may fail to stop too
        log.debug("reload: stopping %s again failed", part.ident, exc_info=True)
        close(part)


def _refused(agent: "Agent", reason: str, key: str | None, *, log_it: bool = True) -> Outcome:
    if log_it:
        log.error("reload refused: %s; the running config is kept", reason.replace("\n", " "))
    outcome = Outcome("refused", reason, key)
    _record(agent, outcome, None)
    return outcome


def _log_new_warnings(agent: "Agent", config: Config, idents: set[str]) -> None:
    """Unprotected transports of the parts just started, said as at start (a plugin that says its own is left to it)."""
    from .transport_warnings import insecure_transports, log_warnings

    agent.security_warnings = insecure_transports(config)
    own = tuple(p.key for p in plugins.all_plugins() if p.warns_itself)
    keys = {i.split("[")[0] for i in idents}
    log_warnings([w for w in agent.security_warnings if w.startswith(tuple(keys)) and not w.startswith(own)], log)


# ------------------------------------------------------------------------------------------------ what status shows
def record_start(agent: "Agent") -> None:
    """At start: when the running config was loaded (the file's digest as it is now)."""
    try:
        digest = hashlib.sha256(Path(agent.config.source_path).read_bytes()).hexdigest()
    except OSError:
        digest = None
    doc = {"path": agent.config.source_path, "loaded_at": time.time(), "sha256": digest, "reloads": 0,
           "last_reload": None, "pid": os.getpid()}
    _put(agent, doc)


def _record(agent: "Agent", outcome: Outcome, digest: str | None) -> None:
    doc = dict(agent.journal.get_state(STATE_KEY) or {})
    now = time.time()
    doc["reloads"] = int(doc.get("reloads") or 0) + 1
    doc["last_reload"] = {"at": now, "result": outcome.result, "reason": outcome.reason, "key": outcome.key,
                          "restarted": outcome.restarted}
    if outcome.result != "refused":
        doc.update(path=agent.config.source_path, loaded_at=now, sha256=digest)
    _put(agent, doc)


def _put(agent: "Agent", doc: dict[str, Any]) -> None:
    try:
        agent.journal.set_state(STATE_KEY, doc)
    except Exception:  # noqa: BLE001 - what status shows must not take the agent down (a full disk)
        log.warning("could not record the config's load in the journal", exc_info=True)


def status_doc(conn: Any, config: Config, agent_pid: int | None) -> dict[str, Any] | None:
    """What ``status --json`` says under ``config``: the running agent's record, and whether the file it loaded
    (which need not be the one ``status -c`` was given) is still as it was. None when no agent has recorded one, or
    the record is an earlier agent's."""
    import json

    try:
        row = conn.execute("SELECT value FROM state WHERE key = ?", (STATE_KEY,)).fetchone()
    except Exception:  # noqa: BLE001 - a journal from before this table had the key
        return None
    if row is None:
        return None
    doc = json.loads(row[0])
    if agent_pid is None or doc.get("pid") != agent_pid:
        return None
    try:
        on_disk = hashlib.sha256(Path(doc.get("path") or config.source_path).read_bytes()).hexdigest()
    except OSError:
        on_disk = None
    doc["file_changed"] = bool(doc.get("sha256") and on_disk and on_disk != doc["sha256"])
    return doc


def status_lines(doc: dict[str, Any], age: Any) -> list[str]:
    """``status``'s lines for ``status_doc`` (``age``: seconds → "5m"). A line starting "!!" needs someone to act."""
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["loaded_at"]))
    lines = [f"config       {doc.get('path')}, loaded {at} ({age(time.time() - doc['loaded_at'])} ago)"
             + (f" ({doc['reloads']} reload(s) since start)" if doc.get("reloads") else "")]
    last = doc.get("last_reload")
    if last:
        when = age(time.time() - last["at"])
        if last["result"] == "refused":
            lines.append(f"  !! last reload {when} ago REFUSED, the config loaded before still runs: {last['reason']}")
        elif last["result"] == "applied":
            lines.append(f"             last reload {when} ago restarted {', '.join(last['restarted'])}")
        else:
            lines.append(f"             last reload {when} ago: nothing changed")
    if doc.get("file_changed"):
        lines.append("  !! the config file changed since it was loaded: systemctl reload fixture-agent (or kill -HUP "
                     "the agent) to apply it")
    return lines


__all__ = ["Outcome", "Part", "STATE_KEY", "attach", "build", "detach", "fixed_change", "identified", "reload",
           "record_start", "status_doc", "status_lines"]
