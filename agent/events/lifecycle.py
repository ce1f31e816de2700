"""Starts the agent's parts in order and stops them in reverse, so a source never outlives the bus it feeds."""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class LifecycleState(str, enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"


class LifecycleManager:
    """Components are anything with ``start()`` and ``stop()``; lower priority starts first and stops last.

    If a component fails to start, the ones already started are stopped again (in reverse) and the error is
    raised: a half-started agent is worse than one that says why it did not start.
    """

    def __init__(self) -> None:
        self._components: list[tuple[int, int, str, Any]] = []
        self._started: list[Any] = []
        self._state = LifecycleState.CREATED
        self._lock = threading.Lock()
        self._on_stop: list[Callable[[], None]] = []
        self._on_error: list[Callable[[str, BaseException], None]] = []

    @property
    def state(self) -> LifecycleState:
        return self._state

    @property
    def is_running(self) -> bool:
        return self._state is LifecycleState.RUNNING

    def add_component(self, component: Any, priority: int = 50, name: str | None = None) -> None:
        label = name or getattr(component, "name", None) or type(component).__name__
        self._components.append((priority, len(self._components), label, component))
        self._components.sort(key=lambda c: (c[0], c[1]))

    def add_running(self, component: Any, priority: int = 50, name: str | None = None) -> None:
        """A component already started by the caller while the rest runs (a sink started again by a reload): it is
        stopped with the others, in its priority's place."""
        self.add_component(component, priority, name)
        with self._lock:
            if self._state is not LifecycleState.RUNNING:
                return
            started = {id(c) for _, c in self._started} | {id(component)}
            self._started = [(label, c) for _, _, label, c in self._components if id(c) in started]

    def remove_component(self, component: Any) -> bool:
        """Forget ``component`` without stopping it (the caller stops it: a reload replacing a sink). True if it
        was started."""
        with self._lock:
            self._components = [c for c in self._components if c[3] is not component]
            was_started = any(c is component for _, c in self._started)
            self._started = [(label, c) for label, c in self._started if c is not component]
        return was_started

    def add_event_bus(self, event_bus: Any, priority: int = 10) -> None:
        self.add_component(event_bus, priority, getattr(event_bus, "name", "event-bus"))

    def on_stop(self, callback: Callable[[], None]) -> None:
        self._on_stop.append(callback)

    def on_error(self, callback: Callable[[str, BaseException], None]) -> None:
        self._on_error.append(callback)

    def start(self) -> None:
        with self._lock:
            if self._state is LifecycleState.RUNNING:
                return
            self._state = LifecycleState.STARTING
            for _, _, label, comp in self._components:
                try:
                    comp.start()
                except BaseException as e:
                    self._state = LifecycleState.ERROR
                    for cb in self._on_error:
                        cb(label, e)
                    log.error("could not start %s: %s", label, e)
                    self._stop_started()
                    self._state = LifecycleState.ERROR
                    raise
                self._started.append((label, comp))
            self._state = LifecycleState.RUNNING

    def _stop_started(self) -> None:
        while self._started:
            label, comp = self._started.pop()
            try:
                comp.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                log.error("error while stopping %s: %s", label, e)
                for cb in self._on_error:
                    cb(label, e)

    def stop(self) -> None:
        with self._lock:
            if self._state not in (LifecycleState.RUNNING, LifecycleState.ERROR, LifecycleState.STARTING):
                return
            self._state = LifecycleState.STOPPING
            self._stop_started()
            self._state = LifecycleState.STOPPED
        for cb in self._on_stop:
            cb()
