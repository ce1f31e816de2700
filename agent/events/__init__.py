"""The event core: model, journal, bus, policies. No I/O but SQLite."""

from .bus import EventBus
from .chain import ChainMiddleware, EnrichmentMiddleware, HandlerChain, LoggingMiddleware, ValidationMiddleware
from .handlers import (
    BaseHandler, FilteringHandler, FunctionHandler, HandlerRegistry, PipelinedHandler, Receipt, SyncHandler,
)
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
    CircuitBreaker, CircuitState, DeadLetterEntry, DeadLetterQueue, ErrorPolicy, ImmediateRetryPolicy,
    NoRetryPolicy, PermanentError, RetryConfig, RetryPolicy, TransientError,
)
from .routing import EventFilter
from .subscriber import Subscription
from .telemetry import EventMetrics, EventStats
from .transports import BaseTransport, MockTransport, ThreadedTransport, TransportState

__all__ = [name for name in dir() if not name.startswith("_")]
