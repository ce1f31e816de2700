"""Transports: things outside the bus that feed events into it (sources are transports).

``publish_event`` returns only once the event is durable, so a transport can acknowledge its own input (MQTT
PUBACK, CFX Accepted, a serial ACK) right after it returns. With no bus attached it raises: the pyWATS transport
dropped the event with a warning.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
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
        self._on_connect: list[Callable[[], None]] = []
        self._on_disconnect: list[Callable[[], None]] = []
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

    def on_connect(self, callback: Callable[[], None]) -> None:
        self._on_connect.append(callback)

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        self._on_disconnect.append(callback)

    def on_error(self, callback: Callable[[BaseException], None]) -> None:
        self._on_error.append(callback)

    def _set_state(self, state: TransportState) -> None:
        previous, self._state = self._state, state
        if state is previous:
            return
        callbacks = self._on_connect if state is TransportState.CONNECTED else (
            self._on_disconnect if previous is TransportState.CONNECTED else [])
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001 - a callback must not break the transport
                log.exception("transport %s: state callback failed", self._name)

    def _report_error(self, error: BaseException) -> None:
        self._errors += 1
        self._last_error = f"{type(error).__name__}: {error}"
        for cb in self._on_error:
            try:
                cb(error)
            except Exception:  # noqa: BLE001
                log.exception("transport %s: error callback failed", self._name)

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


class MockTransport(BaseTransport):
    """A transport for tests: ``inject_event`` feeds the bus exactly as a real source would."""

    def __init__(self, name: str = "mock") -> None:
        super().__init__(name)
        self.reset()

    def reset(self) -> None:
        self._fail_on_start = False
        self._fail_on_inject = False
        self._inject_delay = 0.0
        self.clear()

    def clear(self) -> None:
        self._injected: list["Event"] = []
        self._published_events: list["Event"] = []

    @property
    def injected_events(self) -> list["Event"]:
        return list(self._injected)

    @property
    def published_events(self) -> list["Event"]:
        """Events the bus accepted (durable) from this transport."""
        return list(self._published_events)

    @property
    def event_count(self) -> int:
        return len(self._published_events)

    def configure_failure(self, fail_on_start: bool = False, fail_on_inject: bool = False) -> None:
        self._fail_on_start = fail_on_start
        self._fail_on_inject = fail_on_inject

    def set_inject_delay(self, delay: float) -> None:
        self._inject_delay = delay

    def start(self) -> None:
        self._set_state(TransportState.CONNECTING)
        if self._fail_on_start:
            self._set_state(TransportState.ERROR)
            raise ConnectionError(f"mock transport {self.name!r} configured to fail on start")
        self._set_state(TransportState.CONNECTED)

    def stop(self) -> None:
        self._set_state(TransportState.DISCONNECTED)

    def inject_event(self, event: "Event") -> "Event":
        self._injected.append(event)
        if self._inject_delay:
            time.sleep(self._inject_delay)
        if self._fail_on_inject:
            err = ConnectionError(f"mock transport {self.name!r} configured to fail on inject")
            self._report_error(err)
            raise err
        out = self.publish_event(event)
        self._published_events.append(out)
        return out

    def inject_events(self, events: list["Event"]) -> list["Event"]:
        return [self.inject_event(e) for e in events]

    def simulate_disconnect(self) -> None:
        self._set_state(TransportState.DISCONNECTED)

    def simulate_reconnect(self) -> None:
        self._set_state(TransportState.RECONNECTING)
        self._set_state(TransportState.CONNECTED)

    def simulate_error(self, error: BaseException) -> None:
        self._set_state(TransportState.ERROR)
        self._report_error(error)


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
