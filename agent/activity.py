"""What the status page shows that the journal does not keep: a ring of samples in memory, each source's last
message and the last results.

The journal deletes what every subscriber acknowledged, so once everything flows it holds neither the last results
nor a history of the backlog; and the page must not add writes to an SD card to draw a plot. This module keeps a
bounded amount in memory instead (``SAMPLES_KEPT`` samples, ``RESULTS_KEPT`` results, one entry per source name)
and forgets it with the process, as Prometheus counters do. It is imported at start (it is small); the page that
draws it (``agent/statuspage.py``) is imported only when someone asks for the page.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .events.journal import JournalStats
    from .events.model import Event
    from .events.telemetry import EventMetrics

#: one sample every this many seconds, ``SAMPLES_KEPT`` of them: six hours
SAMPLE_INTERVAL = 60.0
SAMPLES_KEPT = 360
RESULTS_KEPT = 20
RESULT_TYPES = ("test.result", "inspection.result")


class Sample(NamedTuple):
    at: float  # wall time, for the plot's axis
    backlog: dict[str, int]  # per subscriber
    published: int  # events made durable since the agent started (a running total; per minute is its slope)


class Result(NamedTuple):
    at: float
    unit_id: str
    result: str
    source: str
    what: str  # part number or operation, when the result names one
    event_id: str = ""


class Activity:
    """A lifecycle component: ``start`` samples at once and then every ``interval`` seconds on its own thread;
    ``on_event`` is the bus's callback (``EventBus.on_event``), cheap on the publisher's thread."""

    name = "activity"

    def __init__(self, metrics: "EventMetrics", stats: Callable[[], "JournalStats"], *,
                 interval: float = SAMPLE_INTERVAL, keep: int = SAMPLES_KEPT) -> None:
        self._metrics = metrics
        self._stats = stats
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=keep)
        self.results: deque[Result] = deque(maxlen=RESULTS_KEPT)
        self.last_message: dict[str, tuple[float, str]] = {}  # source name -> (when, event type)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ feeding
    def on_event(self, event: "Event") -> None:
        now = time.time()
        t = event.event_type
        self.last_message[event.source] = (now, t)
        if t in RESULT_TYPES:
            p = event.payload if isinstance(event.payload, dict) else {}
            what = p.get("part_number") or p.get("operation") or p.get("recipe") or ""
            self.results.append(Result(now, str(p.get("unit_id") or p.get("serial_number") or "?"),
                                       str(p.get("result") or "?"), event.source, str(what), event.id))

    def sample(self) -> Sample:
        """Take one sample now (the thread does this every ``interval``; a test may call it)."""
        stats = self._stats()
        s = Sample(time.time(), {sub["name"]: int(sub["backlog"]) for sub in stats.subscribers},
                   self._metrics.total_events)
        self.samples.append(s)
        return s

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="activity-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a journal closing under us; a plot with a gap is fine
                pass
            if self._stop.wait(self.interval):
                return

    # ------------------------------------------------------------------------------------------ reading
    def snapshot(self) -> dict[str, Any]:
        """Copies (the deques move under a reader), for the page."""
        return {"samples": list(self.samples), "results": list(self.results)[::-1],
                "last_message": dict(self.last_message), "interval": self.interval}
