"""Transports: things outside the bus that feed events into it (sources are transports).

``publish_event`` returns only once the event is durable, so a transport can acknowledge its own input (MQTT
PUBACK, CFX Accepted, a serial ACK) right after it returns. With no bus attached it raises: the pyWATS transport
dropped the event with a warning.
"""

from __future__ import annotations

import enum
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bus import EventBus
    from .model import Event

log = logging.getLogger(__name__)


class TransportState(str, enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    ERROR = "error"


class BaseTransport(ABC):
    def __init__(self, name: str) -> None:
        self._name = name
        self._bus: "EventBus | None" = None
        self._state = TransportState.DISCONNECTED
        self._on_error: list[Callable[[BaseException], None]] = []
        self._published = 0
        self._errors = 0
        self._last_error: str | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> TransportState:
        return self._state

    @property
    def is_connected(self) -> bool:
        return self._state is TransportState.CONNECTED

    def set_event_bus(self, event_bus: "EventBus") -> None:
        self._bus = event_bus

    def _set_state(self, state: TransportState) -> None:
        self._state = state

    def _report_error(self, error: BaseException) -> None:
        self._errors += 1
        self._last_error = f"{type(error).__name__}: {error}"

    def publish_event(self, event: "Event") -> "Event":
        """Journal ``event`` through the bus; returns once it is durable."""
        if self._bus is None:
            raise RuntimeError(f"transport {self._name!r} has no event bus; register it with bus.register_transport()")
        out = self._bus.publish(event)
        self._published += 1
        return out

    def get_subscribed_topics(self) -> list[str]:
        return []

    def get_stats(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "state": self._state.value,
            "published": self._published,
            "errors": self._errors,
            "last_error": self._last_error,
        }

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...


class ThreadedTransport(BaseTransport):
    """A transport whose work is a loop on its own thread (serial readers, pollers, the demo simulator).

    Subclasses implement ``run(stop)`` and return when ``stop`` is set. An exception from ``run`` (a device
    unplugged, a port that is not there yet) is reported and ``run`` is started again after an exponential backoff
    with jitter; ``mark_connected()`` resets the backoff once the device answers again. One bad moment never ends a
    source for good, and a long outage costs one log line per attempt, not a traceback.
    """

    def __init__(self, name: str, retry_min: float = 0.5, retry_max: float = 30.0) -> None:
        super().__init__(name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self.retry_min = retry_min
        self.retry_max = retry_max

    @abstractmethod
    def run(self, stop: threading.Event) -> None: ...

    def mark_connected(self) -> None:
        self._failures = 0
        self._set_state(TransportState.CONNECTED)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, name=f"source-{self.name}", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        from .backoff import backoff_delay

        while not self._stop.is_set():
            try:
                self._set_state(TransportState.CONNECTING)
                self.run(self._stop)
            except Exception as e:  # noqa: BLE001 - a source must survive its own bugs and its device's
                self._failures += 1
                self._set_state(TransportState.RECONNECTING)
                self._report_error(e)
                delay = backoff_delay(self._failures, initial=self.retry_min, maximum=self.retry_max)
                log.warning("source %s: %s: %s; retrying in %.1fs", self.name, type(e).__name__, e, delay)
                log.debug("source %s failure", self.name, exc_info=True)
                if self._stop.wait(delay):
                    break
        self._set_state(TransportState.DISCONNECTED)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
