"""CFX ingest: what other equipment publishes on the plant's AMQP 1.0 broker, as durable events.

A receiver on a broker queue (or an exchange binding), with ``credit`` messages allowed ahead. Each message is
decoded (gzip when its content-encoding says so, a JSON array of envelopes as one batch), mapped to events
(``protocols/cfx_mapping.py``), and the batch of messages that arrived together is journaled in one transaction;
only then are their deliveries **accepted**, so the broker keeps anything the agent did not make durable.

The SDK resends from its spool after a reconnect, and the broker redelivers what was not accepted when a
connection dropped: a message whose ``UniqueID`` is among the last ``dedup_window`` journaled is accepted again and
not journaled twice (the UniqueIDs commit with the events, ``events/recent.py``).

A message that is not CFX, or does not map, is kept in the dead-letter table with the reason and the raw body,
counted, and **rejected** (so a broker-side dead-letter exchange gets it too); the ones behind it go on. Root
messages (Heartbeat, EndpointConnected …) and types this agent does not map are accepted and counted by name.
A message larger than ``max_message_bytes`` is refused while it arrives (rejected and settled before the rest is
buffered), a gzip body that would inflate past ``max_inflated_bytes`` is refused as it inflates: both are dead
letters, settled once, never redelivered.

**What the agent published itself is never ingested** (the usual MES binding ``#.CFX.Production.
TestAndInspection.#`` also matches the endpoint's own subject, and ingesting it made every result come back as a
new one, thousands a second): an envelope whose ``Source`` is one of the agent's own handles (this source's, the
endpoint's), whose ``UniqueID`` is the id of an event in the journal (the endpoint sends UniqueID = event id), or
that the endpoint relayed itself is accepted and dropped (``own_messages`` in ``status``, a warning in the log).
A message that the endpoint relayed and that came back through another relay, or that passed through more
than ``MAX_RELAYS`` relays, is a **loop**: dropped, logged as an error, counted in ``status`` (``loops``) and in
``fixture_agent_bad_input_total{origin="cfx:<name>:loop"}``. The relays a message passed through travel in the
``fixture-agent-relayed-by`` application property (``sinks/cfx.py``).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from proton.handlers import MessagingHandler  # this module is imported only when CFX is configured

from .cfx_plugin import CfxSourceSection
from ..events.backoff import backoff_delay
from ..events.model import Event
from ..events.recent import RecentKeys
from ..events.transports import BaseTransport, TransportState
from ..protocols import cfx
from ..connections.amqp import ContainerThread, Reconnecting, connect_options, guarded, refuse_oversize
from ..protocols.cfx_mapping import MAPPERS, RELAYED_BY, to_events
from .base import STATUS_EVERY, StatusRecord

log = logging.getLogger(__name__)

#: a message relayed this many times is taken for a loop whoever relayed it
MAX_RELAYS = 4
#: the units of a message that becomes one event per unit (a relay sends each unit's own part)
_UNIT_LISTS = {"CFX.Production.TestAndInspection.UnitsTested": ("TestedUnits", "UnitIdentifier"),
               "CFX.Production.TestAndInspection.UnitsInspected": ("InspectedUnits", "UnitIdentifier")}
LOG_EVERY = 60.0


def relayed_by(message: Any) -> list[str]:
    """The handles of the relays a message passed through (application property ``fixture-agent-relayed-by``)."""
    props = message.properties if isinstance(message.properties, dict) else {}
    value = props.get(RELAYED_BY)
    if not isinstance(value, str) or not value:
        return []
    return [h for h in value.split(",") if h]


def _key(unique_id: str) -> str:
    """What is remembered of a UniqueID: 8 bytes of its hash (the memory is rewritten with every batch)."""
    return hashlib.blake2b(unique_id.encode(), digest_size=8).hexdigest()


class _Pending:
    __slots__ = ("delivery", "events", "ids")

    def __init__(self, delivery: Any, events: list[Event], ids: list[str]) -> None:
        self.delivery, self.events, self.ids = delivery, events, ids


class CfxSource(BaseTransport):
    def __init__(self, cfg: CfxSourceSection, station: str) -> None:
        super().__init__(f"cfx:{cfg.name}")
        self.cfg = cfg
        self.handle = cfg.handle or f"FixtureAgent.{station}".replace(" ", "_")
        self.counts: Counter[str] = Counter()
        self.not_mapped: Counter[str] = Counter()
        self.recent = RecentKeys(cfg.dedup_window)
        self._container: ContainerThread | None = None
        self.status = StatusRecord(self.name, lambda: self._bus.journal if self._bus is not None else None)
        self.own_handles: set[str] = {self.handle.lower()}
        self.keep_original = False  # the endpoint relays others' events: keep what they sent, to send it on
        self.loop_last: str | None = None
        self._logged_at: dict[str, float] = {}

    @property
    def recent_key(self) -> str:
        return f"cfx-recent:{self.cfg.name}"

    def get_subscribed_topics(self) -> list[str]:
        return [self.cfg.address]

    def start(self) -> None:
        assert self._bus is not None, "register the source on a bus first"
        self.recent.load(self._bus.journal.get_state(self.recent_key))
        self._find_endpoints()
        options = connect_options(self.cfg, f"sources.cfx {self.cfg.name}")
        self._container = ContainerThread(_Receiver(self, options), self.handle, f"source-{self.name}")
        self._set_state(TransportState.CONNECTING)
        self._container.start()

    def stop(self) -> None:
        # Deliveries not accepted yet stay with the broker: it sends them again next time.
        if self._container is not None:
            self._container.stop()
        self._set_state(TransportState.DISCONNECTED)
        self.record_status(force=True)

    def _find_endpoints(self) -> None:
        """The agent's own CFX endpoints are subscribers on the same bus (``sinks/cfx.py``): their handles are ours
        too, and whether they relay others' events decides whether those keep their original body."""
        assert self._bus is not None
        for sub in self._bus.subscriptions():
            handle = getattr(sub.handler, "cfx_handle", None)
            if isinstance(handle, str):
                self.own_handles.add(handle.lower())
                self.keep_original = self.keep_original or bool(getattr(sub.handler, "republishes", False))

    # ------------------------------------------------------------------------------------------------ per message
    def _loud(self, what: str, level: int, text: str, *args: Any) -> None:
        """Log ``text`` now and then (at most every LOG_EVERY seconds per kind): a loop must be seen, not flood."""
        now = time.monotonic()
        if now - self._logged_at.get(what, -LOG_EVERY) >= LOG_EVERY:
            self._logged_at[what] = now
            log.log(level, text, *args)

    def _sent_by_us(self, unique_id: str) -> bool:
        """The endpoint sends UniqueID = event id: a UniqueID that is the id of an event in our journal is ours."""
        assert self._bus is not None
        try:
            return self._bus.journal.reader().execute("SELECT 1 FROM events WHERE id = ?", (unique_id,)) \
                .fetchone() is not None
        except Exception:  # noqa: BLE001 - the handle check still holds; a busy journal must not stop ingest
            return False

    def _own(self, env: cfx.Envelope, via: list[str]) -> str | None:
        """Why an envelope is the agent's own (not to be ingested), or None: "own" (we published it, or relayed
        it and it came straight back) or "loop" (our relay came back through another, or too many relays)."""
        mine = [i for i, h in enumerate(via) if h.lower() in self.own_handles]
        if mine and mine[-1] != len(via) - 1 or len(via) > MAX_RELAYS:
            return "loop"
        if mine or (env.source or "").lower() in self.own_handles or self._sent_by_us(env.unique_id):
            return "own"
        return None

    def _dropped(self, why: str, env: cfx.Envelope, via: list[str]) -> None:
        assert self._bus is not None
        if why == "loop":
            self.counts["loops"] += 1
            self._bus.metrics.record_bad_input(f"{self.name}:loop")
            self.loop_last = (f"{env.message_name} {env.unique_id} from {env.source} relayed by "
                              f"{' > '.join(via) or '-'}")
            self._loud("loop", logging.ERROR, "source %s: a CFX message loop: %s came back to this agent; dropped "
                       "(%d so far). Two relays (sinks.cfx.republish) bound to each other's messages?",
                       self.name, self.loop_last, self.counts["loops"])
        else:
            self.counts["own_messages"] += 1
            self._loud("own", logging.WARNING, "source %s: %s (%s) is this agent's own message (the queue's binding "
                       "matches the endpoint's subject); not ingested (%d so far)", self.name, env.message_name,
                       env.source, self.counts["own_messages"])

    def _keep_original(self, env: cfx.Envelope, mapped: list[Event]) -> None:
        """For a relay: what the sender said, kept with each event (its part of the message, for one event per
        unit), so the endpoint can send it on unchanged under the sender's handle."""
        units = _UNIT_LISTS.get(env.message_name)
        for i, e in enumerate(mapped):
            body = env.body
            if units is not None:
                key, id_key = units
                mine = [u for u in (body.get(key) or []) if isinstance(u, dict)
                        and str(u.get(id_key)) == str(e.payload.get("unit_id"))]
                body = {**body, key: mine[:1]}
            unique_id = env.unique_id if len(mapped) == 1 else str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                                            f"{env.unique_id}/{i}"))
            self._cfx_meta(e)["original"] = {"message": env.message_name, "unique_id": unique_id,
                                             "time_stamp": env.time_stamp.isoformat(), "body": body}

    @staticmethod
    def _cfx_meta(e: Event) -> dict[str, Any]:
        custom = e.payload.setdefault("custom_data", {})
        if not isinstance(custom, dict):
            custom = e.payload["custom_data"] = {}
        meta = custom.setdefault("cfx", {})
        return meta if isinstance(meta, dict) else custom.setdefault("cfx_origin", {})

    def read(self, message: Any, pending_ids: set[str] | frozenset[str] = frozenset()) -> tuple[list[Event], list[str]]:
        """A proton message → (events, UniqueIDs), skipping envelopes already journaled or already waiting in this
        batch (``pending_ids``) and the agent's own; raises ``cfx.CfxError`` naming what is wrong."""
        body = message.body
        if isinstance(body, memoryview):
            body = bytes(body)
        elif isinstance(body, str):
            body = body.encode()  # an AmqpValue string: the SDK would refuse it; we read it, and say so
            self.counts["string_bodies"] += 1
        if not isinstance(body, (bytes, bytearray)):
            raise cfx.CfxError(f"body: a {type(body).__name__}, not a Data section of JSON bytes")
        if len(body) > self.cfg.max_message_bytes:
            raise cfx.CfxError(f"body of {len(body)} bytes is over max_message_bytes ({self.cfg.max_message_bytes})")
        encoding = message.content_encoding
        if encoding in (None, "None"):  # proton reads an absent content-encoding as the string 'None'
            encoding = None
        events: list[Event] = []
        ids: list[str] = []
        via = relayed_by(message)
        for env in cfx.decode(bytes(body), encoding, self.cfg.max_inflated_bytes):
            own = self._own(env, via)
            if own is not None:
                self._dropped(own, env, via)
                continue
            key = _key(env.unique_id)
            if key in self.recent or key in ids or key in pending_ids:
                self.counts["duplicates"] += 1
                continue
            mapped = to_events(env, self.name)
            if not mapped and env.message_name not in MAPPERS:
                self.not_mapped[env.message_name] += 1
            for e in mapped:
                if via:
                    self._cfx_meta(e)["relayed_by"] = via
            if self.keep_original and mapped:
                self._keep_original(env, mapped)
            events += mapped
            ids.append(key)
        return events, ids

    def too_large(self, head: bytes) -> None:
        """A message refused while it arrived (over max_message_bytes): a dead letter with what came of it."""
        self.counts["received"] += 1
        self.counts["too_large"] += 1
        self._bad(None, head, f"message larger than max_message_bytes ({self.cfg.max_message_bytes} bytes): "
                              "refused while it arrived")

    def bad_input(self, message: Any, reason: str) -> None:
        body = message.body
        raw = bytes(body) if isinstance(body, (bytes, bytearray, memoryview)) else str(body).encode()
        self._bad(message.subject, raw, reason)

    def _bad(self, subject: str | None, raw: bytes, reason: str) -> None:
        assert self._bus is not None
        self.counts["bad"] += 1
        self._bus.metrics.record_bad_input(self.name)
        subject = subject or "-"
        log.warning("source %s: bad message (%s): %s", self.name, subject, reason)
        try:
            self._bus.dead_letters.add_bad_input(f"{self.name} {self.cfg.address} {subject}", raw[:1_000_000], reason)
        except Exception as e:  # noqa: BLE001 - journal full or busy: counted and logged, the message is rejected
            log.error("source %s: bad message not kept (%s)", self.name, e)

    def journal(self, pending: list[_Pending]) -> None:
        """One transaction for what arrived together; raises if the journal refuses (nothing accepted then)."""
        assert self._bus is not None
        events = [e for p in pending for e in p.events]
        ids = [i for p in pending for i in p.ids]
        state = {self.recent_key: self.recent.with_new(ids)} if ids else None
        self._bus.publish_many(events, state=state)
        for i in ids:
            self.recent.add(i)
        self._published += len(events)
        self.counts["journaled"] += len(events)
        self.counts["messages"] += len(pending)

    def record_status(self, force: bool = False) -> None:
        self.status.write(self._status_doc, force)

    def _status_doc(self) -> dict[str, Any]:
        return {"port": f"{self.cfg.url} {self.cfg.address}", "online": self.state is TransportState.CONNECTED,
                "handle": self.handle, **dict(self.counts), "not_mapped": dict(self.not_mapped),
                "loop_last": self.loop_last,
                "last_error": self._last_error, "since": datetime.now(timezone.utc).isoformat()}

    def get_stats(self) -> dict[str, Any]:
        return {**super().get_stats(), **dict(self.counts), "not_mapped": dict(self.not_mapped)}


class _StatusTimer:
    """Writes the source's status for ``fixture-agent status`` every second while counts change."""

    def __init__(self, source: CfxSource) -> None:
        self.source = source
        self.seen: dict[str, int] = {}

    @guarded
    def on_timer_task(self, event: Any) -> None:
        event.container.schedule(STATUS_EVERY, self)
        counts = dict(self.source.counts)
        if counts != self.seen:
            self.seen = counts
            self.source.record_status(force=True)


class _Receiver(Reconnecting, MessagingHandler):
    """The container-thread side: receive, batch what arrives together, journal, then settle."""

    def __init__(self, source: CfxSource, options: dict[str, Any]) -> None:
        # credit by hand: proton's flow controller would top it up on every delivery, accepted or not, and a
        # journal that refuses writes would then pull the whole queue into memory
        super().__init__(prefetch=0, auto_accept=False)
        self.receiver: Any = None
        self.source = source
        self.options = options
        self.reconnect_min, self.reconnect_max = float(source.cfg.reconnect_min), float(source.cfg.reconnect_max)
        self.status_timer: _StatusTimer | None = None
        self.pending: list[_Pending] = []
        self.pending_ids: set[str] = set()
        self.flush_scheduled = False
        self.failures = 0

    def open_links(self, container: Any) -> None:
        from proton import Terminus
        from proton.reactor import LinkOption

        limit = self.source.cfg.max_message_bytes

        class Durable(LinkOption):  # the SDK's receiver: source durability "configuration" (matches durable queues)
            def apply(self, link: Any) -> None:
                link.source.durability = Terminus.CONFIGURATION
                link.max_message_size = limit  # advisory (RabbitMQ 3.x ignores it): on_delivery enforces it

        conn = container.connect(**self.options)
        self.receiver = container.create_receiver(conn, self.source.cfg.address, options=Durable())
        self.receiver.flow(self.source.cfg.credit)
        if self.status_timer is None:
            self.status_timer = _StatusTimer(self.source)
            container.schedule(STATUS_EVERY, self.status_timer)

    def on_connection_opened(self, event: Any) -> None:
        self.connected_again()
        self.source._set_state(TransportState.CONNECTED)
        self.source._last_error = None
        self.source.record_status(force=True)
        log.info("source %s: connected to %s, receiving from %s", self.source.name, self.source.cfg.url,
                 self.source.cfg.address)

    def on_transport_error(self, event: Any) -> None:
        cond = event.transport.condition
        why = f"{cond.name}: {cond.description}" if cond else "connection failed"
        self._trouble(why)

    def on_link_error(self, event: Any) -> None:
        cond = event.link.remote_condition
        self._trouble(f"link refused: {cond.name}: {cond.description}" if cond else "link refused")
        event.connection.close()  # a detached link on a live connection would never come back: start over

    def on_link_closing(self, event: Any) -> None:
        if not self.stopping:  # the broker detached us without an error (a deleted queue on some brokers)
            self._trouble("the broker detached the link")
            event.connection.close()

    def lost(self, event: Any) -> None:
        # Deliveries on a dropped connection cannot be settled: the broker sends them again, and those already
        # journaled are recognised by UniqueID.
        self.pending.clear()
        self.pending_ids.clear()
        self.receiver = None
        if not self.stopping:
            self._trouble(self.source._last_error or "disconnected")

    def _trouble(self, why: str) -> None:
        src = self.source
        if src._last_error != why:
            log.warning("source %s: %s (reconnecting)", src.name, why)
        src._last_error = why
        src._set_state(TransportState.RECONNECTING)
        src.record_status(force=True)

    def on_delivery(self, event: Any) -> None:
        """Before proton buffers a message whole: one over max_message_bytes is refused while it arrives, kept as
        a dead letter (its first bytes) and settled, so the broker never sends it again."""
        head = refuse_oversize(event, self.source.cfg.max_message_bytes)
        if head is not None:
            self.source.too_large(head)
            event.link.flow(1)

    def on_message(self, event: Any) -> None:
        if getattr(event.delivery, "refused", False):
            return
        src = self.source
        src.counts["received"] += 1
        try:
            events, ids = src.read(event.message, self.pending_ids)
        except cfx.CfxError as e:
            src.bad_input(event.message, str(e))
            self._settle_rejected(event.delivery, str(e))
            event.receiver.flow(1)
            return
        except Exception as e:  # noqa: BLE001 - a bug of ours for one message must not stop the rest
            log.exception("source %s: message failed", src.name)
            src.bad_input(event.message, f"internal error: {type(e).__name__}: {e}")
            self._settle_rejected(event.delivery, "internal error")
            event.receiver.flow(1)
            return
        self.pending.append(_Pending(event.delivery, events, ids))
        self.pending_ids.update(ids)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            event.container.schedule(0, self)  # after the deliveries already read: one commit for them all

    def _settle_rejected(self, delivery: Any, reason: str) -> None:
        from proton import Condition

        delivery.local.condition = Condition("amqp:decode-error", reason[:500])
        self.reject(delivery)

    def on_timer_task(self, event: Any) -> None:
        self.flush_scheduled = False
        if not self.pending:
            return
        src = self.source
        try:
            src.journal(self.pending)
        except Exception as e:  # noqa: BLE001 - journal full, disk error: keep them (not accepted), try again
            self.failures += 1
            src._report_error(e)
            delay = backoff_delay(self.failures, initial=1.0, maximum=30.0)
            log.error("source %s: cannot journal %d message(s) (%s: %s); not accepting them, trying again in "
                      "%.0fs", src.name, len(self.pending), type(e).__name__, e, delay)
            self.flush_scheduled = True
            event.container.schedule(delay, self)
            return
        self.failures = 0
        for p in self.pending:
            self.accept(p.delivery)
        if self.receiver is not None:
            self.receiver.flow(len(self.pending))  # as many more as were settled: never more than credit held
        self.pending.clear()
        self.pending_ids.clear()
        src.record_status()


def build(section: CfxSourceSection, ctx) -> CfxSource:
    """The plugin's build (``cfx_plugin.PLUGIN``)."""
    return CfxSource(section, ctx.station)
