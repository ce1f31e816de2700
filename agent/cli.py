"""``fixture-agent``: run the agent, and look into (or feed) its journal from a shell.

``status``, ``events`` and ``dlq list`` read the journal file directly (WAL lets readers in while the agent
writes), so there is no IPC server to keep alive. ``publish`` prints each event id only after the event is
durable: a script can trust every id it saw.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import select
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

from . import __version__, plugins
from .config import Config, ConfigError, load_config
from .preflight import EX_CONFIG, EX_SOFTWARE, StartupError

#: 1: some input was bad (``publish``, ``dlq retry``); 2: wrong command line. A configuration error is 78
#: (EX_CONFIG) from every command, and ``run``'s other start-up failures have their sysexits.h status
#: (``agent/preflight.py``), so a service manager can tell them apart.
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _out(args: argparse.Namespace, doc: Any, text: str) -> None:
    print(json.dumps(doc, indent=2, default=str) if getattr(args, "json", False) else text)


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _journal(cfg: Config):
    """The journal for a command, or the one-line StartupError naming the key (as ``run`` says it)."""
    from . import preflight

    preflight.make_directories(cfg)
    return preflight.open_journal(cfg)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# ---------------------------------------------------------------------------------------------------- commands
def cmd_run(args: argparse.Namespace) -> int:
    from .runtime import Agent

    cfg = _config(args)
    _setup_logging(args.log_level or cfg.agent.log_level)
    try:
        return Agent(cfg).run(duration=args.for_seconds)
    except StartupError as e:  # AgentAlreadyRunning too
        print(f"fixture-agent: {e}", file=sys.stderr)
        return e.exit_code
    except ConfigError as e:
        print(f"fixture-agent: config error: {e}", file=sys.stderr)
        return EX_CONFIG
    except Exception:  # noqa: BLE001 - a defect of ours, not the user's: the trace is for the bug report
        logging.getLogger("agent").critical("internal error while starting (a bug: please report it with this "
                                            "trace)", exc_info=True)
        return EX_SOFTWARE


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _agent_pid(cfg: Config) -> int | None:
    import fcntl

    lock = cfg.data_dir / "agent.lock"
    if not lock.exists():
        return None
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(pid) if pid.isdigit() else -1
    finally:
        os.close(fd)


def cmd_status(args: argparse.Namespace) -> int:
    from .runtime import journal_refusal, journal_stats_readonly

    cfg = _config(args)
    pid = _agent_pid(cfg)
    if getattr(args, "html", None):
        return _status_html(args, cfg, pid)
    if getattr(args, "watch", False):
        from .watch import watch

        return watch(cfg, args.interval, as_json=args.json, agent_pid=lambda: _agent_pid(cfg))
    stats = journal_stats_readonly(cfg)
    if stats is None:
        doc = {"station": cfg.agent.station, "agent_pid": pid, "journal": None}
        _out(args, doc, f"station {cfg.agent.station}: no journal yet at {cfg.journal_path}")
        return EXIT_OK
    doc = {
        "station": cfg.agent.station,
        "agent_running": pid is not None,
        "agent_pid": pid,
        "journal": {
            "path": stats.path, "events": stats.events, "used_bytes": stats.used_bytes,
            "max_bytes": stats.max_bytes, "file_bytes": stats.file_bytes, "first_seq": stats.first_seq,
            "last_seq": stats.last_seq, "evicted": stats.evicted, "refused": stats.refused,
            "stale_results": stats.stale_results, "corrupt_files": stats.corrupt_files,
            "salvage": stats.salvage, "bad_input_bytes": stats.bad_input_bytes,
            "bad_input_max_bytes": stats.bad_input_max_bytes, "refused_last_at": stats.refused_last_at,
            "refusing": bool((refusal := journal_refusal(stats)) and refusal[0]),
        },
        "subscribers": stats.subscribers,
        "dead_letters": stats.dead_letters,
        "sources": stats.sources,
        "counters": stats.counters,
    }
    from .reload import status_doc, status_lines

    hooks = [(p, s) for p, s in plugins.configured(cfg) if p.status]  # what a plugin adds to its subscriber's row
    conn = _ro_conn(cfg.journal_path)
    try:
        doc["config"] = status_doc(conn, cfg, pid)  # when the running agent loaded its config; the last reload
        for plugin, section in hooks:
            doc[plugin.name] = plugins.load(plugin.status)(cfg, section, conn)
    finally:
        conn.close()
    lines = [
        f"station      {cfg.agent.station}  (agent {'running, pid ' + str(pid) if pid else 'not running'})",
        f"journal      {stats.path}",
        f"             {stats.events} events, {stats.used_bytes / 1e6:.2f} MB of {stats.max_bytes / 1e6:.0f} MB "
        f"({stats.file_bytes / 1e6:.2f} MB on disk)",
    ]
    if doc["config"]:
        lines += status_lines(doc["config"], _age)
    if stats.corrupt_files:
        lines.append(f"  !! JOURNAL WAS CORRUPT and moved aside: {', '.join(stats.corrupt_files)}")
        if stats.salvage:
            lines.append(f"     {stats.salvage['summary']}")
    if stats.evicted:
        lines.append("  evicted    " + ", ".join(f"{k}={v}" for k, v in sorted(stats.evicted.items())))
    if stats.refused:
        lines.append("  !! refused " + ", ".join(f"{k}={v}" for k, v in sorted(stats.refused.items())))
        if refusal:
            lines.append(f"  !! {'JOURNAL REFUSING EVENTS: ' if refusal[0] else ''}{refusal[1]}")
    if stats.bad_input_bytes:
        lines.append(f"  bad input  {stats.bad_input_bytes / 1e3:.1f} KB kept of its {stats.bad_input_max_bytes / 1e3:.0f} KB "
                     "share (journal.bad_input_max_bytes; oldest deleted beyond it)")
    if stats.stale_results:
        lines.append(f"  !! {stats.stale_results} undelivered results are older than journal.max_age")
    from .transport_warnings import insecure_transports

    doc["security"] = insecure_transports(cfg)
    lines += [f"  !! SECURITY: {w}" for w in doc["security"]]
    lines.append(f"dead letters {stats.dead_letters}" + ("  (fixture-agent dlq list)" if stats.dead_letters else ""))
    if stats.sources:
        lines.append("sources")
        for name, src in sorted(stats.sources.items()):
            ident = src.get("identity") or {}
            who = " ".join(str(v) for v in ident.values()) or "-"
            lines.append(f"  {name:<16} {'online' if src.get('online') else 'offline':<8} {src.get('port', '')}  {who}")
    if stats.counters:
        lines.append("counters")
        for asset, cnt in sorted(stats.counters.items()):
            lines.append(f"  {asset:<16} running {cnt['running_count']:<8} total {cnt['total_count']}")
    lines.append("subscribers")
    if not stats.subscribers:
        lines.append("  (none)")
    for s in stats.subscribers:
        lines.append(f"  {s['name']:<16} {s['state'] or '-':<13} backlog {s['backlog']:<8} "
                     f"oldest {_age(s['oldest_unacked_age_s']):<6} dead letters {s['dead_letters']}")
        if s["last_error"]:
            lines.append(f"  {'':<16} last: {s['last_error']}")
        for plugin, _ in hooks:
            if s["name"] == plugin.name and plugin.status_lines:
                for line in plugins.load(plugin.status_lines)(doc[plugin.name]):
                    lines.append(f"  {line}" if line.startswith("!!") else f"  {'':<16} {line}")
    _out(args, doc, "\n".join(lines))
    return EXIT_OK


def _status_html(args: argparse.Namespace, cfg: Config, pid: int | None) -> int:
    """``status --html FILE``: the status page the agent serves at ``/``, written from the journal alone."""
    from .statuspage import write_html

    path = Path(args.html)
    try:
        model = write_html(cfg, path, agent_pid=pid)
    except OSError as e:
        print(f"fixture-agent status: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    _out(args, {"html": str(path), "journal": model.journal_path, "agent_pid": pid},
         f"wrote {path} (from {model.journal_path}{'' if model.stats else ': no journal yet'})")
    return EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    import sqlite_utils

    cfg = _config(args)
    if not cfg.journal_path.exists():
        _out(args, [], f"no journal yet at {cfg.journal_path}")
        return EXIT_OK
    db = sqlite_utils.Database(_ro_conn(cfg.journal_path))
    where, params = "", []
    if args.type:
        where = "WHERE type = ?"
        params.append(args.type)
    rows = list(db.query(
        f"SELECT * FROM (SELECT seq, id, type, recorded_at, body FROM events {where} ORDER BY seq DESC LIMIT ?) "
        "ORDER BY seq", [*params, args.limit]))
    if args.json:
        print(json.dumps([{"seq": r["seq"], **json.loads(r["body"])} for r in rows], indent=2))
        return EXIT_OK
    from .terminal import printable

    for r in rows:  # device bytes: control sequences escaped, never sent to the terminal
        ev = json.loads(r["body"])
        when = printable(ev["metadata"].get("timestamp", ""))
        summary = printable(_summary(ev["payload"]))
        print(f"{r['seq']:>8}  {when[:23]:<23}  {printable(r['type']):<22} "
              f"{printable(ev['metadata'].get('source', '')):<10} {printable(r['id'])}  {summary}")
    if not rows:
        print("(no events)")
    return EXIT_OK


def _ro_conn(path: Path):
    import sqlite3

    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def _summary(p: dict[str, Any]) -> str:
    keys = ("unit_id", "result", "asset_id", "running_count", "total_count", "new_state", "fault_code")
    return " ".join(f"{k}={p[k]}" for k in keys if k in p)[:80]


class StdinLine(msgspec.Struct, forbid_unknown_fields=True):
    """One ``publish --stdin`` line."""

    type: str
    payload: dict[str, Any] = {}
    source: str | None = None
    occurred_at: datetime | None = None
    correlation_id: str | None = None


_line_decoder = msgspec.json.Decoder(StdinLine)


def _parse_line(line: bytes, where: str, default_source: str):
    """One ``publish --stdin`` line → Event, or ValueError naming the line (``_parse_line_unchecked``), its
    control characters escaped: a key named "\\n" must not split the error across lines."""
    try:
        return _parse_line_unchecked(line, where, default_source)
    except ValueError as e:  # one line on stderr and in the dead letter, whatever control bytes the input had
        raise ValueError(re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", str(e))) from None


def _parse_line_unchecked(line: bytes, where: str, default_source: str):
    """One ``publish --stdin`` line → Event, or raise ValueError naming the line and the field (the only two
    outcomes, whatever the bytes: ``tests/fuzz/test_fuzz_stdin.py``). A payload nested deeper than
    ``jsondepth.MAX_DEPTH`` is refused here: journaling it would recurse again when it is encoded."""
    from .events.model import Event, EventValidationError
    from .protocols import jsondepth

    try:
        doc = _line_decoder.decode(line)
        jsondepth.check(doc.payload, line)
    except msgspec.ValidationError as e:
        raise ValueError(f"{where}: {e}") from None
    except msgspec.DecodeError as e:
        raise ValueError(f"{where}: not JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{where}: {jsondepth.NestedTooDeep()}") from None
    except jsondepth.NestedTooDeep as e:
        raise ValueError(f"{where}: {e}") from None
    if doc.occurred_at is not None and doc.occurred_at.tzinfo is None:
        raise ValueError(f"{where}: occurred_at must include a UTC offset")
    try:
        return Event.create(doc.type, doc.payload, source=doc.source or default_source,
                            correlation_id=doc.correlation_id, occurred_at=doc.occurred_at)
    except (EventValidationError, ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None
    except OverflowError:  # 9999-12-31T23:59-14:00 is past the last UTC datetime Python has
        raise ValueError(f"{where}: occurred_at {doc.occurred_at.isoformat()} is out of range") from None


def cmd_publish(args: argparse.Namespace) -> int:
    from .events.bus import EventBus
    from .events.journal import JournalError

    cfg = _config(args)
    journal = _journal(cfg)
    bus = EventBus(journal, chain=_chain(cfg))
    source = args.source or "cli"
    bad = 0
    try:
        if not args.stdin:
            if not args.type:
                print("fixture-agent publish: give --type and --payload, or --stdin", file=sys.stderr)
                return EXIT_USAGE
            try:
                line = json.dumps({"type": args.type, "payload": json.loads(args.payload or "{}")}).encode()
                event = _parse_line(line, "--payload", source)
            except json.JSONDecodeError as e:
                print(f"fixture-agent publish: --payload: not JSON: {e}", file=sys.stderr)
                return EXIT_ERROR
            except ValueError as e:
                print(f"fixture-agent publish: {e}", file=sys.stderr)
                return EXIT_ERROR
            bus.publish(event)
            print(event.id, flush=True)
            return EXIT_OK
        for batch in _stdin_batches(sys.stdin.buffer.fileno()):
            events = []
            for lineno, raw in batch:
                try:
                    events.append(_parse_line(raw, f"stdin line {lineno}", source))
                except ValueError as e:
                    bad += 1
                    print(f"fixture-agent publish: {e}", file=sys.stderr)
                    bus.dead_letters.add_bad_input(f"cli:stdin line {lineno}", raw, str(e))
            if events:
                bus.publish_many(events)  # one transaction, one fsync for the whole batch
                sys.stdout.write("".join(f"{e.id}\n" for e in events))
                sys.stdout.flush()
    except JournalError as e:
        print(f"fixture-agent publish: {e}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_ERROR
    finally:
        journal.close()
    return EXIT_ERROR if bad else EXIT_OK


def _stdin_batches(fd: int, max_lines: int = 1000):
    """Yield lists of (line number, bytes): every complete line already available, so a fast producer gets
    group commit and a slow one (a line now and then) gets each line committed as soon as it arrives."""
    buf = b""
    lineno = 0
    eof = False
    while not eof:
        chunk = os.read(fd, 65536)
        if not chunk:
            eof = True
        buf += chunk
        # Take whatever else is already waiting, without blocking.
        while not eof and len(buf) < 4 << 20 and select.select([fd], [], [], 0)[0]:
            more = os.read(fd, 65536)
            if not more:
                eof = True
                break
            buf += more
        *lines, buf = buf.split(b"\n")
        if eof and buf:
            lines.append(buf)
            buf = b""
        batch = []
        for raw in lines:
            lineno += 1
            if raw.strip():
                batch.append((lineno, raw))
            if len(batch) >= max_lines:
                yield batch
                batch = []
        if batch:
            yield batch


def cmd_dlq(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if not cfg.journal_path.exists():
        _out(args, [], f"no journal yet at {cfg.journal_path}")
        return EXIT_OK
    ids = [int(i) for i in args.ids] if getattr(args, "ids", None) else None
    if args.action == "list":
        return _dlq_list(args, cfg, ids)
    journal = _journal(cfg)
    try:
        if args.action == "retry":
            if not ids and not args.all:
                print("fixture-agent dlq retry: give dead-letter ids, or --all", file=sys.stderr)
                return EXIT_USAGE
            marked, skipped = journal.request_retry(ids)
            for s in skipped:
                print(f"not retried: {s}", file=sys.stderr)
            _out(args, {"marked": marked, "skipped": skipped},
                 f"{len(marked)} dead letter(s) marked for redelivery; the running agent picks them up within seconds")
            return EXIT_OK if not skipped else EXIT_ERROR
        if args.action == "drop":
            if not ids and not args.all:
                print("fixture-agent dlq drop: give dead-letter ids, or --all", file=sys.stderr)
                return EXIT_USAGE
            n = journal.drop_dead_letters(ids)
            _out(args, {"dropped": n}, f"{n} dead letter(s) dropped")
            return EXIT_OK
    finally:
        journal.close()
    return EXIT_USAGE


def _dlq_list(args: argparse.Namespace, cfg: Config, ids: list[int] | None) -> int:
    """``dlq list`` reads through a read-only connection: a read command changes nothing durable."""
    from .events.dead_letters import read_dead_letters
    from .events.journal_stats import open_readonly

    conn = open_readonly(cfg.journal_path)
    try:
        rows = read_dead_letters(conn, limit=args.limit, ids=ids)
    finally:
        conn.close()
    if args.json:
        print(json.dumps([r.to_dict(with_body=args.body) for r in rows], indent=2))
        return EXIT_OK
    from .terminal import printable, printable_bytes

    for r in rows:  # device bytes: control sequences escaped, never sent to the terminal
        when = datetime.fromtimestamp(r.created_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        who = f"for {printable(r.subscriber)}" if r.subscriber else f"bad input from {printable(r.origin)}"
        mark = " [retry requested]" if r.retry_requested else ""
        print(f"#{r.id:<6} {when}  {printable(r.event_type or '-'):<20} {who}{mark}\n"
              f"        {printable(r.reason)}")
        if args.body and r.body is not None:
            print("        " + printable_bytes(r.body, limit=2000))
    if not rows:
        print("(no dead letters)")
    return EXIT_OK


def cmd_subscribers(args: argparse.Namespace) -> int:
    cfg = _config(args)
    journal = _journal(cfg)
    try:
        if journal.drop_subscriber(args.name):
            print(f"subscriber {args.name} dropped: the journal no longer keeps events for it")
            return EXIT_OK
        print(f"no subscriber named {args.name}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        journal.close()


def cmd_counters(args: argparse.Namespace) -> int:
    import getpass

    from .events.bus import EventBus
    from .events.counters import CounterLedger, counter_key

    cfg = _config(args)
    if args.action == "show":  # read-only: a Journal's close ran a checkpoint, a "show" that moved the file
        from . import preflight
        from .events.journal_stats import COUNTERS_PREFIX, open_readonly, read_state

        doc: dict[str, Any] = {}
        if not cfg.journal_path.exists():  # nothing to show; a directory it could never be in is still said
            for problem in preflight._directory_problems(cfg)[:1]:
                raise problem
        else:
            conn = open_readonly(cfg.journal_path)
            try:
                doc = read_state(conn, COUNTERS_PREFIX)
            finally:
                conn.close()
        _out(args, doc, "\n".join(f"{a:<20} running {c['running_count']:<8} total {c['total_count']}"
                                   for a, c in doc.items()) or "(no counters)")
        return EXIT_OK
    journal = _journal(cfg)
    try:
        if journal.get_state(counter_key(args.asset)) is None:
            print(f"no counter for asset {args.asset!r} (see: fixture-agent counters show)", file=sys.stderr)
            return EXIT_ERROR
        bus = EventBus(journal, chain=_chain(cfg))
        event = CounterLedger(bus, args.asset, "cli").reset(by=args.by or getpass.getuser())
        _out(args, event.to_dict(), f"{args.asset}: running count reset to 0 (total {event.payload['total_count']}); "
                                    f"audit event {event.id}")
        return EXIT_OK
    finally:
        journal.close()


def cmd_simulate(args: argparse.Namespace) -> int:
    import signal
    import threading

    from . import simulator

    kw: dict[str, Any] = {"link": args.link, "seed": args.seed, "garbage_rate": args.garbage_rate,
                          "disconnect_every": args.disconnect_every, "disconnect_for": args.disconnect_for}
    if args.protocol == "jsonl":
        kw.update(interval=args.interval, drop_ack_rate=args.drop_ack_rate, mangle_rate=args.mangle_rate,
                  asset_id=args.asset, count=args.count)
    else:
        kw.update(tst_code=args.tst_code)
    if args.link:
        try:  # where another user could plant the link, the agent would read that user's "fixture"
            simulator.check_link_dir(Path(args.link))
        except simulator.UnsafeLinkDir as e:
            print(f"fixture-agent simulate: {e}", file=sys.stderr)
            return EXIT_USAGE
        Path(args.link).parent.mkdir(parents=True, exist_ok=True)
    pty, device, thread = simulator.start(args.protocol, **kw)
    print(pty.path + (f"  (linked as {args.link})" if args.link else ""), flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait(args.for_seconds)
    pty.close()
    thread.join(2)
    if args.protocol == "jsonl":
        print(f"sent {device.seq} messages, {device.seq - len(device.outbox)} acknowledged, "
              f"{pty.disconnects} disconnects", file=sys.stderr)
    return EXIT_OK


def _chain(cfg: Config):
    from .events.chain import EnrichmentMiddleware, HandlerChain, ValidationMiddleware

    station = {"station": cfg.agent.station, "location": cfg.agent.location, "purpose": cfg.agent.purpose}
    return HandlerChain([ValidationMiddleware(), EnrichmentMiddleware({k: v for k, v in station.items() if v})])


def cmd_cfx_samples(args: argparse.Namespace) -> int:
    from .cfx_tools import samples

    return samples(args)


def cmd_config_check(args: argparse.Namespace) -> int:
    """The file's values (ConfigError), then everything ``run`` would refuse that can be known without running
    (``preflight.problems``, the same function ``run`` calls). A listen address in use is reported only while no
    agent runs on this data directory: a running agent holds its own."""
    from . import preflight

    try:
        cfg = _config(args)  # raises ConfigError with file and key
    except ConfigError as e:
        if args.json:
            print(json.dumps({"ok": False, "file": args.config, "problems": [
                {"key": e.key, "message": str(e), "exit_code": EX_CONFIG}]}, indent=2))
        raise
    problems = preflight.problems(cfg)
    try:
        running = _agent_pid(cfg) if cfg.data_dir.is_dir() else None
    except OSError:  # a lock file this user may not read: a problem preflight names already, or not ours to judge
        running = None
    if running is None:
        problems += [p for key, value in preflight.listen_addresses(cfg)
                     if (p := preflight.listen_problem(cfg, key, value)) is not None]
    if problems:
        if args.json:
            print(json.dumps({"ok": False, "file": cfg.source_path, "problems": [
                {"key": p.key, "message": str(p), "exit_code": p.exit_code} for p in problems]}, indent=2))
        for p in problems:
            print(f"fixture-agent: {p}", file=sys.stderr)
        return problems[0].exit_code
    sources = [name for p, section in plugins.configured(cfg, "sources") if p.source_names
               for name in p.source_names(section)]
    doc = {"ok": True, "file": cfg.source_path, "station": cfg.agent.station, "journal": str(cfg.journal_path),
           "sources": sources, "sinks": cfg.enabled_sinks()}
    _out(args, doc, f"{cfg.source_path}: ok (station {cfg.agent.station}, journal {cfg.journal_path}, "
                    f"sources: {', '.join(sources) or 'none'}, sinks: {', '.join(doc['sinks']) or 'none'})")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """``doctor``: one line per check, ok / warn / fail with the fix (``agent/doctor.py``); exit 1 on any fail."""
    from . import doctor

    cfg = _config(args)
    try:
        pid = _agent_pid(cfg) if cfg.data_dir.is_dir() else None
    except OSError:  # a lock file this user may not read: preflight's directory check names the problem
        pid = None
    checks = doctor.run(cfg, pid, timeout=args.timeout, out=None if args.json else print)
    if args.json:
        print(json.dumps(doctor.as_json(cfg, checks), indent=2))
    failed = [c for c in checks if c.status == "fail"]
    if not args.json:
        warned = sum(c.status == "warn" for c in checks)
        print(f"{len(checks)} checks: {len(failed)} failed, {warned} warnings" if failed or warned
              else f"{len(checks)} checks: all ok")
    return EXIT_ERROR if failed else EXIT_OK


# ---------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="config file (default: $FIXTURE_AGENT_CONFIG or "
                                               "/etc/fixture-agent/config.toml)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    p = argparse.ArgumentParser(prog="fixture-agent", description="Durable edge agent for test fixtures.")
    p.add_argument("--version", action="version", version=f"fixture-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", parents=[common], help="run the agent")
    r.add_argument("--for", dest="for_seconds", type=float, help="stop cleanly after this many seconds")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", parents=[common], help="journal, subscribers, backlog, dead letters")
    s.add_argument("--html", metavar="FILE", help="write the status page (what the agent serves at /) to FILE")
    s.add_argument("--watch", action="store_true", help="refresh until Ctrl-C: each backlog, its rate, time to empty")
    s.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between --watch refreshes")
    s.set_defaults(func=cmd_status)

    e = sub.add_parser("events", parents=[common], help="the newest events in the journal")
    e.add_argument("--type", help="only this event type")
    e.add_argument("--limit", type=int, default=20)
    e.set_defaults(func=cmd_events)

    pub = sub.add_parser("publish", parents=[common], help="journal events; prints each id once durable")
    pub.add_argument("--type", help="event type, e.g. test.result")
    pub.add_argument("--payload", help="payload as a JSON object")
    pub.add_argument("--stdin", action="store_true",
                     help='read JSON lines: {"type": …, "payload": {…}, "source"?, "occurred_at"?, "correlation_id"?}')
    pub.add_argument("--source", help="source name recorded in the events (default: cli)")
    pub.set_defaults(func=cmd_publish)

    d = sub.add_parser("dlq", help="dead letters: list, retry, drop")
    dsub = d.add_subparsers(dest="action", required=True)
    for action, help_ in (("list", "show dead letters"), ("retry", "redeliver to their subscriber"),
                          ("drop", "delete for good")):
        a = dsub.add_parser(action, parents=[common], help=help_)
        a.add_argument("ids", nargs="*", help="dead-letter ids (see dlq list)")
        if action == "list":
            a.add_argument("--limit", type=int, default=100)
            a.add_argument("--body", action="store_true", help="also print the event or raw input")
        else:
            a.add_argument("--all", action="store_true", help=f"{action} every dead letter")
        a.set_defaults(func=cmd_dlq)

    sb = sub.add_parser("subscribers", help="manage durable subscribers")
    sbsub = sb.add_subparsers(dest="action", required=True)
    drop = sbsub.add_parser("drop", parents=[common], help="forget a subscriber that is no longer configured")
    drop.add_argument("name")
    drop.set_defaults(func=cmd_subscribers)

    cn = sub.add_parser("counters", help="fixture actuation counters")
    cnsub = cn.add_subparsers(dest="action", required=True)
    show = cnsub.add_parser("show", parents=[common], help="current counters per asset")
    show.set_defaults(func=cmd_counters)
    reset = cnsub.add_parser("reset", parents=[common], help="reset an asset's running count (with an audit event)")
    reset.add_argument("--asset", required=True)
    reset.add_argument("--by", help="who resets it (default: your user name)")
    reset.set_defaults(func=cmd_counters)

    sim = sub.add_parser("simulate", help="simulators for trying the agent without hardware")
    simsub = sim.add_subparsers(dest="what", required=True)
    fx = simsub.add_parser("fixture", help="a fixture on a pseudo-terminal; prints the device path")
    fx.add_argument("--protocol", choices=["jsonl", "scpi"], default="jsonl")
    fx.add_argument("--link", help="keep a symlink to the device here (a stable path for the config)")
    fx.add_argument("--interval", type=float, default=0.5, help="seconds between controller messages")
    fx.add_argument("--count", type=int, help="stop generating after this many messages")
    fx.add_argument("--asset", help="asset_id the controller puts in its messages")
    fx.add_argument("--seed", type=int)
    fx.add_argument("--garbage-rate", type=float, default=0.0, help="chance of a garbage line before each line")
    fx.add_argument("--mangle-rate", type=float, default=0.0, help="chance a message is corrupted on the wire")
    fx.add_argument("--drop-ack-rate", type=float, default=0.0, help="chance an ack is ignored (forces resends)")
    fx.add_argument("--disconnect-every", type=float, default=0.0, help="unplug every N seconds")
    fx.add_argument("--disconnect-for", type=float, default=1.0, help="stay unplugged this long")
    fx.add_argument("--tst-code", type=int, default=0, help="scpi: what *TST? answers (0 = pass)")
    fx.add_argument("--for", dest="for_seconds", type=float, help="stop after this many seconds")
    fx.set_defaults(func=cmd_simulate)

    cf = sub.add_parser("cfx", help="IPC-CFX tools")
    cfsub = cf.add_subparsers(dest="what", required=True)
    smp = cfsub.add_parser("samples", help="CFX messages a test station meets, and what the agent makes of them")
    which = smp.add_mutually_exclusive_group(required=True)
    which.add_argument("--list", action="store_true", help="the samples, one line each")
    which.add_argument("--show", metavar="NAME", help="the message as the CFX SDK writes it")
    which.add_argument("--convert", metavar="NAME", help="the normalized events and what goes to WATS")
    smp.add_argument("-c", "--config", help="use this config's station and WATS process codes for --convert")
    smp.add_argument("--json", action="store_true", help="machine-readable output")
    smp.set_defaults(func=cmd_cfx_samples)

    doc = sub.add_parser("doctor", parents=[common], help="check what the config names: WATS, brokers, ports, "
                                                         "pins, clock, disk, journal (ok / warn / fail, with the fix)")
    doc.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each server or device")
    doc.set_defaults(func=cmd_doctor)

    c = sub.add_parser("config", help="configuration")
    csub = c.add_subparsers(dest="action", required=True)
    chk = csub.add_parser("check", parents=[common], help="validate a config file")
    chk.set_defaults(func=cmd_config_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"fixture-agent: config error: {e}", file=sys.stderr)
        return EX_CONFIG
    except StartupError as e:
        print(f"fixture-agent: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `… | head`: the reader went away; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
