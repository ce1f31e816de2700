"""The status page: one HTML document a line technician reads on a phone, served at ``/`` on the metrics listener
and written by ``fixture-agent status --html FILE``.

Plain HTML and CSS, rendered here: no script, no web font, nothing fetched from anywhere (a fixture LAN has no
internet), no build step. It reloads itself every ``REFRESH`` seconds (``<meta http-equiv="refresh">``). The plots
are inline SVG drawn from the in-memory ring of ``agent/activity.py``; written from the journal alone (the agent
not running) they are drawn from the events the journal still holds, and say so.

Everything from a device or a plant system (names, dead-letter reasons and bodies, unit ids) goes through ``_e``:
HTML-escaped, and its control characters shown as escapes. A Content-Security-Policy that allows no script at
all is the second line of defence. No secret is read here: URLs are shown without user, password or query.

This module is imported only when the page is asked for: the agent's idle memory does not pay for it.
"""

from __future__ import annotations

import html
import json
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from . import __version__
from .activity import RESULT_TYPES, SAMPLE_INTERVAL, SAMPLES_KEPT, Result, Sample
from .events.ids import clock_synchronized
from .events.journal import JournalStats, open_readonly, read_stats
from .terminal import printable, printable_bytes

if TYPE_CHECKING:
    from .config import Config
    from .runtime import Agent

REFRESH = 15  # seconds
DEAD_LETTERS_SHOWN = 20
BODY_SHOWN = 300  # bytes of a dead letter's body
PLOT_HOURS = SAMPLES_KEPT * SAMPLE_INTERVAL / 3600

#: what each subscriber state means for the person at the line
STATE_WORDS = {
    "running": "flowing",
    "registered": "starting",
    "paused": "paused: not sending until the cause below is fixed; nothing is lost, events wait in the journal",
    "holding": "holding: waiting for a condition below (events wait in the journal, the rest flows)",
    "circuit_open": "paused after repeated failures; it probes again by itself",
    "retrying": "retrying: the far end failed; it tries again with a growing delay",
    "failed": "stopped by an internal error: restart the agent (systemctl restart fixture-agent)",
    "stopped": "stopped: the agent is not running; events wait in the journal until it runs again",
}
BAD_STATES = {"paused", "holding", "circuit_open", "retrying", "failed", "stopped"}


@dataclass
class PageModel:
    """Everything the page shows, from the running agent or from the journal alone."""

    station: str
    live: bool
    generated_at: float
    clock_synced: bool
    journal_path: str
    stats: JournalStats | None
    uptime_s: float | None = None
    agent_pid: int | None = None
    health: str | None = None  # ok / degraded / failing (live only)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)  # subscriber -> where it sends (no credentials)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    sample_interval: float = SAMPLE_INTERVAL
    rates: dict[str, float] = field(default_factory=dict)  # events per minute by type, over the plot window
    published_now: int = 0  # the running total of the live samples, now


# ------------------------------------------------------------------------------------------------ collecting
def live_page(agent: "Agent") -> str:
    """The page for ``GET /`` from the running agent."""
    return render(live_model(agent))


def live_model(agent: "Agent") -> PageModel:
    cfg = agent.config
    code, health = agent.health()
    activity = getattr(agent, "activity", None)
    snap = activity.snapshot() if activity is not None else {"samples": [], "results": [], "last_message": {},
                                                             "interval": SAMPLE_INTERVAL}
    model = _from_journal(cfg, live=True)
    model.uptime_s = agent.metrics.uptime_seconds
    model.health, model.problems, model.warnings = health["status"], health["problems"], health["warnings"]
    import os

    model.agent_pid = os.getpid()
    by_name = {s["name"]: s for s in model.sources}
    sources = []
    for t in agent.sources:
        st = t.get_stats()
        kept = by_name.get(t.name, {})
        last = snap["last_message"].get(t.name)
        online = st["state"] == "connected" or bool(kept.get("online"))
        sources.append({"name": t.name, "online": online, "state": st["state"], "port": kept.get("port", ""),
                        "identity": kept.get("identity") or {}, "published": st.get("published", 0),
                        "last_at": last[0] if last else None, "last_type": last[1] if last else None,
                        "last_error": st.get("last_error") or kept.get("last_error")})
    model.sources = sources
    seen = {r.event_id for r in snap["results"]}
    merged = snap["results"] + [r for r in model.results if r.event_id not in seen]  # + other processes' (CLI)
    model.results = sorted(merged, key=lambda r: r.at, reverse=True)[:RESULTS_SHOWN]
    model.samples = snap["samples"]
    model.published_now = agent.metrics.total_events
    model.sample_interval = snap["interval"]
    model.rates = _rates_from_metrics(agent, model.uptime_s)
    return model


RESULTS_SHOWN = 20


def offline_model(cfg: "Config") -> PageModel:
    """The page's content from the journal file alone (``status --html``): read-only, the agent may be running."""
    return _from_journal(cfg, live=False)


def _from_journal(cfg: "Config", live: bool) -> PageModel:
    model = PageModel(station=cfg.agent.station, live=live, generated_at=time.time(),
                      clock_synced=clock_synchronized(), journal_path=str(cfg.journal_path), stats=None,
                      targets=_targets(cfg))
    path = Path(cfg.journal_path)
    if not path.exists():
        return model
    conn = open_readonly(path)
    try:
        model.stats = read_stats(conn, path, cfg.journal.max_bytes, cfg.journal.max_age,
                                 cfg.journal.bad_input_max_bytes)
        model.dead_letters = _dead_letters(conn)
        model.results = _journal_results(conn)
        model.sources = [{"name": name, "online": bool(s.get("online")), "state": None, "port": s.get("port", ""),
                          "identity": s.get("identity") or {}, "published": None,
                          "last_at": _ts(s.get("since")), "last_type": None, "last_error": s.get("last_error")}
                         for name, s in sorted(model.stats.sources.items())]
        if not live:
            model.samples, model.sample_interval = _journal_samples(conn, model.stats)
            model.rates = _journal_rates(conn)
    finally:
        conn.close()
    return model


def _targets(cfg: "Config") -> dict[str, str]:
    out = {}
    if cfg.sinks.wats is not None:
        out["wats"] = _clean_url(cfg.sinks.wats.url)
    if cfg.sinks.mqtt is not None:
        out["mqtt"] = f"mqtt{'s' if cfg.sinks.mqtt.tls or cfg.sinks.mqtt.ca_file else ''}://{cfg.sinks.mqtt.host}"
    if cfg.sinks.cfx is not None:
        out["cfx"] = _clean_url(cfg.sinks.cfx.url)
    return out


def _clean_url(url: str) -> str:
    """A URL as it may be shown: no user, password, query or fragment (a site may put a key in any of them)."""
    try:
        u = urlsplit(url)
        host = u.hostname or ""
        if u.port:
            host += f":{u.port}"
        return urlunsplit((u.scheme, host, u.path, "", ""))
    except ValueError:
        return "(unreadable url)"


def _ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _dead_letters(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, event_type, subscriber, origin, reason, attempts, created_at, retry_requested, "
        "substr(body, 1, ?) FROM dead_letters ORDER BY id DESC LIMIT ?", (BODY_SHOWN, DEAD_LETTERS_SHOWN)).fetchall()
    out = []
    for i, etype, sub, origin, reason, attempts, created, retry, body in rows:
        raw = body if isinstance(body, bytes) else (body or "").encode()
        out.append({"id": i, "event_type": etype, "subscriber": sub, "origin": origin, "reason": reason,
                    "attempts": attempts, "created_at": created, "retry": bool(retry), "body": raw})
    return out


def _journal_results(conn: sqlite3.Connection) -> list[Result]:
    rows = conn.execute(
        f"SELECT id, recorded_at, body FROM events WHERE type IN ({','.join('?' * len(RESULT_TYPES))}) "
        "ORDER BY seq DESC LIMIT ?", (*RESULT_TYPES, RESULTS_SHOWN)).fetchall()
    out = []
    for event_id, at, body in rows:
        try:
            doc = json.loads(body)
        except ValueError:
            continue
        p = doc.get("payload") if isinstance(doc.get("payload"), dict) else {}
        src = (doc.get("metadata") or {}).get("source", "") if isinstance(doc.get("metadata"), dict) else ""
        out.append(Result(at, str(p.get("unit_id") or p.get("serial_number") or "?"), str(p.get("result") or "?"),
                          str(src), str(p.get("part_number") or p.get("operation") or ""), str(event_id)))
    return out


def _journal_samples(conn: sqlite3.Connection, stats: JournalStats) -> tuple[list[Sample], float]:
    """Without the agent's ring: each subscriber's backlog over time as far as the journal can tell (an event it
    still has not acknowledged was in its backlog from the moment it was recorded) and the events recorded per
    minute, in ``SAMPLE_INTERVAL`` steps over the plot window. Acknowledged events are gone, so both are lower
    bounds; the page says so."""
    now = time.time()
    step = SAMPLE_INTERVAL
    start = now - SAMPLES_KEPT * step
    buckets = [start + i * step for i in range(SAMPLES_KEPT + 1)]
    recorded = dict(conn.execute("SELECT CAST((recorded_at - ?) / ? AS INTEGER) AS b, COUNT(*) FROM events "
                                 "WHERE recorded_at >= ? GROUP BY b", (start, step, start)).fetchall())
    backlog_by = {}
    for sub in stats.subscribers:
        before = conn.execute("SELECT COUNT(*) FROM events WHERE seq > ? AND recorded_at < ?",
                              (sub["cursor"], start)).fetchone()[0]
        per = dict(conn.execute("SELECT CAST((recorded_at - ?) / ? AS INTEGER) AS b, COUNT(*) FROM events "
                                "WHERE seq > ? AND recorded_at >= ? GROUP BY b",
                                (start, step, sub["cursor"], start)).fetchall())
        backlog_by[sub["name"]] = (before, per)
    samples, total = [], 0
    running = {n: b for n, (b, _) in backlog_by.items()}
    for i, at in enumerate(buckets):
        total += recorded.get(i - 1, 0) if i else 0
        for n, (_, per) in backlog_by.items():
            running[n] += per.get(i - 1, 0) if i else 0
        samples.append(Sample(at, dict(running), total))
    return samples, step


def _journal_rates(conn: sqlite3.Connection) -> dict[str, float]:
    since = time.time() - 3600
    return {t: n / 60.0 for t, n in conn.execute(
        "SELECT type, COUNT(*) FROM events WHERE recorded_at >= ? GROUP BY type ORDER BY type", (since,))}


def _rates_from_metrics(agent: "Agent", uptime: float) -> dict[str, float]:
    minutes = max(uptime / 60.0, 1.0)
    with agent.metrics._lock:
        published = dict(agent.metrics.published)
    return {t: n / minutes for t, n in sorted(published.items())}


# ------------------------------------------------------------------------------------------------ rendering
def _e(value: Any) -> str:
    """Text from anywhere, safe in HTML text and in a quoted attribute: control characters shown as escapes."""
    return html.escape(printable("" if value is None else value), quote=True)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    utc = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{_e(utc)}" title="{_e(utc)}">{_age(now - ts)} ago</time>'


def _mb(n: int | float) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f3f4f6;color:#111}
header{background:#1f2937;color:#fff;padding:10px 14px}
header h1{margin:0;font-size:1.25em;word-break:break-all}
header .meta{font-size:.85em;opacity:.85;display:flex;flex-wrap:wrap;gap:4px 14px;margin-top:4px}
main{padding:8px;display:grid;gap:8px;grid-template-columns:repeat(auto-fit,minmax(min(100%,440px),1fr))}
section{background:#fff;border-radius:8px;padding:10px 12px;box-shadow:0 1px 2px rgba(0,0,0,.08);min-width:0}
section.wide{grid-column:1/-1}
h2{font-size:1em;margin:0 0 6px;text-transform:uppercase;letter-spacing:.04em;color:#374151}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #e5e7eb;vertical-align:top}
th{font-weight:600;color:#4b5563;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.pill{display:inline-block;border-radius:10px;padding:0 8px;font-size:.85em;font-weight:600;white-space:nowrap}
.ok{background:#d1fae5;color:#065f46}.warn{background:#fef3c7;color:#92400e}.bad{background:#fee2e2;color:#991b1b}
.muted{color:#6b7280;font-size:.88em}
.why{margin:2px 0 0;color:#92400e;font-size:.9em;overflow-wrap:anywhere}
.banner{grid-column:1/-1;border-radius:8px;padding:8px 12px;font-weight:600}
.banner ul{margin:4px 0 0;padding-left:18px;font-weight:400}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f9fafb;border:1px solid #e5e7eb;padding:4px;margin:4px 0;
font-size:.82em;max-height:8em;overflow:auto}
.bar{height:12px;background:#e5e7eb;border-radius:6px;overflow:hidden}
.bar>span{display:block;height:100%;background:#2563eb}
.bar.high>span{background:#dc2626}
figure.plot{margin:0 0 8px}
figure.plot svg{width:100%;height:90px;display:block;background:#fafafa;border:1px solid #e5e7eb;border-radius:4px}
.axis{display:flex;justify-content:space-between;font-size:.8em;color:#6b7280}
tr.detail td{border-top:0;padding-top:0}
time{white-space:nowrap}
.legend span{margin-right:10px;font-size:.85em;white-space:nowrap}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
footer{padding:6px 14px 14px;font-size:.8em;color:#6b7280}
"""
COLOURS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"]


def render(m: PageModel) -> str:
    now = m.generated_at
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # no script may run, whatever a device managed to put in a field; styles and images only from this page
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
    ]
    if m.live:
        parts.append(f'<meta http-equiv="refresh" content="{REFRESH}">')
    parts += [f"<title>{_e(m.station)} · fixture-agent</title>", f"<style>{CSS}</style></head><body>"]
    parts.append(_header(m))
    parts.append("<main>")
    parts.append(_banner(m))
    parts.append(_subscribers(m, now))
    parts.append(_journal(m))
    parts.append(_plots(m))
    parts.append(_sources(m, now))
    parts.append(_results(m, now))
    parts.append(_counters(m))
    parts.append(_rates(m))
    parts.append(_dead_letters_html(m, now))
    parts.append("</main>")
    gen = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    how = (f"served by the running agent; reloads every {REFRESH} s" if m.live else
           "written from the journal by fixture-agent status --html (a snapshot: it does not reload)")
    parts.append(f'<footer id="generated" data-live="{str(m.live).lower()}">Generated {_e(gen)}, {_e(how)}. '
                 f"Journal {_e(m.journal_path)}. Metrics for Prometheus at /metrics, health at /healthz.</footer>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _header(m: PageModel) -> str:
    if m.live:
        running = f'<span id="agent">agent running (pid {m.agent_pid})</span>'
        uptime = f'<span id="uptime" data-seconds="{m.uptime_s:.0f}">up {_age(m.uptime_s)}</span>'
    else:
        running = f'<span id="agent">agent {"running, pid " + str(m.agent_pid) if m.agent_pid else "not running"}</span>'
        uptime = '<span id="uptime">uptime: -</span>'
    clock = (f'<span id="clock" class="pill {"ok" if m.clock_synced else "bad"}" data-synced="{str(m.clock_synced).lower()}">'
             f'{"clock synchronised" if m.clock_synced else "clock NOT synchronised (no NTP yet): WATS reports wait"}'
             "</span>")
    return (f'<header><h1 id="station">{_e(m.station)}</h1><div class="meta">'
            f'<span id="version">fixture-agent {_e(__version__)}</span>{running}{uptime}{clock}</div></header>')


def _banner(m: PageModel) -> str:
    if m.stats is None:
        return f'<div class="banner warn" id="health" data-status="no-journal">No journal yet at {_e(m.journal_path)}</div>'
    if not m.live:
        return ""
    cls = {"ok": "ok", "degraded": "warn"}.get(m.health or "", "bad")
    text = {"ok": "All flowing", "degraded": "Needs a look", "failing": "FAILING"}.get(m.health or "", m.health)
    items = [f"<li>{_e(p)}</li>" for p in m.problems + m.warnings]
    return (f'<div class="banner {cls}" id="health" data-status="{_e(m.health)}">{_e(text)}'
            + (f"<ul>{''.join(items)}</ul>" if items else "") + "</div>")


def _subscribers(m: PageModel, now: float) -> str:
    rows = []
    for s in (m.stats.subscribers if m.stats else []):
        state = s["state"] or "-"
        cls = "bad" if state in ("failed", "paused", "stopped") else ("warn" if state in BAD_STATES else "ok")
        why = ""
        if state in BAD_STATES:
            label = "Last error before it stopped" if state == "stopped" else "Why"
            why = f'<p class="why">{_e(STATE_WORDS.get(state, state))}' + (
                f'<br>{label}: <span class="reason">{_e(s["last_error"])}</span>' if s["last_error"] else "") + "</p>"
        elif s["last_error"]:
            why = f'<p class="muted">last error: <span class="reason">{_e(s["last_error"])}</span></p>'
        target = m.targets.get(s["name"])
        rows.append(
            f'<tr class="subscriber" data-name="{_e(s["name"])}" data-state="{_e(state)}" data-backlog="{s["backlog"]}">'
            f'<td><b>{_e(s["name"])}</b>' + (f'<br><span class="muted">{_e(target)}</span>' if target else "")
            + f'</td><td><span class="pill {cls} state">{_e(state)}</span></td>'
            f'<td class="num backlog">{s["backlog"]:,}</td><td class="num oldest">{_age(s["oldest_unacked_age_s"])}</td>'
            f'<td class="num">{s["dead_letters"]}</td></tr>')
        if why:  # on a row of its own: the words need the width, on a phone most of all
            rows.append(f'<tr class="detail" data-for="{_e(s["name"])}"><td colspan="5">{why}</td></tr>')
    if not rows:
        rows.append('<tr><td colspan="5" class="muted">no subscribers (no sink configured yet)</td></tr>')
    return ('<section id="subscribers" class="wide"><h2>Uplinks (subscribers)</h2><div class="scroll"><table>'
            "<tr><th>Name</th><th>State</th><th>Backlog</th><th>Oldest unacked</th><th>Dead letters</th></tr>"
            + "".join(rows) + "</table></div></section>")


def _journal(m: PageModel) -> str:
    st = m.stats
    if st is None:
        return ""
    fill = st.used_bytes / st.max_bytes if st.max_bytes else 0.0
    extra = []
    if st.bad_input_bytes:
        extra.append(f"bad input {_mb(st.bad_input_bytes)} of its {_mb(st.bad_input_max_bytes)} share")
    if st.evicted:
        extra.append("evicted " + ", ".join(f"{_e(k)}={v}" for k, v in sorted(st.evicted.items())))
    if st.refused:
        extra.append('<b class="why">refused ' + ", ".join(f"{_e(k)}={v}" for k, v in sorted(st.refused.items())) + "</b>")
    if st.stale_results:
        extra.append(f'<b class="why">{st.stale_results} undelivered results older than journal.max_age</b>')
    if st.corrupt_files:
        extra.append(f'<b class="why">journal was corrupt and moved aside: {_e(", ".join(st.corrupt_files))}</b>')
    return (f'<section id="journal"><h2>Journal</h2>'
            f'<div class="bar{" high" if fill > 0.8 else ""}" title="{fill:.0%}"><span style="width:{min(fill, 1) * 100:.1f}%">'
            f'</span></div><p id="journal-fill" data-fill="{fill:.4f}">{fill:.1%} full: {_mb(st.used_bytes)} of '
            f'{_mb(st.max_bytes)} (journal.max_bytes); {st.events:,} events; {_mb(st.file_bytes)} on disk; '
            f'{st.dead_letters} dead letters</p>'
            + "".join(f'<p class="muted">{x}</p>' for x in extra) + "</section>")


def _polyline(points: list[tuple[float, float]], t0: float, t1: float, vmax: float, colour: str,
              w: int, h: int) -> str:
    if not points:
        return ""
    span = max(t1 - t0, 1.0)
    pts = " ".join(f"{(t - t0) / span * w:.1f},{h - (v / vmax) * (h - 4) - 2:.1f}" for t, v in points)
    return (f'<polyline fill="none" stroke="{colour}" stroke-width="2" vector-effect="non-scaling-stroke" '
            f'points="{pts}"/>')


def _plot(pid: str, title: str, series: dict[str, list[tuple[float, float]]], t0: float, t1: float,
          unit: str) -> str:
    """A line plot as inline SVG, stretched to the width (``preserveAspectRatio="none"``, strokes kept 2 px); its
    labels are HTML around it, so they stay readable at any width."""
    w, h = 600, 100
    vmax = max([v for pts in series.values() for _, v in pts] + [1.0])
    lines = "".join(_polyline(pts, t0, t1, vmax, COLOURS[i % len(COLOURS)], w, h)
                    for i, (_, pts) in enumerate(series.items()))
    hours = (t1 - t0) / 3600
    grid = "".join(f'<line x1="0" y1="{y}" x2="{w}" y2="{y}" stroke="#e5e7eb" vector-effect="non-scaling-stroke"/>'
                   for y in (2, h / 2, h - 1))
    legend = "".join(f'<span><i style="background:{COLOURS[i % len(COLOURS)]}"></i>{_e(n)}</span>'
                     for i, n in enumerate(series))
    npoints = sum(len(p) for p in series.values())
    return (f'<figure class="plot" id="{pid}" data-points="{npoints}" data-max="{vmax:g}">'
            f'<figcaption><b>{_e(title)}</b> <span class="muted">max {vmax:,.0f} {_e(unit)}</span></figcaption>'
            f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none" role="img" aria-label="{_e(title)}">'
            f'{grid}{lines}</svg><div class="axis"><span>{hours:.1f} h ago</span><span>now</span></div>'
            f'<div class="legend">{legend}</div></figure>')


def _plots(m: PageModel) -> str:
    samples = list(m.samples)
    if m.live and m.stats is not None:  # the present as the last point, so a fresh agent draws a line already
        samples.append(Sample(m.generated_at, {s["name"]: s["backlog"] for s in m.stats.subscribers},
                              m.published_now))
    if not samples:
        return ""
    t1 = m.generated_at
    t0 = min(samples[0].at, t1 - 3600)
    names = sorted({n for s in samples for n in s.backlog})
    backlog = {n: [(s.at, float(s.backlog.get(n, 0))) for s in samples] for n in names}
    per_min: list[tuple[float, float]] = []  # a step per interval: the rate is an average over it
    for a, b in zip(samples, samples[1:]):
        if b.at > a.at:
            rate = max(0, b.published - a.published) / (b.at - a.at) * 60
            per_min += [(a.at, rate), (b.at, rate)]
    note = ("from the agent's memory (since it started, at most "
            f"{PLOT_HOURS:.0f} h, one sample a {m.sample_interval:.0f} s)" if m.live else
            "from the events the journal still holds (acknowledged events are deleted: a lower bound)")
    return ('<section id="plots" class="wide"><h2>Last hours</h2>'
            + _plot("plot-backlog", "Backlog per uplink", backlog, t0, t1, "events")
            + _plot("plot-rate", "Events per minute", {"events/min": per_min}, t0, t1, "/min")
            + f'<p class="muted">{_e(note)}</p></section>')


def _sources(m: PageModel, now: float) -> str:
    rows = []
    for s in m.sources:
        online = bool(s["online"])
        ident = " ".join(str(v) for v in (s.get("identity") or {}).values())
        last = (_when(s["last_at"], now) + (f' <span class="muted">{_e(s["last_type"])}</span>' if s["last_type"] else "")
                if s["last_at"] else "-")
        rows.append(f'<tr class="source" data-name="{_e(s["name"])}" data-online="{str(online).lower()}">'
                    f'<td><b>{_e(s["name"])}</b><br><span class="muted">{_e(s.get("port"))} {_e(ident)}</span></td>'
                    f'<td><span class="pill {"ok" if online else "bad"}">{"online" if online else "offline"}</span></td>'
                    f'<td class="last">{last}</td></tr>')
        if s.get("last_error") and not online:
            rows.append(f'<tr class="detail" data-for="{_e(s["name"])}"><td colspan="3"><p class="why">'
                        f'{_e(s["last_error"])}</p></td></tr>')
    if not rows:
        rows.append('<tr><td colspan="3" class="muted">no sources</td></tr>')
    head = "Last message" if m.live else "Last seen"
    return ('<section id="sources"><h2>Sources</h2><div class="scroll"><table>'
            f"<tr><th>Source</th><th>State</th><th>{head}</th></tr>" + "".join(rows) + "</table></div></section>")


def _results(m: PageModel, now: float) -> str:
    rows = []
    for r in m.results:
        ok = r.result.lower() in ("pass", "passed", "p")
        cls = "ok" if ok else ("warn" if r.result.lower() in ("skipped", "aborted") else "bad")
        rows.append(f'<tr class="result" data-result="{_e(r.result)}"><td>{_e(r.unit_id)}'
                    + (f'<br><span class="muted">{_e(r.what)}</span>' if r.what else "")
                    + f'</td><td><span class="pill {cls}">{_e(r.result.upper())}</span></td>'
                    f"<td>{_when(r.at, now)}</td><td class=\"muted\">{_e(r.source)}</td></tr>")
    if not rows:
        rows.append('<tr><td colspan="4" class="muted">no results yet</td></tr>')
    return ('<section id="results"><h2>Last results</h2><div class="scroll"><table>'
            "<tr><th>Unit</th><th>Result</th><th>When</th><th>From</th></tr>" + "".join(rows)
            + "</table></div></section>")


def _counters(m: PageModel) -> str:
    counters = m.stats.counters if m.stats else {}
    rows = [f'<tr class="counter" data-asset="{_e(a)}"><td>{_e(a)}</td><td class="num">{_e(c.get("running_count"))}</td>'
            f'<td class="num">{_e(c.get("total_count"))}</td></tr>' for a, c in sorted(counters.items())]
    if not rows:
        rows.append('<tr><td colspan="3" class="muted">no counters</td></tr>')
    return ('<section id="counters"><h2>Fixture counters</h2><div class="scroll"><table>'
            "<tr><th>Asset</th><th>Running</th><th>Total</th></tr>" + "".join(rows) + "</table></div></section>")


def _rates(m: PageModel) -> str:
    if not m.rates:
        return ""
    what = "since the agent started" if m.live else "over the last hour, of the events still in the journal"
    rows = [f'<tr class="rate" data-type="{_e(t)}"><td>{_e(t)}</td><td class="num">{r:.1f}</td></tr>'
            for t, r in sorted(m.rates.items())]
    return (f'<section id="rates"><h2>Events per minute</h2><p class="muted">{_e(what)}</p><div class="scroll"><table>'
            "<tr><th>Type</th><th>/min</th></tr>" + "".join(rows) + "</table></div></section>")


def _dead_letters_html(m: PageModel, now: float) -> str:
    total = m.stats.dead_letters if m.stats else 0
    items = []
    for d in m.dead_letters:
        who = f"for {_e(d['subscriber'])}" if d["subscriber"] else f"bad input from {_e(d['origin'])}"
        body = printable_bytes(d["body"], BODY_SHOWN) if d["body"] else ""
        items.append(
            f'<tr class="dead-letter" data-id="{d["id"]}"><td class="num">#{d["id"]}</td>'
            f'<td>{_e(d["event_type"] or "-")} <span class="muted">{who}'
            f'{" · retry requested" if d["retry"] else ""}</span>'
            f'<p class="why reason">{_e(d["reason"])}</p>'
            + (f'<pre class="body">{html.escape(body, quote=True)}</pre>' if body else "")
            + f"</td><td>{_when(d['created_at'], now)}</td></tr>")
    if not items:
        items.append('<tr><td colspan="3" class="muted">none</td></tr>')
    more = (f'<p class="muted">newest {len(m.dead_letters)} of {total}; all of them: fixture-agent dlq list</p>'
            if total > len(m.dead_letters) else '<p class="muted">fixture-agent dlq list shows them; dlq retry / drop act on them</p>')
    return (f'<section id="dead-letters" class="wide" data-count="{total}"><h2>Dead letters ({total})</h2>'
            '<div class="scroll"><table><tr><th>Id</th><th>What and why</th><th>When</th></tr>'
            + "".join(items) + f"</table></div>{more}</section>")


def write_html(cfg: "Config", path: Path, agent_pid: int | None = None) -> PageModel:
    """``fixture-agent status --html FILE``: the page from the journal, written atomically."""
    import os

    model = offline_model(cfg)
    model.agent_pid = agent_pid
    text = render(model)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return model
