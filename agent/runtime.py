"""The agent as a process: config → journal → bus → sinks → sources, started in that order and stopped in reverse.

Read this file top-down to see how the agent is put together; each part lives in its own module.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from . import __version__, plugins, preflight, reload
from .config import Config, ConfigError, parse_listen, show_value
from .events.bus import EventBus
from .events.chain import EnrichmentMiddleware, HandlerChain, ValidationMiddleware
from .events.journal import Journal, read_stats
from .events.lifecycle import LifecycleManager
from .events.telemetry import EventMetrics, render_prometheus
from .events.transports import BaseTransport

log = logging.getLogger("agent")



#: exit status after an internal failure (sysexits.h): systemd's Restart=always starts the agent again
EX_SOFTWARE = preflight.EX_SOFTWARE


class AgentAlreadyRunning(preflight.StartupError):
    """Another agent holds the data directory's lock (EX_TEMPFAIL: it may be stopping)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, preflight.EX_TEMPFAIL, "agent.data_dir")


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()  # SIGHUP: set by the handler, done by the main loop (run)
        self._wake = threading.Event()  # the main loop's: a stop or a reload asked for
        self.metrics = EventMetrics()
        self.lifecycle = LifecycleManager()
        self._lock_fd: int | None = None
        self.health_server: Any = None
        self.parts: list[reload.Part] = []  # every running source and sink (replaced, never mutated: a reload)
        self.thread_died: str | None = None
        self.security_warnings: list[str] = []
        self.notify = SystemdNotifier()  # READY, WATCHDOG, and a salvage's start-timeout extensions

    # ------------------------------------------------------------------------------------------------ build
    def build(self) -> None:
        cfg = self.config
        preflight.check(cfg)  # what `config check` checks, in the same words
        preflight.make_directories(cfg)
        self._take_lock()
        notify = self.notify
        self.journal = self._open_journal(notify)
        if self.journal.corrupt_file:
            self.metrics.record_bad_input("journal-corrupt")
        station = {"station": cfg.agent.station, "location": cfg.agent.location, "purpose": cfg.agent.purpose}
        chain = HandlerChain([ValidationMiddleware(), EnrichmentMiddleware({k: v for k, v in station.items() if v})])
        self.bus = EventBus(self.journal, name=f"bus:{cfg.agent.station}", chain=chain, metrics=self.metrics)
        self.lifecycle.add_event_bus(self.bus, priority=10)

        # every configured sink, then every source, as the plugin tables declare them (agent.plugins). A sink with
        # start/stop is connected before the bus delivers to it and disconnected after the bus stopped; a reload
        # (agent/reload.py) stops and starts these parts one by one
        for plugin, ident, section in reload.identified(cfg):
            part = reload.build(self, cfg, plugin, ident, section)
            self.parts = [*self.parts, part]
            reload.attach(self, part, live=False)
        self.warn_unconfigured_subscribers()
        self._security_warnings(cfg)

        if cfg.metrics.enabled:
            from .activity import Activity
            from .health import HealthServer

            # the status page's memory (a ring of samples, the last results); the page itself is imported per request
            self.activity = Activity(self.metrics, self.journal.stats)
            self.bus.on_event(self.activity.on_event)
            self.lifecycle.add_component(self.activity, priority=11)
            host, port = parse_listen(cfg.metrics.listen)
            try:
                self.health_server = HealthServer(host, port, self.metrics_text, self.health, page=self.status_page)
            except OSError as e:  # the port in use: only start-up can know
                raise preflight.listen_error(cfg, "metrics.listen", cfg.metrics.listen, e) from None
            self.lifecycle.add_component(self.health_server, priority=5)

    @property
    def sources(self) -> list[BaseTransport]:
        return [p.instance for p in self.parts if not p.is_sink]

    @property
    def sinks(self) -> dict[str, Any]:
        """plugin name → the running sink"""
        return {p.plugin.name: p.instance for p in self.parts if p.is_sink}

    def _security_warnings(self, cfg: Config) -> None:
        """Sent unprotected (issue 23 item 9): said once at start; a plugin that says its own when built is left
        to it."""
        from .transport_warnings import insecure_transports, log_warnings

        self.security_warnings = insecure_transports(cfg)
        own = tuple(p.key for p in plugins.all_plugins() if p.warns_itself)
        log_warnings([w for w in self.security_warnings if not w.startswith(own)], log)

    def _open_journal(self, notify: "SystemdNotifier") -> Journal:
        """The journal, or the one-line ``StartupError`` naming its key (``preflight.open_journal``)."""
        cfg = self.config
        # a corrupt journal is salvaged before READY: keep systemd's start timeout from killing that
        return preflight.open_journal(
            cfg, progress=lambda what: notify.send(f"EXTEND_TIMEOUT_USEC=60000000\nSTATUS={what}"))

    def _take_lock(self) -> None:
        """One agent per journal: a second one would deliver everything twice."""
        path = self.config.data_dir / "agent.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise preflight.StartupError(
                f"{self.config.source_path}: agent.data_dir = {show_value(self.config.agent.data_dir, limit=4096)}: cannot "
                f"create {path}: {e.strerror}", preflight.EX_NOPERM if e.errno == errno.EACCES
                else preflight.EX_CANTCREAT, "agent.data_dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AgentAlreadyRunning(
                f"another agent (pid {other or '?'}) is running on {self.config.data_dir}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def warn_unconfigured_subscribers(self) -> None:
        configured = set(self.config.enabled_sinks()) | {s.name for s in self.bus.subscriptions() if s.durable}
        for sub in self.journal.stats().subscribers:
            if sub["name"] not in configured and sub["backlog"]:
                log.warning("subscriber %s is in the journal but not configured; it holds %d events. "
                            "Remove it with: fixture-agent subscribers drop %s", sub["name"], sub["backlog"], sub["name"])

    # ------------------------------------------------------------------------------------------------ health
    def metrics_text(self) -> str:
        from .events.ids import clock_synchronized

        stats = self.journal.stats()
        return render_prometheus(self.metrics, stats, extra={"clock_synchronized": int(clock_synchronized())},
                                 info={"version": __version__, "station": self.config.agent.station})

    def status_page(self) -> str:
        """``GET /``: imported here, at the first request, so an agent nobody looks at does not carry it."""
        from .statuspage import live_page

        return live_page(self)

    def health(self) -> tuple[int, dict[str, Any]]:
        problems, warnings = [], []
        if not self.journal.writer_alive:
            problems.append("journal writer has stopped")
        stats = self.journal.stats()
        if stats.corrupt_files:
            salvage = f" ({stats.salvage['summary']})" if stats.salvage else ""
            warnings.append(f"journal was corrupt and moved aside: {', '.join(stats.corrupt_files)}{salvage}")
        if stats.used_bytes > 0.9 * stats.max_bytes:
            warnings.append(f"journal {stats.used_bytes / stats.max_bytes:.0%} full")
        refusing = journal_refusal(stats)
        if refusing:
            (problems if refusing[0] else warnings).append(refusing[1])
        if stats.stale_results:
            warnings.append(f"{stats.stale_results} undelivered results older than journal.max_age")
        for s in self.bus.subscriptions():
            if s.state in ("circuit_open", "failed", "retrying", "paused", "holding") and s.last_error:
                warnings.append(f"subscriber {s.name}: {s.state}: {s.last_error}")
        for t in self.sources:
            last_error = t.get_stats()["last_error"]
            if t.state.value in ("error", "reconnecting") and last_error:
                warnings.append(f"source {t.name}: {last_error}")
        config = self.journal.get_state(reload.STATE_KEY) or {}
        last = config.get("last_reload") or {}
        if last.get("result") == "refused":
            warnings.append(f"config reload refused, the config loaded before still runs: {last.get('reason')}")
        status = "failing" if problems else ("degraded" if warnings else "ok")
        doc = {
            "status": status, "version": __version__, "station": self.config.agent.station,
            "problems": problems, "warnings": warnings, "security": self.security_warnings,
            "journal": {"events": stats.events, "used_bytes": stats.used_bytes, "max_bytes": stats.max_bytes,
                        "dead_letters": stats.dead_letters},
            "subscribers": [{k: s[k] for k in ("name", "state", "backlog", "oldest_unacked_age_s")}
                            for s in stats.subscribers],
            "sources": [t.get_stats() for t in self.sources],
            "config": {k: config.get(k) for k in ("path", "loaded_at", "reloads", "last_reload")},
        }
        return (503 if problems else 200), doc

    # ------------------------------------------------------------------------------------------------ run
    def run(self, duration: float | None = None) -> int:
        """Run until SIGTERM/SIGINT (or ``duration`` seconds); returns the exit code. A reason not to start is
        raised as ``StartupError`` (one line and an exit status), with whatever was built closed again. SIGHUP
        reloads the config (``agent/reload.py``), here on the main thread: the handler only sets a flag."""
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())  # from now: its default would end us
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.request_stop())
        previous_hook = threading.excepthook
        threading.excepthook = lambda args: self._thread_died(args, previous_hook)
        failed: list[tuple[str, BaseException]] = []
        self.lifecycle.on_error(lambda label, e: failed.append((label, e)))
        try:
            self.lifecycle.start()
        except Exception as e:
            threading.excepthook = previous_hook
            self.close()
            if isinstance(e, OSError):
                raise self._start_failure(failed[0][0] if failed else "?", e) from None
            raise
        log.info("fixture-agent %s running: station %s, journal %s", __version__, self.config.agent.station,
                 self.config.journal_path)
        notify = self.notify
        reload.record_start(self)
        notify.send("READY=1")
        interval = notify.watchdog_interval()
        deadline = None if duration is None else time.monotonic() + duration
        while not self.stop_requested.is_set():
            timeout = interval if interval else 3600.0
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - time.monotonic()))
            self._wake.wait(timeout)
            self._wake.clear()
            if self.stop_requested.is_set() or (deadline is not None and time.monotonic() >= deadline):
                break
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload()
            if interval and self.journal.writer_alive:
                notify.send("WATCHDOG=1")
        notify.send("STOPPING=1")
        log.info("stopping")
        try:
            self.close()
        finally:
            threading.excepthook = previous_hook
        return EX_SOFTWARE if self.thread_died else 0

    def request_stop(self) -> None:
        self.stop_requested.set()
        self._wake.set()

    def request_reload(self) -> None:
        self.reload_requested.set()
        self._wake.set()

    def _reload(self) -> reload.Outcome:
        """SIGHUP's work; systemd is told it is reloading (``systemctl reload`` shows it) and when it is done."""
        self.notify.send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            return reload.reload(self)
        finally:
            self.notify.send("READY=1")

    def _start_failure(self, label: str, e: OSError) -> preflight.StartupError:
        """A component that could not start because of the system (an address in use, a file it cannot open),
        named by the key that configures it."""
        cfg = self.config
        for key, value in preflight.listen_addresses(cfg):
            # the component that binds it: the health server, or the sink (sink:<name>) whose section has listen
            owner = "health-server" if key == "metrics.listen" else "sink:" + key.split(".")[1]
            if label == owner and e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                return preflight.listen_error(cfg, key, value, e)
        return preflight.StartupError(f"{cfg.source_path}: could not start {label}: {e.strerror or e}",
                                      preflight.EX_UNAVAILABLE)

    def _thread_died(self, args: threading.ExceptHookArgs, previous: Any) -> None:
        """A thread that dies of an unexpected exception (a library's, such as paho's network loop; ours catch
        their own and report through ``/healthz``) leaves part of the agent silently dead while the rest looks
        healthy. Nothing is lost by stopping (the journal is durable and every source acknowledges only what it
        holds), so the agent stops with EX_SOFTWARE and the service manager (Restart=always) starts it again with
        every part fresh."""
        previous(args)  # the traceback, as Python prints it
        if self.stop_requested.is_set() or args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        self.thread_died = f"{name}: {args.exc_type.__name__}: {args.exc_value}"
        log.critical("thread %s died (%s: %s); stopping so the service manager starts the agent again",
                     name, args.exc_type.__name__, args.exc_value)
        self.request_stop()

    def close(self) -> None:
        self.lifecycle.stop()
        for part in reversed(self.parts):
            reload.close(part)  # what its build opened (a WATS client, a simulator's pty)
        if getattr(self, "journal", None) is not None:
            self.journal.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _require(module: str, section: str, extra: str) -> None:
    """Fail at start, naming the fix, rather than retrying a source that can never work."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{section} needs the {module} package: pip install 'fixture-agent[{extra}]'")


class SystemdNotifier:
    """sd_notify without libsystemd: a datagram to ``$NOTIFY_SOCKET`` (Type=notify and WatchdogSec units)."""

    def __init__(self) -> None:
        self._addr = os.environ.get("NOTIFY_SOCKET")
        if self._addr and self._addr.startswith("@"):
            self._addr = "\0" + self._addr[1:]

    def send(self, message: str) -> None:
        if not self._addr:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(message.encode(), self._addr)
            except OSError as e:
                log.debug("sd_notify failed: %s", e)

    @staticmethod
    def watchdog_interval() -> float | None:
        usec = os.environ.get("WATCHDOG_USEC")
        if not usec or not usec.isdigit():
            return None
        return int(usec) / 2e6  # ping at half the watchdog period


#: a refusal this recent makes the journal "refusing" (a health problem); older ones are a warning
REFUSING_WINDOW = 300.0


def journal_refusal(stats: Any, now: float | None = None) -> tuple[bool, str] | None:
    """(is it a problem now, what to say) when the journal has refused events (any process; kept in the journal),
    else None. A journal that refuses a source's results is the agent failing at its one job, whatever else looks
    fine: it is a problem while refusals are recent, a warning afterwards."""
    if not stats.refused:
        return None
    n = sum(stats.refused.values())
    age = (now or time.time()) - stats.refused_last_at if stats.refused_last_at else None
    if age is not None and age < REFUSING_WINDOW:
        return True, (f"journal is full and refusing events: {n} refused, the last {age:.0f} s ago; restore the "
                      "uplinks or raise journal.max_bytes")
    when = f", the last {age / 60:.0f} min ago" if age is not None else ""
    return False, f"journal refused {n} events when full{when}"


def journal_stats_readonly(config: Config):
    """Stats for ``status`` without starting a writer (works while the agent runs: WAL allows readers)."""
    import sqlite3

    path = config.journal_path
    if not Path(path).exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return read_stats(conn, Path(path), config.journal.max_bytes, config.journal.max_age,
                          config.journal.bad_input_max_bytes)
    finally:
        conn.close()
