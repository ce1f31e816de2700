"""In-process counters (``EventMetrics``) and their Prometheus text rendering.

Counters live in memory and restart at zero with the process, as Prometheus expects; what must survive a restart
(evictions, refusals, dead letters, backlog) is read from the journal at scrape time instead.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .journal import JournalStats
    from .model import Event


@dataclass
class EventStats:
    """Delivery statistics for one event type, over all subscribers."""

    event_type: str
    count: int = 0
    success_count: int = 0
    error_count: int = 0
    total_latency_ms: float = 0.0
    min_latency_ms: float | None = None
    max_latency_ms: float | None = None
    last_seen: datetime | None = None

    @property
    def avg_latency_ms(self) -> float:
        return self.total_latency_ms / self.count if self.count else 0.0

    @property
    def success_rate(self) -> float:
        return self.success_count / self.count if self.count else 1.0

    def record(self, latency_ms: float, success: bool) -> None:
        self.count += 1
        if success:
            self.success_count += 1
        else:
            self.error_count += 1
        self.total_latency_ms += latency_ms
        self.min_latency_ms = latency_ms if self.min_latency_ms is None else min(self.min_latency_ms, latency_ms)
        self.max_latency_ms = latency_ms if self.max_latency_ms is None else max(self.max_latency_ms, latency_ms)
        self.last_seen = datetime.now(timezone.utc)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["avg_latency_ms"] = self.avg_latency_ms
        d["success_rate"] = self.success_rate
        d["last_seen"] = self.last_seen.isoformat() if self.last_seen else None
        return d


class EventMetrics:
    """Thread-safe counters the bus and sources feed; ``/metrics`` renders them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._started = time.monotonic()
            self._stats: dict[str, EventStats] = {}
            self.published: dict[str, int] = defaultdict(int)
            self.delivered: dict[tuple[str, str], int] = defaultdict(int)
            self.failed: dict[tuple[str, str], int] = defaultdict(int)
            self.dead_lettered: dict[str, int] = defaultdict(int)
            self.bad_input: dict[str, int] = defaultdict(int)
            self.publish_refused: dict[str, int] = defaultdict(int)
            self.coalesced: dict[tuple[str, str], int] = defaultdict(int)
            self.flagged: dict[tuple[str, str], int] = defaultdict(int)

    # --- what the bus records ------------------------------------------------------------------------------
    def record_published(self, event_type: str, n: int = 1) -> None:
        with self._lock:
            self.published[event_type] += n

    def record_refused(self, event_type: str, n: int = 1) -> None:
        with self._lock:
            self.publish_refused[event_type] += n

    def record_delivery(self, subscriber: str, event_type: str, latency_ms: float, success: bool) -> None:
        with self._lock:
            (self.delivered if success else self.failed)[(subscriber, event_type)] += 1
            st = self._stats.get(event_type)
            if st is None:
                st = self._stats[event_type] = EventStats(event_type)
            st.record(latency_ms, success)

    def record_coalesced(self, subscriber: str, event_type: str, n: int = 1) -> None:
        """Events a subscriber skipped because a later event of the same key superseded them."""
        with self._lock:
            self.coalesced[(subscriber, event_type)] += n

    def record_dead_letter(self, subscriber: str) -> None:
        with self._lock:
            self.dead_lettered[subscriber] += 1

    def record_bad_input(self, origin: str) -> None:
        """A source rejected input (garbled line, malformed JSON); ``origin`` names the source kind."""
        with self._lock:
            self.bad_input[origin] += 1

    def record_flagged(self, origin: str, kind: str) -> None:
        """Data taken but worth a look (``stale_counters``: older than what was already journaled for the asset;
        ``total_went_down``: an absolute total lower than the one last sent)."""
        with self._lock:
            self.flagged[(origin, kind)] += 1

    # --- the seed's API ------------------------------------------------------------------------------------
    def record_start(self, event: "Event") -> float:
        return time.perf_counter()

    def record_end(self, event: "Event", success: bool, started: float | None = None,
                   subscriber: str = "-") -> None:
        latency = (time.perf_counter() - started) * 1000.0 if started is not None else 0.0
        self.record_delivery(subscriber, event.event_type, latency, success)

    def record_error(self, event: "Event", subscriber: str = "-") -> None:
        self.record_delivery(subscriber, event.event_type, 0.0, False)

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self._started

    @property
    def total_events(self) -> int:
        return sum(self.published.values())

    @property
    def total_errors(self) -> int:
        return sum(self.failed.values())

    @property
    def events_per_second(self) -> float:
        up = self.uptime_seconds
        return self.total_events / up if up > 0 else 0.0

    def get_stats(self, event_type: str) -> EventStats | None:
        return self._stats.get(event_type)

    def get_all_stats(self) -> dict[str, EventStats]:
        with self._lock:
            return dict(self._stats)

    def get_summary(self) -> dict[str, Any]:
        return {
            "uptime_seconds": round(self.uptime_seconds, 3),
            "total_events": self.total_events,
            "total_errors": self.total_errors,
            "events_per_second": round(self.events_per_second, 3),
            "dead_lettered": sum(self.dead_lettered.values()),
            "bad_input": sum(self.bad_input.values()),
        }


#: the help text of the gauges the runtime adds (``extra``)
EXTRA_HELP = {"clock_synchronized": "1 when the kernel says NTP has synchronised the clock (adjtimex), else 0; "
                                    "WATS reports wait while it is 0."}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kw: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in kw.items()) + "}"


def render_prometheus(metrics: EventMetrics, stats: "JournalStats | None", extra: dict[str, float] | None = None,
                      info: dict[str, str] | None = None) -> str:
    """Prometheus text exposition (version 0.0.4) of the counters plus the journal's gauges. ``info`` labels a
    constant ``fixture_agent_info`` sample (version, station), so a fleet dashboard can name each target."""
    out: list[str] = []

    def family(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP fixture_agent_{name} {help_}")
        out.append(f"# TYPE fixture_agent_{name} {kind}")
        for labels, value in samples:
            out.append(f"fixture_agent_{name}{labels} {value:g}")

    with metrics._lock:
        published = sorted(metrics.published.items())
        delivered = sorted(metrics.delivered.items())
        failed = sorted(metrics.failed.items())
        dead = sorted(metrics.dead_lettered.items())
        bad = sorted(metrics.bad_input.items())
        refused = sorted(metrics.publish_refused.items())
        coalesced = sorted(metrics.coalesced.items())
        flagged = sorted(metrics.flagged.items())
    family("events_published_total", "counter", "Events made durable in the journal, by type.",
           [(_labels(type=t), n) for t, n in published])
    family("events_delivered_total", "counter", "Events a subscriber handled, by subscriber and type.",
           [(_labels(subscriber=s, type=t), n) for (s, t), n in delivered])
    family("events_failed_total", "counter", "Failed delivery attempts, by subscriber and type.",
           [(_labels(subscriber=s, type=t), n) for (s, t), n in failed])
    family("events_dead_lettered_total", "counter", "Events moved to the dead-letter table, by subscriber.",
           [(_labels(subscriber=s), n) for s, n in dead])
    family("events_coalesced_total", "counter",
           "Events a subscriber skipped because a later one superseded them (e.g. absolute counters).",
           [(_labels(subscriber=s, type=t), n) for (s, t), n in coalesced])
    family("bad_input_total", "counter", "Input a source could not turn into an event, by origin.",
           [(_labels(origin=o), n) for o, n in bad])
    family("flagged_total", "counter", "Data taken but flagged (stale_counters, total_went_down), by origin and kind.",
           [(_labels(origin=o, kind=k), n) for (o, k), n in flagged])
    family("publish_refused_total", "counter", "Publishes refused in this process (journal full, invalid), by type.",
           [(_labels(type=t), n) for t, n in refused])
    family("uptime_seconds", "gauge", "Seconds since the agent started.", [("", round(metrics.uptime_seconds, 3))])
    if stats is not None:
        family("journal_events", "gauge", "Events in the journal.", [("", stats.events)])
        family("journal_bytes", "gauge", "Bytes of stored events and dead letters (what max_bytes bounds).",
               [("", stats.used_bytes)])
        family("journal_max_bytes", "gauge", "The configured journal bound.", [("", stats.max_bytes)])
        family("journal_file_bytes", "gauge", "Size of the journal file and its WAL on disk.", [("", stats.file_bytes)])
        family("dead_letters", "gauge", "Rows in the dead-letter table.", [("", stats.dead_letters)])
        family("journal_evicted_total", "counter", "Evictable events dropped, by reason and type (persistent).",
               [(_labels(reason=k.split(":", 1)[0], type=k.split(":", 1)[1]), v) for k, v in sorted(stats.evicted.items())
                if not k.startswith("bad_input:")])
        family("bad_input_evicted_total", "counter",
               "Bad-input dead letters deleted, oldest first, to hold their share of the journal (persistent), by origin.",
               [(_labels(origin=k.split(":", 1)[1]), v) for k, v in sorted(stats.evicted.items())
                if k.startswith("bad_input:")])
        family("journal_bad_input_bytes", "gauge", "Bytes of bad input kept as dead letters (part of journal_bytes).",
               [("", stats.bad_input_bytes)])
        if stats.bad_input_max_bytes:
            family("journal_bad_input_max_bytes", "gauge", "The share of max_bytes bad input may take.",
                   [("", stats.bad_input_max_bytes)])
        family("journal_refused_total", "counter", "Events refused because the journal was full, by type (persistent).",
               [(_labels(type=k), v) for k, v in sorted(stats.refused.items())])
        family("journal_stale_results", "gauge", "Undelivered result-class events older than max_age.",
               [("", stats.stale_results)])
        family("subscriber_backlog", "gauge", "Events after the subscriber's cursor.",
               [(_labels(subscriber=s["name"]), s["backlog"]) for s in stats.subscribers])
        family("subscriber_oldest_unacked_seconds", "gauge", "Age of the oldest event the subscriber has not acknowledged.",
               [(_labels(subscriber=s["name"]), s["oldest_unacked_age_s"]) for s in stats.subscribers])
    if info:
        family("info", "gauge", "Always 1; the labels say which agent this is.", [(_labels(**info), 1)])
    for name, value in (extra or {}).items():
        family(name, "gauge", EXTRA_HELP.get(name, name.replace("_", " ") + "."), [("", value)])
    return "\n".join(out) + "\n"
