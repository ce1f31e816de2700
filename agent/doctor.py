"""``fixture-agent doctor``: what a newcomer runs when something does not flow. One line per check, ``ok``,
``warn`` or ``fail``, and for anything not ok the fix in words.

It looks at what the config names, the way the agent would meet it: what ``config check`` refuses
(``preflight.problems``, the same words), WATS (reachable, the token accepted, every configured process code a
test operation the server knows), each broker (connected to with the configured credentials and TLS, then
closed), each serial port (present, openable, and an instrument answering ``*IDN?``), the GPIO pins, the clock
(the kernel's view, as ``/metrics`` reports it), disk room against the journal's bound, the journal's integrity
(``PRAGMA quick_check`` on a read-only connection: nothing is written, nothing checkpointed) and the listen
addresses (free, or held by this station's own running agent).

A check's library is imported only when its section is configured, as the agent does. While the agent runs, the
doctor leaves alone what the agent holds (serial ports, GPIO lines) and says so. Secrets never reach the output:
the checks do not print them, and every line is also scrubbed of every secret the config made the doctor read.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .config import Config, ConfigError, parse_listen

Status = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    """One line of the report: ``name`` says what was checked (``wats.token``, ``broker sinks.mqtt``)."""

    name: str
    status: Status
    message: str
    fix: str = ""

    def line(self, width: int) -> str:
        fix = f" -> {self.fix}" if self.fix and self.status != "ok" else ""
        return f"{self.status:<4}  {self.name:<{width}}  {self.message}{fix}"


class Doctor:
    """Runs the checks of one config; ``secrets`` gathers every secret read on the way, for ``scrub``."""

    def __init__(self, cfg: Config, agent_pid: int | None, timeout: float = 5.0) -> None:
        self.cfg = cfg
        self.agent_pid = agent_pid
        self.timeout = timeout
        self.secrets: set[str] = set()

    # ------------------------------------------------------------------------------------------------ together
    def checks(self) -> Iterator[Check]:
        yield from self.agent()
        yield from self.preflight()
        yield from self.security()
        yield from self.wats()
        for key in ("sources.mqtt", "sinks.mqtt"):
            yield from self.mqtt(key)
        for key in ("sources.cfx", "sinks.cfx"):
            yield from self.amqp(key)
        for s in self.cfg.sources.serial:
            yield from self.serial(s)
        yield from self.gpio()
        yield from self.clock()
        yield from self.disk()
        yield from self.journal()
        yield from self.listeners()

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _secret(self, section: Any, name: str, key: str) -> str | None:
        """A section's secret as the agent resolves it (file, credential, variable), remembered for ``scrub``;
        None if it is not there; raises ConfigError as the agent does."""
        from . import secrets

        if not secrets.configured(section, name):
            return None
        value, _ = secrets.resolve(section, name, key)
        if value:
            self.secrets.add(value)
        return value

    @property
    def running(self) -> bool:
        return self.agent_pid is not None

    # ------------------------------------------------------------------------------------------------ the agent
    def agent(self) -> Iterator[Check]:
        if self.running:
            yield Check("agent", "ok", f"running (pid {self.agent_pid}) on {self.cfg.data_dir}")
        else:
            yield Check("agent", "warn", f"not running on {self.cfg.data_dir}",
                        "start it (systemctl start fixture-agent, or fixture-agent run -c FILE); nothing flows "
                        "while it is stopped, and nothing is lost")

    def preflight(self) -> Iterator[Check]:
        from . import preflight

        found = preflight.problems(self.cfg)
        for p in found:
            yield Check(f"config {p.key or ''}".strip(), "fail", str(p))
        if not found:
            yield Check("config", "ok", f"{self.cfg.source_path}: what run checks at start holds")

    def security(self) -> Iterator[Check]:
        from .transport_warnings import insecure_transports

        for w in insecure_transports(self.cfg):
            key = w.split(":", 1)[0].split(" ", 1)[0]
            yield Check(f"security {key}", "warn", w, "use TLS (https://, mqtts, amqps) with verification on")

    # ------------------------------------------------------------------------------------------------ WATS
    def wats(self) -> Iterator[Check]:
        w = self.cfg.sinks.wats
        if w is None or not w.enabled:
            return
        if not _importable("httpx"):
            return  # preflight said which extra to install
        import httpx

        from .events.policies import PermanentError, TransientError
        from .sinks.wats import AuthRejected, WatsClient, test_codes

        try:
            # one request each: the rate budget is the uplink's
            client = WatsClient(w, rate_limited=False)
        except ConfigError as e:
            yield Check("wats.token", "fail", str(e), "write the token on one line, mode 0600")
            return
        if client.token:
            self.secrets.add(client.token)
        try:
            try:  # reachable: any HTTP answer will do (with the token if there is one; WATS may want it here)
                resp = client.probe("/api/App/Version", timeout=self.timeout)
            except httpx.HTTPError as e:
                yield Check("wats.reachable", "fail", f"{w.url}: {type(e).__name__}: {client.redact(_one_line(e))}",
                            "check sinks.wats.url, DNS, the network and any proxy between the Pi and WATS; the "
                            "uplink holds every event until WATS answers")
                return
            if 300 <= resp.status_code < 400:
                yield Check("wats.reachable", "fail", f"{w.url} redirects GET /api/App/Version to "
                                                      f"{resp.headers.get('Location', '?')} ({resp.status_code})",
                            "set sinks.wats.url to the server's own address (https://, no path but a virtual "
                            "directory)")
                return
            yield Check("wats.reachable", "ok", f"{w.url} answered GET /api/App/Version ({resp.status_code})")
            where = client.token_path() or f"${w.token_env}"
            fix = (f"put a valid token (WATS Control Panel -> Tokens, as issued: it is already base64) in {where}, "
                   "on one line, mode 0600; the agent re-reads it and resumes by itself")
            if client.token is None:
                yield Check("wats.token", "fail", f"no WATS token ({where} is missing or empty)", fix)
                return
            try:
                resp = client.request("GET", "/api/App/Processes", timeout=self.timeout)
            except AuthRejected as e:
                yield Check("wats.token", "fail", str(e), fix)
                return
            except (TransientError, PermanentError) as e:
                yield Check("wats.token", "fail", f"GET /api/App/Processes: {_one_line(e)}",
                            "see what WATS answered; the uplink retries by itself")
                return
            yield Check("wats.token", "ok", "accepted (GET /api/App/Processes)")
            try:
                known = test_codes(resp.json())
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                yield Check("wats.processes", "fail", f"WATS sent an unreadable process list: {_one_line(e)}")
                return
            yield from self._process_codes(known)
        finally:
            client.close()

    def _process_codes(self, known: set[int]) -> Iterator[Check]:
        w = self.cfg.sinks.wats
        assert w is not None
        configured = [(f"sinks.wats.process_codes.{k}", v) for k, v in sorted(w.process_codes.items())]
        if w.default_process_code is not None:
            configured.append(("sinks.wats.default_process_code", w.default_process_code))
        configured += [(f"sinks.wats.products[{i}].process_code", r.process_code) for i, r in enumerate(w.products)
                       if r.process_code is not None]
        unknown = [(k, v) for k, v in configured if v not in known]
        listed = ", ".join(str(c) for c in sorted(known)) or "none"
        if unknown:
            yield Check("wats.processes", "fail",
                        "not a test operation on this server: " + ", ".join(f"{k} = {v}" for k, v in unknown),
                        f"use one of the test operation codes WATS lists ({listed}); results for an unknown code "
                        "wait in the journal")
        elif configured:
            yield Check("wats.processes", "ok", f"{len(configured)} configured code(s) known ({listed})")
        else:
            yield Check("wats.processes", "warn", f"no process code configured (WATS lists {listed})",
                        "set sinks.wats.default_process_code or process_codes, or results cannot be sent")

    # ------------------------------------------------------------------------------------------------ brokers
    def mqtt(self, key: str) -> Iterator[Check]:
        group, name = key.split(".")
        sec = getattr(getattr(self.cfg, group), name)
        if sec is None or not sec.enabled or not _importable("paho"):
            return
        import threading

        from .connections.mqtt import MqttConnection, topic_level

        label = f"broker {key}"
        try:
            self._secret(sec, "password", f"{key}.password")
        except ConfigError as e:
            yield Check(label, "fail", str(e))
            return
        trouble: list[str] = []
        failed = threading.Event()
        # a client id of its own and a clean session: the agent's persistent session (and what the broker queues
        # for it) is not touched, and a running agent is not kicked off
        client_id = f"fixture-agent-doctor-{topic_level(self.cfg.agent.station)}-{os.getpid()}"[:64]
        try:
            conn = MqttConnection(sec, client_id=client_id, what=key, persistent=False,
                                  on_trouble=lambda why: (trouble.append(why), failed.set()))
        except ConfigError as e:
            yield Check(label, "fail", str(e))
            return
        who = f" as {sec.username}" if sec.username else " (anonymous)"
        conn.start()
        try:
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline and not conn.connected.is_set() and not failed.is_set():
                conn.connected.wait(0.05)
            ok = conn.connected.is_set()
        finally:
            conn.stop()
        tls = ", TLS" + ("" if sec.verify_tls else " unverified") if sec.tls else ""
        if ok:
            yield Check(label, "ok", f"connected to {sec.broker}{who}{tls}, then closed")
        elif trouble and trouble[0].startswith("broker refused"):
            yield Check(label, "fail", f"{sec.broker}{who}: {trouble[0]}",
                        f"check {key}.username and the password in {key}.password_file against the broker's "
                        "users (and its ACL)")
        else:
            why = trouble[0] if trouble else f"no answer within {self.timeout:.0f}s"
            yield Check(label, "fail", f"{sec.broker}{who}{tls}: {why}",
                        f"check that the broker runs and {key}.host/port reach it"
                        + (", and that ca_file signs its certificate" if sec.tls else ""))

    def amqp(self, key: str) -> Iterator[Check]:
        group, name = key.split(".")
        sec = getattr(getattr(self.cfg, group), name)
        if sec is None or not sec.enabled or not _importable("proton"):
            return
        from proton import ConnectionException, Timeout
        from proton.utils import BlockingConnection

        from .connections.amqp import connect_options

        label = f"broker {key}"
        try:
            self._secret(sec, "password", f"{key}.password")
            kw = connect_options(sec, key)
        except ConfigError as e:
            yield Check(label, "fail", str(e))
            return
        url = kw.pop("url")
        kw.pop("reconnect", None)
        who = f" as {sec.username}" if sec.username else " (anonymous)"
        try:
            conn = BlockingConnection(url, timeout=self.timeout, reconnect=False, **kw)
        except Timeout:
            yield Check(label, "fail", f"{url}{who}: no answer within {self.timeout:.0f}s",
                        f"check that the broker runs and {key}.url reaches it (a broker may delay its answer to a "
                        "wrong login: --timeout 10 waits longer)")
            return
        except ConnectionException as e:
            text = _one_line(e)
            auth = "auth" in text.lower() or "sasl" in text.lower()
            yield Check(label, "fail", f"{url}{who}: {text}",
                        f"check {key}.username and the password in {key}.password_file against the broker's users"
                        if auth else f"check that the broker runs, {key}.url reaches it and its TLS settings")
            return
        except Exception as e:  # noqa: BLE001 - proton raises plain errors for TLS and DNS trouble
            yield Check(label, "fail", f"{url}{who}: {_one_line(e)}", f"check {key}.url and its TLS files")
            return
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - the connection was made; a close that fails is not the finding
            pass
        yield Check(label, "ok", f"connected to {url}{who}{', TLS' if sec.tls else ''}, then closed")

    # ------------------------------------------------------------------------------------------------ devices
    def serial(self, s: Any) -> Iterator[Check]:
        label = f"serial {s.name}"
        if s.port.startswith("simulator:"):
            yield Check(label, "ok", f"{s.port}: a simulated fixture the agent starts itself")
            return
        path = Path(s.port)
        if not path.exists():
            yield Check(label, "fail", f"{s.port} does not exist",
                        "plug the fixture in, and name it by /dev/serial/by-id/… so the name survives a replug")
            return
        if self.running:
            yield Check(label, "ok", f"{s.port} present; held by the running agent (pid {self.agent_pid}), not "
                                     "opened (fixture-agent status shows whether it is online)")
            return
        if not _importable("serial"):
            return
        import serial as pyserial

        try:
            port = pyserial.serial_for_url(s.port, baudrate=s.baud, timeout=0.1, exclusive=True)
        except (pyserial.SerialException, OSError) as e:
            denied = isinstance(e, PermissionError) or "ermission" in str(e)
            yield Check(label, "fail", f"cannot open {s.port}: {_one_line(e)}",
                        "add the agent's user to the dialout group" if denied
                        else "another program holds it (lsof " + s.port + "): stop it")
            return
        try:
            if s.driver != "scpi":
                yield Check(label, "ok", f"{s.port} present and opened at {s.baud} baud (a jsonl controller "
                                         "speaks first: fixture-agent status shows its messages once running)")
                return
            yield self._idn(label, s, port)
        finally:
            port.close()

    def _idn(self, label: str, s: Any, port: Any) -> Check:
        from .protocols import scpi
        from .protocols.lines import LineFramer

        framer = LineFramer(s.max_line_bytes)
        port.reset_input_buffer()
        port.write(b"*IDN?\n")
        deadline = time.monotonic() + s.timeout
        while time.monotonic() < deadline:
            data = port.read(max(1, port.in_waiting))
            for line in framer.feed(data) if data else []:
                try:
                    idn = scpi.parse_idn(line.data)
                except scpi.ScpiError as e:
                    return Check(label, "fail", f"{s.port}: *IDN? answered with {e}",
                                 f"check sources.serial.baud ({s.baud}) and the instrument's line ending")
                from .terminal import printable

                who = printable(" ".join(v for v in idn.to_dict().values() if v))
                return Check(label, "ok", f"{s.port} answers *IDN?: {who}")
        return Check(label, "fail", f"{s.port} opened, but no answer to *IDN? within {s.timeout:.1f}s",
                     f"check the cable, that the instrument is on and in remote mode, and sources.serial.baud "
                     f"({s.baud})")

    def gpio(self) -> Iterator[Check]:
        g = self.cfg.sources.gpio
        if g is None or not _importable("gpiozero"):
            return
        pins = {f: getattr(g, f) for f in ("counter_pin", "lid_pin", "pass_lamp_pin", "fail_lamp_pin",
                                           "loopback_out_pin", "loopback_in_pin") if getattr(g, f) is not None}
        listed = ", ".join(f"{f} {p}" for f, p in pins.items()) or "none"
        if self.running:
            yield Check("gpio", "ok", f"pins {listed}: held by the running agent (pid {self.agent_pid}), not claimed")
            return
        import warnings

        if g.pin_factory and not os.environ.get("GPIOZERO_PIN_FACTORY"):
            os.environ["GPIOZERO_PIN_FACTORY"] = g.pin_factory  # as the source does
        from gpiozero import Device
        from gpiozero.exc import GPIOZeroError

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gpiozero warns of every factory it falls back from
            try:
                factory = Device._default_pin_factory()
            except (GPIOZeroError, ImportError, OSError) as e:
                yield Check("gpio", "fail", f"no pin factory: {_one_line(e)}",
                            "on a Pi install python3-lgpio and set sources.gpio.pin_factory = \"lgpio\"")
                return
        busy = []
        try:
            for f, pin in pins.items():
                try:
                    factory.pin(pin).close()  # claims the line (lgpio: as an input), and lets it go
                except (GPIOZeroError, OSError) as e:
                    busy.append(f"{f} {pin}: {_one_line(e)}")
        finally:
            factory.close()
        kind = type(factory).__name__
        if busy:
            yield Check("gpio", "fail", f"pins not free ({kind}): " + "; ".join(busy),
                        "stop the program that holds them (gpioinfo shows the consumer), or pick other pins")
        else:
            yield Check("gpio", "ok", f"pins {listed} free ({kind})")

    # ------------------------------------------------------------------------------------------------ the host
    def clock(self) -> Iterator[Check]:
        from .events.ids import clock_synchronized

        if clock_synchronized():
            yield Check("clock", "ok", "synchronised (the kernel's NTP state)")
            return
        w = self.cfg.sinks.wats
        holds = w is not None and w.enabled and w.require_clock_sync
        yield Check("clock", "fail" if holds else "warn",
                    "not synchronised (the kernel's NTP state)" + ("; WATS reports wait for it" if holds else ""),
                    "timedatectl; enable systemd-timesyncd (or chrony) and let it reach an NTP server (UDP 123)")

    def disk(self) -> Iterator[Check]:
        path = self.cfg.journal_path
        where = next((p for p in (path.parent, *path.parents) if p.exists()), Path("/"))
        try:
            free = shutil.disk_usage(where).free
        except OSError as e:
            yield Check("disk", "fail", f"{where}: {e.strerror or e}")
            return
        bound = self.cfg.journal.max_bytes
        have = sum(_size(Path(f"{path}{s}")) for s in ("", "-wal", "-shm"))
        needed = max(0, bound - have)
        text = f"{_mb(free)} free on {where}; the journal ({_mb(have)}) may grow to journal.max_bytes ({_mb(bound)})"
        if free < min(needed, 8 << 20):
            yield Check("disk", "fail", f"{text}: the disk is full now",
                        "free space on it (old corrupt journals listed by fixture-agent status, logs), or move "
                        "agent.data_dir to a disk with room")
        elif free < needed:
            yield Check("disk", "warn", f"{text}: the disk fills before the journal reaches its bound",
                        f"lower journal.max_bytes to at most {_mb(int((have + free) * 0.8))}, or free space")
        else:
            yield Check("disk", "ok", text)

    def journal(self) -> Iterator[Check]:
        from .events.journal import open_readonly

        path = self.cfg.journal_path
        if not path.exists():
            yield Check("journal", "ok", f"no journal yet at {path} (the agent creates it at its first start)")
            return
        try:
            conn = open_readonly(path, timeout=self.timeout)
            try:
                rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                conn.close()
        except sqlite3.Error as e:
            yield Check("journal", "fail", f"{path}: cannot be read: {e}", _SALVAGE)
            return
        if rows != ["ok"]:
            shown = "; ".join(rows[:3]) + (f" (and {len(rows) - 3} more)" if len(rows) > 3 else "")
            yield Check("journal", "fail", f"{path} is damaged: {shown}", _SALVAGE)
            return
        if "events" not in tables:
            yield Check("journal", "fail", f"{path} is an SQLite file, but not a journal (no events table)",
                        "set journal.path to the agent's journal, or move this file away")
            return
        corrupt = sorted(p.name for p in path.parent.glob(f"{path.name}.corrupt-*") if not p.name.endswith(
            ("-wal", "-shm")))
        if corrupt:
            yield Check("journal", "warn", f"{path} passes quick_check; {len(corrupt)} corrupt journal(s) kept "
                                           f"beside it: {', '.join(corrupt)}",
                        "once fixture-agent status shows what their salvage recovered, delete them to free the space")
        else:
            yield Check("journal", "ok", f"{path} passes PRAGMA quick_check (read only)")

    def listeners(self) -> Iterator[Check]:
        from . import preflight

        for key, value in preflight.listen_addresses(self.cfg):
            host, port = parse_listen(value)
            problem = preflight.listen_problem(self.cfg, key, value)
            if problem is None:
                if self.running and port:
                    yield Check(f"listen {key}", "warn", f"{value} is free, but the running agent (pid "
                                f"{self.agent_pid}) does not listen there",
                                "the agent was started with another config: restart it")
                else:
                    yield Check(f"listen {key}", "ok", f"{value} is free")
                continue
            if self.running and key == "metrics.listen" and self._own_metrics(host, port):
                yield Check(f"listen {key}", "ok", f"{value} is held by this station's running agent "
                                                   f"(pid {self.agent_pid})")
            elif self.running and key != "metrics.listen":
                yield Check(f"listen {key}", "ok", f"{value} is in use (by the running agent, pid {self.agent_pid}, "
                                                   "or another process)")
            else:
                yield Check(f"listen {key}", "fail", str(problem))

    def _own_metrics(self, host: str, port: int) -> bool:
        """Whether what listens there is this station's agent: its /healthz names the station."""
        import json
        import urllib.request

        target = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
        url = f"http://{'[' + target + ']' if ':' in target else target}:{port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as e:  # 503: a failing agent is still the agent
            try:
                doc = json.loads(e.read())
            except ValueError:
                return False
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and doc.get("station") == self.cfg.agent.station


_SALVAGE = ("the agent salvages it at its next start (every readable row kept, the damaged file kept beside it): "
            "restart it, with room on the disk for a copy")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _one_line(e: object) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _mb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def run(cfg: Config, agent_pid: int | None, timeout: float = 5.0,
        out: Callable[[str], None] | None = None) -> list[Check]:
    """All checks; with ``out``, each line is written as soon as its check is done (a slow broker shows)."""
    logging.getLogger("agent").setLevel(logging.CRITICAL)  # the checks say it; the libraries' warnings repeat it
    doctor = Doctor(cfg, agent_pid, timeout)
    found = []
    for check in doctor.checks():
        check.message, check.fix = doctor.scrub(check.message), doctor.scrub(check.fix)
        found.append(check)
        if out is not None:
            out(check.line(24))
    return found


def as_json(cfg: Config, checks: list[Check]) -> dict[str, Any]:
    return {"ok": not any(c.status == "fail" for c in checks), "file": cfg.source_path,
            "station": cfg.agent.station, "checks": [asdict(c) for c in checks]}


__all__ = ["Check", "Doctor", "as_json", "run"]
