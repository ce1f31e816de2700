"""The fixture as a CFX endpoint: its own events published as CFX messages, and its request listener.

A durable subscriber (``cfx``) with a window of unsettled messages (``PipelinedHandler``): ``test.result`` →
UnitsTested, ``asset.state_changed`` → StationStateChanged (SEMI E10 codes), ``asset.fault`` → FaultOccurred or
FaultCleared (``protocols/cfx_mapping.py``), sent to the broker address (``/exchange/CFXExchange`` …) with the
SDK's AMQP properties: one Data section (gzip by default), durable, message-id = UniqueID = the event id (a resend
is the same message to a de-duplicating receiver), subject ``<handle>.<MessageName>``, cfx-* application properties.
The cursor moves past an event only when the broker's outcome for it was **Accepted**; Rejected is a dead letter
with the broker's reason, Released/Modified and a lost connection are retried (in order, the window re-read from
the journal).

Only the fixture's **own** events go out under its handle (``cfx_mapping.is_own``: not journaled by the CFX or
MQTT ingest); others' are skipped (counted), unless ``republish`` is on: then those that came from CFX are relayed
as their sender wrote them (its handle, UniqueID, TimeStamp and body), marked with the relays they passed
(``fixture-agent-relayed-by``) so that a loop between relays is recognised (``sources/cfx.py``).

Besides: ``EndpointConnected`` whenever the link to the broker opens, ``Heartbeat`` every ``heartbeat_interval``,
``EndpointShuttingDown`` at a clean stop. With ``listen``, the endpoint also answers requests the way the SDK's
request processor does (``reference/cfx.md`` §3): AreYouThere, WhoIsThere and GetEndpointInformation, and
NotSupportedResponse for anything else, on reply links keyed by their attach target address. Only links and
requests addressed to its own handle: a link to another address is refused as the SDK's host refuses it
(``amqp:not-found``, "No processor was found at …"), a request whose Target is another handle is rejected. The
listener is bounded: ``listen_max_connections`` at once (more are closed at once), a connection without a request
for ``listen_idle_timeout`` is closed, a request over ``listen_max_message_bytes`` is refused while it arrives.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from proton.handlers import MessagingHandler  # this module is imported only when CFX is configured

from .cfx_plugin import CfxSinkSection
from ..events.handlers import PipelinedHandler, Receipt, SettableReceipt
from ..events.model import Event
from ..events.policies import CircuitBreaker, PermanentError, RetryPolicy, TransientError
from ..protocols import cfx
from ..connections.amqp import ContainerThread, Reconnecting, connect_options, guarded, refuse_oversize
from ..protocols.cfx_mapping import PUBLISHED_TYPES, RELAYED_BY, cfx_origin, is_own, relay_cfx, timespan, to_cfx

log = logging.getLogger(__name__)


def cfx_message(doc: dict[str, Any], *, compress: bool, relayed_by: list[str] | None = None) -> Any:
    """The proton message for an envelope, with the SDK's properties (``cfx.amqp_properties``); a relayed one
    also names the relays it passed (``fixture-agent-relayed-by``, ours last)."""
    from proton import Message

    p = cfx.amqp_properties(doc, compressed=compress)
    props = p["properties"]
    if relayed_by:
        props = {**props, RELAYED_BY: ",".join(relayed_by)}
    msg = Message(body=cfx.encode(doc, compress=compress), inferred=True, durable=True, id=p["id"],
                  subject=p["subject"], reply_to=p["reply_to"], content_type=p["content_type"],
                  content_encoding=p["content_encoding"], correlation_id=p["correlation_id"],
                  properties=props, creation_time=p["creation_time"])
    if doc.get("Target"):
        msg.address = doc["Target"]
    return msg


class CfxEndpoint(PipelinedHandler):
    def __init__(self, cfg: CfxSinkSection, *, station: str) -> None:
        self._name = "cfx"
        self.cfg = cfg
        self.station = station
        self.window = cfg.window
        self.event_types = tuple(cfg.event_types) or PUBLISHED_TYPES
        self.retry_policy = RetryPolicy(max_retries=None, initial_delay=1.0, max_delay=float(cfg.reconnect_max))
        self.circuit_breaker = CircuitBreaker(failure_threshold=1_000_000)
        self.ready = threading.Event()
        self.last_error: str | None = None
        self.published = 0
        self.relayed = 0
        self.not_own: dict[str, int] = {}  # others' events not published, by event type
        self.requests_answered = 0
        self.requests_refused = 0
        self.republishes = cfg.republish  # read by the CFX source: keep what senders sent, to relay it
        self._outbox: list[tuple[dict[str, Any], list[str] | None, SettableReceipt]] = []
        self._outbox_lock = threading.Lock()
        self.link = _Link(self, connect_options(cfg, "sinks.cfx"))
        self.container = ContainerThread(self.link, cfg.handle, "sink-cfx")

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.container.start()

    def stop(self) -> None:
        """EndpointShuttingDown (waited for, briefly), then the connection closes."""
        if self.ready.is_set():
            done = SettableReceipt()
            doc = cfx.envelope_doc("CFX.EndpointShuttingDown", {"CFXHandle": self.cfg.handle},
                                   source=self.cfg.handle, when=datetime.now(timezone.utc))
            self.container.call(lambda: self.link.send(doc, done))
            done.wait(3.0)
        self.container.stop()

    # ------------------------------------------------------------------------------------------------ delivery
    def wait_ready(self, timeout: float) -> bool:
        return self.ready.wait(timeout)

    def stalled(self) -> str | None:
        if self.ready.is_set():
            return None
        return f"CFX broker {self.cfg.url} unreachable ({self.last_error or 'connecting'}); events wait in the journal"

    @property
    def cfx_handle(self) -> str:
        """This endpoint's handle (the CFX source drops what arrives from it: the agent's own messages)."""
        return self.cfg.handle

    def submit(self, event: Event) -> Receipt:
        outcome = SettableReceipt()
        via: list[str] | None = None
        try:
            if is_own(event):
                doc = to_cfx(event, self.cfg.handle)
            elif self.cfg.republish:
                doc = relay_cfx(event)
                via = [*(cfx_origin(event).get("relayed_by") or []), self.cfg.handle]
            else:
                doc = None
        except Exception as e:  # noqa: BLE001 - an event this endpoint cannot say in CFX: no resend changes that
            raise PermanentError(f"cannot map {event.event_type} to CFX: {type(e).__name__}: {e}") from None
        if doc is None:
            if not is_own(event):
                self._not_own(event)
            outcome.settle(None)  # nothing this endpoint says for it
            return outcome
        with self._outbox_lock:
            wake = not self._outbox
            self._outbox.append((doc, via, outcome))
        if wake:  # one wake-up of the container thread per burst, not per message
            self.container.call(self._drain)
        if via:
            self.relayed += 1
        else:
            self.published += 1
        return outcome

    def _not_own(self, event: Event) -> None:
        first = not self.not_own
        self.not_own[event.event_type] = self.not_own.get(event.event_type, 0) + 1
        if first:
            why = ("it carries no CFX origin to relay it under" if self.cfg.republish
                   else "sinks.cfx.republish = false")
            log.info("sinks.cfx: not publishing events other equipment reported (%s from %s): %s", event.event_type,
                     event.source, why)

    def _drain(self) -> None:
        """(container thread) Send everything handed over since the last wake-up."""
        with self._outbox_lock:
            batch, self._outbox = self._outbox, []
        for doc, via, outcome in batch:
            self.link.send(doc, outcome, via)

    # ------------------------------------------------------------------------------------------------ describing
    def endpoint_information(self) -> dict[str, Any]:
        return {"CFXHandle": self.cfg.handle, "CFXVersion": cfx.CFX_VERSION,
                "RequestNetworkUri": self.request_uri, "RequestTargetAddress": self.cfg.handle,
                "UniqueIdentifier": self.cfg.handle, "FriendlyName": f"fixture-agent on {self.station}",
                "Vendor": "fixture-agent", "ModelNumber": "fixture-agent", "SerialNumber": self.station,
                "SoftwareVersion": __version__, "FirmwareVersion": None, "OperatingSystem": "DebianLinux",
                "OperatingSystemPlatform": "Platform64bit" if platform.architecture()[0] == "64bit"
                else "Platform32bit", "OperatingSystemVersion": platform.release(),
                "Stages": [{"Stage": {"StageSequence": 1, "StageName": "TEST", "StageType": "Work"}}],
                "NumberOfLanes": 1, "HermesInformation": None, "OperatingRequirements": None,
                "SupportedTopics": [
                    {"TopicName": "CFX", "TopicSupportType": "PublisherConsumer", "SupportedMessages": []},
                    {"TopicName": "CFX.Production.TestAndInspection", "TopicSupportType": "Publisher",
                     "SupportedMessages": ["CFX.Production.TestAndInspection.UnitsTested"]},
                    {"TopicName": "CFX.ResourcePerformance", "TopicSupportType": "Publisher",
                     "SupportedMessages": ["CFX.ResourcePerformance.StationStateChanged",
                                           "CFX.ResourcePerformance.FaultOccurred",
                                           "CFX.ResourcePerformance.FaultCleared"]}],
                "SupportedPCBDimensions": None, "SleepStates": None}

    def heartbeat_doc(self) -> dict[str, Any]:
        return cfx.envelope_doc("CFX.Heartbeat", {
            "CFXHandle": self.cfg.handle, "HeartbeatFrequency": timespan(float(self.cfg.heartbeat_interval)),
            "ActiveFaults": None, "ActiveRecipes": None}, source=self.cfg.handle, when=datetime.now(timezone.utc),
            unique_id=str(uuid.uuid4()))

    @property
    def request_uri(self) -> str | None:
        if not self.cfg.listen:
            return None
        host, _, port = self.cfg.listen.rpartition(":")
        return f"amqp://{platform.node() if host in ('0.0.0.0', '') else host}:{port}/"

    def answer(self, request: cfx.Envelope) -> dict[str, Any]:
        """The response envelope for a request (``reference/cfx.md`` §3-4)."""
        ok = {"Result": "Success", "ResultCode": 0, "Message": None}
        h = self.cfg.handle
        if request.message_name in ("CFX.AreYouThereRequest", "CFX.WhoIsThereRequest"):
            name = request.message_name.replace("Request", "Response")
            body = {"Result": ok, "CFXHandle": h, "RequestNetworkUri": self.request_uri, "RequestTargetAddress": h}
        elif request.message_name == "CFX.GetEndpointInformationRequest":
            name, body = "CFX.GetEndpointInformationResponse", {"Result": ok,
                                                                 "EndpointInformation": self.endpoint_information()}
        else:
            name, body = "CFX.NotSupportedResponse", {"RequestResult": {
                "Result": "Failed", "ResultCode": 0, "Message": f"Not supported: {request.message_name}"}}
        self.requests_answered += 1
        return cfx.envelope_doc(name, body, source=h, when=datetime.now(timezone.utc), target=request.source,
                                request_id=request.request_id)


class _Link(Reconnecting, MessagingHandler):
    """The container-thread side: the sender to the broker, the heartbeat, and the request listener."""

    def __init__(self, endpoint: CfxEndpoint, options: dict[str, Any]) -> None:
        super().__init__(prefetch=10, auto_accept=False, auto_settle=True)
        self.endpoint = endpoint
        self.options = options
        self.reconnect_min = float(endpoint.cfg.reconnect_min)
        self.reconnect_max = float(endpoint.cfg.reconnect_max)
        self.sender: Any = None
        self.broker: Any = None  # our connection to the broker (inbound request connections are others)
        self.outcomes: dict[str, SettableReceipt] = {}
        self.reply_links: dict[str, Any] = {}
        self.heartbeat_started = False
        self.listening = False
        self.inbound: dict[Any, list[float]] = {}  # request connection → [last request (monotonic), closing since]

    # ---------------------------------------------------------------------------------------------- broker
    def open_links(self, container: Any) -> None:
        self.broker = container.connect(**self.options)
        self.sender = container.create_sender(self.broker, self.endpoint.cfg.address)
        if self.endpoint.cfg.listen and not self.listening:
            self.listening = True
            container.listen(self.endpoint.cfg.listen)
            container.schedule(1.0, _Sweep(self))
        if not self.heartbeat_started:
            self.heartbeat_started = True
            container.schedule(float(self.endpoint.cfg.heartbeat_interval), _Heartbeat(self))

    def on_link_opened(self, event: Any) -> None:
        if event.connection != self.broker:
            refused = getattr(event.link, "refused_why", None)
            if refused is not None:  # opened only to be detached with the reason, as the SDK's host does
                from proton import Condition

                event.link.condition = Condition(*refused)
                event.link.close()
            return
        if self.sender is not None and event.link.name == self.sender.name and event.link.is_sender \
                and event.connection == self.broker:
            self.connected_again()
            self.endpoint.last_error = None
            log.info("sinks.cfx: publishing to %s %s as %s", self.endpoint.cfg.url, self.endpoint.cfg.address,
                     self.endpoint.cfg.handle)
            self.send(cfx.envelope_doc("CFX.EndpointConnected", {
                "CFXHandle": self.endpoint.cfg.handle, "RequestNetworkUri": self.endpoint.request_uri,
                "RequestTargetAddress": self.endpoint.cfg.handle}, source=self.endpoint.cfg.handle,
                when=datetime.now(timezone.utc)), None)
            self.endpoint.ready.set()
            self.send(self.endpoint.heartbeat_doc(), None)  # as the SDK does when a publish channel opens

    def send(self, doc: dict[str, Any], outcome: SettableReceipt | None, via: list[str] | None = None) -> None:
        sender = self.sender
        if sender is None or not self.endpoint.ready.is_set() and doc["MessageName"] != "CFX.EndpointConnected":
            if outcome is not None:
                outcome.settle(TransientError("not connected to the CFX broker"))
            return
        delivery = sender.send(cfx_message(doc, compress=self.endpoint.cfg.compress, relayed_by=via))
        if outcome is not None:
            self.outcomes[delivery.tag] = outcome

    def _settled(self, event: Any, error: BaseException | None) -> None:
        if event.connection != self.broker or self.sender is None or event.link.name != self.sender.name:
            return  # a requester settling a reply: not ours to count
        outcome = self.outcomes.pop(event.delivery.tag, None)
        if outcome is not None:
            outcome.settle(error)

    def on_accepted(self, event: Any) -> None:
        self._settled(event, None)

    def on_rejected(self, event: Any) -> None:
        cond = event.delivery.remote.condition
        self._settled(event, PermanentError(f"CFX broker rejected it: {cond.name if cond else ''} "
                                            f"{cond.description if cond else ''}".strip()))

    def on_released(self, event: Any) -> None:
        self._settled(event, TransientError("CFX broker released it (not delivered)"))

    def on_modified(self, event: Any) -> None:
        self._settled(event, TransientError("CFX broker modified it (not delivered)"))

    def on_transport_error(self, event: Any) -> None:
        cond = event.transport.condition
        if event.connection == self.broker or event.connection is None:
            self.endpoint.last_error = f"{cond.name}: {cond.description}" if cond else "connection failed"

    def on_link_error(self, event: Any) -> None:
        cond = event.link.remote_condition
        if event.connection == self.broker:
            self.endpoint.last_error = f"link refused: {cond.name}: {cond.description}" if cond else "link refused"
            log.error("sinks.cfx: %s (does %s exist on the broker?)", self.endpoint.last_error,
                      self.endpoint.cfg.address)
            self.endpoint.ready.clear()
            event.connection.close()  # a detached sender on a live connection never comes back: start over

    def on_link_closing(self, event: Any) -> None:
        if event.connection == self.broker:
            if not self.stopping:  # detached without an error (a deleted exchange on some brokers)
                self.endpoint.last_error = "the broker detached the link"
                self.endpoint.ready.clear()
                event.connection.close()
        else:  # a requester closed a reply link: forget it
            self.reply_links = {k: v for k, v in self.reply_links.items() if v.name != event.link.name}

    def lost(self, event: Any) -> None:
        if event.connection is not None and self.broker is not None and event.connection != self.broker:
            return  # a requester went away
        self.endpoint.ready.clear()
        self.sender = None
        lost, self.outcomes = self.outcomes, {}
        for outcome in lost.values():  # the broker never said: sent again from the journal, same UniqueID
            outcome.settle(TransientError("connection to the CFX broker lost before its outcome"))

    def on_transport_closed(self, event: Any) -> None:
        if event.connection is not None and self.broker is not None and event.connection != self.broker:
            self.reply_links = {k: v for k, v in self.reply_links.items() if v.connection != event.connection}
            self.inbound.pop(event.connection, None)
            return  # an inbound request connection: nothing to reopen
        super().on_transport_closed(event)

    # ---------------------------------------------------------------------------------------------- listener bounds
    def on_connection_bound(self, event: Any) -> None:
        """A request connection accepted: beyond ``listen_max_connections`` it is closed at once (a thousand idle
        connections took every file descriptor and then proton's accept, and CFX with it); the others get an
        AMQP idle timeout (a peer that sends nothing at all, not even heartbeats, is dropped by proton)."""
        conn, cfg = event.connection, self.endpoint.cfg
        if conn is None or conn == self.broker or (self.broker is None and not self.listening):
            return
        if len(self.inbound) >= cfg.listen_max_connections:
            self.endpoint.requests_refused += 1
            self._loud_refusal(f"more than {cfg.listen_max_connections} request connections at once "
                               "(listen_max_connections): closing the new one")
            _force_close(event.transport)
            return
        event.transport.idle_timeout = float(cfg.listen_idle_timeout)
        self.inbound[conn] = [time.monotonic(), 0.0]

    def sweep(self) -> None:
        """(every second) Close request connections that sent no request for ``listen_idle_timeout``; one that
        did not answer our close within 2 s is dropped."""
        now = time.monotonic()
        timeout = float(self.endpoint.cfg.listen_idle_timeout)
        for conn, times in list(self.inbound.items()):
            last, closing = times
            if closing and now - closing > 2.0:
                self.inbound.pop(conn, None)
                _force_close(conn.transport)
            elif not closing and now - last > timeout:
                from proton import Condition

                times[1] = now
                conn.condition = Condition("amqp:resource-limit-exceeded",
                                           f"no request for {timeout:g} s (listen_idle_timeout)")
                conn.close()

    _refusal_logged_at = -60.0

    def _loud_refusal(self, why: str) -> None:
        now = time.monotonic()
        if now - self._refusal_logged_at >= 60.0:
            self._refusal_logged_at = now
            log.warning("sinks.cfx: request listener %s: %s (%d refused so far)", self.endpoint.cfg.listen, why,
                        self.endpoint.requests_refused)

    # ---------------------------------------------------------------------------------------------- requests
    def on_link_opening(self, event: Any) -> None:
        """Links a requester attaches to us (the SDK's pattern): a reply link is kept under its target address.
        Only links to our own handle (case-insensitive, as the SDK's host matches): another address is refused
        the way the SDK's host refuses it (``amqp:not-found``), an empty one as ``amqp:invalid-field``."""
        link = event.link
        if event.connection == self.broker:
            return
        address = (link.remote_source.address if link.is_sender else link.remote_target.address) or ""
        if address.strip().lower() != self.endpoint.cfg.handle.lower():
            link.refused_why = (("amqp:invalid-field", "The address field cannot be empty") if not address.strip()
                                else ("amqp:not-found", f"No processor was found at {address}"))
            self.endpoint.requests_refused += 1
            self._loud_refusal(f"a link to {address!r} refused: this endpoint is {self.endpoint.cfg.handle}")
            return
        if link.is_sender:
            link.source.address = link.remote_source.address
            link.target.address = link.remote_target.address
            self.reply_links[link.remote_target.address] = link
        else:
            link.target.address = link.remote_target.address
            link.max_message_size = self.endpoint.cfg.listen_max_message_bytes  # advisory: on_delivery enforces it

    def on_delivery(self, event: Any) -> None:
        if event.connection == self.broker or event.delivery is None or not event.link.is_receiver:
            return
        if refuse_oversize(event, self.endpoint.cfg.listen_max_message_bytes) is not None:
            self.endpoint.requests_refused += 1
            self._loud_refusal(f"a request over listen_max_message_bytes "
                               f"({self.endpoint.cfg.listen_max_message_bytes}) refused")

    def on_message(self, event: Any) -> None:
        from proton import Condition, Message

        if event.connection == self.broker or getattr(event.delivery, "refused", False):
            return
        times = self.inbound.get(event.connection)
        if times is not None:
            times[0] = time.monotonic()
        m = event.message
        handle = self.endpoint.cfg.handle
        if getattr(event.link, "refused_why", None) is not None:  # sent before the refusal reached the peer
            event.delivery.local.condition = Condition(*event.link.refused_why)
            self.reject(event.delivery)
            return
        reply = self.reply_links.get(m.reply_to or "")
        if reply is None:
            event.delivery.local.condition = Condition("amqp:not-found", f"no reply link for {m.reply_to!r}")
            self.reject(event.delivery)
            return
        body = bytes(m.body) if isinstance(m.body, (bytes, bytearray, memoryview)) else str(m.body).encode()
        encoding = None if m.content_encoding in (None, "None") else m.content_encoding
        try:
            (request,) = cfx.decode(body, encoding, self.endpoint.cfg.listen_max_message_bytes)[:1]
        except (cfx.CfxError, ValueError) as e:
            event.delivery.local.condition = Condition("amqp:decode-error", str(e)[:500])
            self.reject(event.delivery)
            return
        if request.target is not None and request.target.lower() != handle.lower():
            # the link was ours but the envelope names another endpoint: not ours to answer for
            self.endpoint.requests_refused += 1
            self._loud_refusal(f"a request for {request.target!r} refused: this endpoint is {handle}")
            event.delivery.local.condition = Condition("amqp:not-found", f"Target {request.target} is not this "
                                                                         f"endpoint ({handle})")
            self.reject(event.delivery)
            return
        self.accept(event.delivery)
        doc = self.endpoint.answer(request)
        reply.send(Message(body=cfx.encode(doc), inferred=True, correlation_id=m.id, address=m.reply_to,
                           content_type=cfx.CONTENT_TYPE, subject=f"{self.endpoint.cfg.handle}.{doc['MessageName']}"))


def _force_close(transport: Any) -> None:
    """Drop a connection's socket now, whatever its peer does (it may never read or answer)."""
    if transport is not None:
        transport.close_tail()
        transport.close_head()


class _Sweep:
    def __init__(self, link: _Link) -> None:
        self.link = link

    @guarded
    def on_timer_task(self, event: Any) -> None:
        if not self.link.stopping:
            event.container.schedule(1.0, self)
            self.link.sweep()


class _Heartbeat:
    def __init__(self, link: _Link) -> None:
        self.link = link

    @guarded
    def on_timer_task(self, event: Any) -> None:
        ep = self.link.endpoint
        if not self.link.stopping:
            event.container.schedule(float(ep.cfg.heartbeat_interval), self)
        if ep.ready.is_set():
            self.link.send(ep.heartbeat_doc(), None)


def build(section: CfxSinkSection, ctx) -> CfxEndpoint:
    """The plugin's build (``cfx_plugin.PLUGIN``)."""
    return CfxEndpoint(section, station=ctx.station)
