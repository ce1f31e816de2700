"""The event core: model, journal, bus, policies. No I/O but SQLite.

``__all__`` is the public Python API (the README's "Python API" section lists exactly these names): what a user
who embeds the bus, writes a handler or a source, or reads the journal needs. Everything else under
``agent.events`` is the agent's own and may change between releases.
"""

from .bus import EventBus
from .chain import ChainMiddleware, EnrichmentMiddleware, HandlerChain, ValidationMiddleware
from .dead_letters import DeadLetterEntry, DeadLetterQueue
from .handlers import BaseHandler, FilteringHandler, FunctionHandler, HandlerRegistry, PipelinedHandler, Receipt
from .journal import Journal, JournalClosed, JournalError, JournalFull, StateConflict
from .lifecycle import LifecycleManager, LifecycleState
from .model import PAYLOAD_TYPES, Event, EventMetadata, EventType, EventValidationError
from .payloads import (
    AssetCountersEvent, AssetFaultEvent, AssetState, AssetStateChangedEvent, AssetTelemetryEvent,
    DeviceSoftwareEvent, InspectionResultEvent, InstalledComponent, MaintenanceEvent, MaterialInstalledEvent,
    SeverityLevel, SoftwareItem, TestMeasurement, TestResult, TestResultEvent, TestStep, UnitDisqualifiedEvent,
    WorkCompletedEvent, WorkOrderEvent, WorkStartedEvent,
)
from .policies import (
    CircuitBreaker, CircuitState, ErrorPolicy, PermanentError, RetryConfig, RetryPolicy, TransientError,
)
from .routing import EventFilter
from .telemetry import EventMetrics, EventStats
from .transports import BaseTransport, ThreadedTransport, TransportState

__all__ = [
    # the bus and the journal
    "EventBus", "Journal", "JournalError", "JournalFull", "JournalClosed", "StateConflict",
    # events
    "Event", "EventMetadata", "EventType", "EventValidationError", "PAYLOAD_TYPES",
    "TestResultEvent", "TestStep", "TestMeasurement", "TestResult", "InspectionResultEvent", "AssetFaultEvent",
    "AssetStateChangedEvent", "AssetState", "AssetCountersEvent", "AssetTelemetryEvent", "DeviceSoftwareEvent",
    "SoftwareItem", "MaintenanceEvent", "MaterialInstalledEvent", "InstalledComponent", "WorkStartedEvent",
    "WorkCompletedEvent", "UnitDisqualifiedEvent", "WorkOrderEvent", "SeverityLevel",
    # handlers (what a subscriber runs) and what they raise
    "BaseHandler", "FilteringHandler", "FunctionHandler", "PipelinedHandler", "Receipt", "HandlerRegistry",
    "PermanentError", "TransientError", "EventFilter",
    # the publish-side chain
    "HandlerChain", "ChainMiddleware", "ValidationMiddleware", "EnrichmentMiddleware",
    # failure handling
    "RetryPolicy", "RetryConfig", "CircuitBreaker", "CircuitState", "ErrorPolicy", "DeadLetterQueue",
    "DeadLetterEntry",
    # sources, lifecycle, metrics
    "BaseTransport", "ThreadedTransport", "TransportState", "LifecycleManager", "LifecycleState",
    "EventMetrics", "EventStats",
]
