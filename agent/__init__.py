"""fixture-agent: a durable, synchronous edge agent for test fixtures.

The public API is the event core (``agent.events``), re-exported here::

    from agent import EventBus, Journal, Event, EventType
"""

__version__ = "0.1.0"

from .events import *  # noqa: F401,F403 - the public API
from .events import __all__ as _events_all

__all__ = ["__version__", *_events_all]
