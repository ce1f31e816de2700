"""fixture-agent: a durable, synchronous edge agent for test fixtures.

The public API is the event core (``agent.events``), re-exported here lazily so that ``fixture-agent --version``
and other light commands do not pay for importing all of it::

    from agent import EventBus, Journal, Event, EventType
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Only public names of agent.events; anything else (notably submodules being imported) is a plain miss, so
    # the import system can load it instead of recursing through here.
    if name.startswith("_"):
        raise AttributeError(name)
    events = importlib.import_module(".events", __name__)
    if name in events.__all__:
        return getattr(events, name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["__version__", *importlib.import_module(".events", __name__).__all__]
