"""AMQP 1.0 with python-qpid-proton, as both CFX parts use it: a proton Container on its own thread.

Proton is not thread-safe: everything that touches a connection, link or delivery runs on the container's thread.
Other threads hand work over with ``ContainerThread.call(fn)`` (an ``EventInjector``), which is how a delivery is
accepted after the journal commit, or a message sent for the subscriber thread.

Decided here once: SASL (PLAIN with a username and a 0600 password file, else ANONYMOUS), TLS with verification on
by default, the RabbitMQ virtual host as the open hostname (``vhost:NAME``), and reconnecting (``Reconnecting``):
whenever the connection ends and the agent is not stopping, it is opened again, with its links, after an
``events.backoff`` delay (exponential with jitter). Proton's own reconnect is off: it gives up for good when the
broker closes the connection cleanly, which is what a RabbitMQ restart does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..config_base import ConfigError
from .amqp_config import AmqpConnectionSection
from ..events.backoff import backoff_delay
from .. import secrets

log = logging.getLogger(__name__)


def connect_options(cfg: AmqpConnectionSection, what: str) -> dict[str, Any]:
    """Keyword arguments for ``Container.connect``: url, credentials, TLS, vhost, reconnect, heartbeat."""
    from proton import SSLDomain

    # reconnecting is ours (``Reconnecting``): proton's own gives up for good when the broker closes the
    # connection cleanly (a RabbitMQ restart), and two mechanisms would open two connections
    kw: dict[str, Any] = {"url": cfg.url, "reconnect": False, "heartbeat": float(cfg.heartbeat)}
    if cfg.username:
        password = None
        if secrets.configured(cfg, "password"):
            password, where = secrets.resolve(cfg, "password", f"{what}.password")
            if password is None:
                raise ConfigError(f"{what}.password: nothing at {where}")
        kw.update(user=cfg.username, password=password or "", allowed_mechs="PLAIN", allow_insecure_mechs=True)
    else:
        kw["allowed_mechs"] = "ANONYMOUS"
    if cfg.virtual_host:
        kw["virtual_host"] = f"vhost:{cfg.virtual_host}"
    if cfg.tls:
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        if cfg.ca_file:
            domain.set_trusted_ca_db(cfg.ca_file)
        if cfg.cert_file:
            domain.set_credentials(cfg.cert_file, cfg.key_file, None)
        if cfg.verify_tls:
            domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME, cfg.ca_file)
        else:
            domain.set_peer_authentication(SSLDomain.ANONYMOUS_PEER)
            log.warning("%s: TLS verification is off (verify_tls = false)", what)
        kw["ssl_domain"] = domain
        # proton takes the open hostname (``vhost:NAME`` above) as the TLS server name unless told otherwise: the
        # certificate names the broker's host, so SNI and the name checked are the URL's host
        kw["sni"] = url_host(cfg.url)
    return kw


def url_host(url: str) -> str:
    """``amqps://broker.plant:5671`` → ``broker.plant`` (``[::1]`` → ``::1``)."""
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        return rest[1:rest.index("]")]
    return rest.rsplit(":", 1)[0] if ":" in rest else rest


class ContainerDied(RuntimeError):
    """The proton container returned although nobody stopped it: that part of the agent is dead."""


class ContainerThread:
    """A proton Container running ``handler`` on a thread of its own."""

    def __init__(self, handler: Any, container_id: str, name: str) -> None:
        from proton.reactor import Container, EventInjector

        self.handler = handler
        self.container = Container(handler)
        self.container.container_id = container_id
        self.injector = EventInjector()
        self.container.selectable(self.injector)
        self.name = name
        self._thread: threading.Thread | None = None
        handler.on_agent_call = self._on_agent_call  # dispatched by the ApplicationEvent type below

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Handlers guard their own event methods (``guarded``): an exception escaping to here is proton's own (an
        # accept that failed for want of file descriptors, a broken reactor), and running the container again
        # would replay the failed event and call on_start (a second connection). So the thread dies of it, out
        # loud: the runtime's thread-death hook stops the agent (EX_SOFTWARE) and the service manager starts it
        # again with a fresh container, instead of CFX going quiet while ``status`` says running.
        try:
            self.container.run()
        except Exception:
            log.critical("%s: the AMQP container stopped", self.name, exc_info=True)
            raise
        if not getattr(self.handler, "stopping", False):
            raise ContainerDied(f"{self.name}: the AMQP container ended while the agent was running")

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the container's thread, soon."""
        from proton.reactor import ApplicationEvent

        self.injector.trigger(ApplicationEvent("agent_call", subject=fn))

    def _on_agent_call(self, event: Any) -> None:
        try:
            event.subject()
        except Exception:  # noqa: BLE001 - a failed hand-over must not take the container down
            log.exception("%s: a call on the AMQP thread failed", self.name)

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return

        def halt() -> None:
            self.handler.stopping = True
            self.injector.close()
            self.container.stop()

        self.call(halt)
        self._thread.join(timeout)
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def refuse_oversize(event: Any, limit: int) -> bytes | None:
    """(on_delivery) Refuse an incoming message once more than ``limit`` bytes of it arrived: it is rejected
    (``amqp:link:message-size-exceeded``) and settled while still partial, so the rest is never buffered and the
    broker does not send it again (a detached link or a dropped connection would have it redelivered, forever).
    Returns the first bytes received, for the dead-letter table; None when the delivery is within the limit.

    The link's own max-message-size is set too, but is advisory: RabbitMQ 3.x sends larger messages anyway,
    and proton does not enforce it on receipt."""
    from proton import Condition, Delivery

    dlv = event.delivery
    if dlv is None or not dlv.link.is_receiver or dlv.settled or dlv.pending <= limit:
        return None
    head = dlv.link.recv(dlv.pending) or b""
    dlv.local.condition = Condition("amqp:link:message-size-exceeded",
                                    f"message larger than {limit} bytes: refused")
    dlv.update(Delivery.REJECTED)
    dlv.settle()
    dlv.refused = True  # (proton keeps attributes with the delivery) on_message, if it still comes, skips it
    return head


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An event method that logs its own exception instead of letting it out of the container: proton keeps a
    failed event at the head of its queue, so one exception would otherwise end (or, run again, jam) the link."""
    import functools

    @functools.wraps(fn)
    def wrapper(self: Any, event: Any) -> Any:
        try:
            return fn(self, event)
        except Exception:  # noqa: BLE001 - logged, counted by the caller's state; the next event goes on
            log.exception("AMQP handler %s.%s failed", type(self).__name__, fn.__name__)
            return None

    return wrapper


class Reconnecting:
    """Mixed into a proton handler: ``open_links(container)`` is called at start and again, after a backoff delay,
    whenever the connection ends (refused, dropped, closed by the broker) and the agent is not stopping. Every
    ``on_*`` method of a subclass is ``guarded``."""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        for name, fn in list(vars(cls).items()):
            if name.startswith("on_") and callable(fn):
                setattr(cls, name, guarded(fn))

    stopping = False
    reconnect_min = 1.0
    reconnect_max = 60.0
    _attempt = 0

    def open_links(self, container: Any) -> None:
        raise NotImplementedError

    @guarded
    def on_start(self, event: Any) -> None:
        self.open_links(event.container)

    def connected_again(self) -> None:
        self._attempt = 0

    def on_disconnected(self, event: Any) -> None:
        """(proton calls this only when the connection was still open locally: on_transport_closed covers all)"""

    @guarded
    def on_transport_closed(self, event: Any) -> None:
        # Every end of a connection lands here, also a broker's clean close (after which proton's own handlers
        # have closed the connection locally, and on_disconnected never comes).
        self.lost(event)
        if self.stopping:
            return
        self._attempt += 1
        delay = backoff_delay(self._attempt, initial=self.reconnect_min, maximum=self.reconnect_max)
        event.container.schedule(delay, _Reopen(self))

    def lost(self, event: Any) -> None:
        """The connection ended: forget what was tied to it."""


class _Reopen:
    def __init__(self, handler: Reconnecting) -> None:
        self.handler = handler

    @guarded
    def on_timer_task(self, event: Any) -> None:
        if not self.handler.stopping:
            self.handler.open_links(event.container)
