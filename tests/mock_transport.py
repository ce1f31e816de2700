"""A source for tests: ``inject_event`` feeds the bus exactly as a real source would (the seed's MockTransport).

It lived in ``agent.events`` and so was part of the agent's public API; it is the tests' (issue 17 item 8).
"""

from __future__ import annotations

import time

from agent.events import BaseTransport, Event, TransportState


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
        self._injected: list[Event] = []
        self._published_events: list[Event] = []

    @property
    def injected_events(self) -> list[Event]:
        return list(self._injected)

    @property
    def published_events(self) -> list[Event]:
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

    def inject_event(self, event: Event) -> Event:
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

    def inject_events(self, events: list[Event]) -> list[Event]:
        return [self.inject_event(e) for e in events]

    def simulate_disconnect(self) -> None:
        self._set_state(TransportState.DISCONNECTED)

    def simulate_reconnect(self) -> None:
        self._set_state(TransportState.RECONNECTING)
        self._set_state(TransportState.CONNECTED)

    def simulate_error(self, error: BaseException) -> None:
        self._set_state(TransportState.ERROR)
        self._report_error(error)


