"""fixture-agent: a durable, synchronous edge agent for test fixtures.

The public API is the event core (``agent.events``), re-exported here lazily so that ``fixture-agent --version``
and other light commands do not pay for importing all of it::

    from agent import EventBus, Journal, Event, EventType
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    from . import events

    try:
        return getattr(events, name)
    except AttributeError:
        raise AttributeError(f"module 'agent' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    from . import events

    return ["__version__", *events.__all__]
