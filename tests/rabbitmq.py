"""A private RabbitMQ 3.x node with the AMQP 1.0 plugin, for the CFX tests (``reference/test-infrastructure.md``).

Its own node name, ports (AMQP, distribution, epmd), data and log directories and HOME, so it never touches another
node on the machine; exchanges, queues and bindings from a definitions file at boot. A node takes 5-10 s to boot:
the tests start one per session. ``crash()`` kills the Erlang VM itself (the wrapper script would survive a
SIGKILL and leave the node running).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from agent.protocols import cfx
from tests.conftest import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"

def _exchange(name: str, vhost: str = "/") -> dict:
    return {"name": name, "vhost": vhost, "type": "topic", "durable": True, "auto_delete": False, "internal": False,
            "arguments": {}}


def _queue(name: str, vhost: str = "/") -> dict:
    return {"name": name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": {}}


def _binding(exchange: str, queue: str, key: str = "#", vhost: str = "/") -> dict:
    return {"source": exchange, "vhost": vhost, "destination": queue, "destination_type": "queue",
            "routing_key": key, "arguments": {}}


#: the usual MES binding: every test and inspection message, whoever sent it (the agent's own subject too)
MES_BINDING = "#.CFX.Production.TestAndInspection.#"

#: plant: where other equipment publishes (the agent's ingest reads "agent-in", bound to all of it);
#: cfx: where the agent's own endpoint publishes (a consumer, "mes", gets all of it).
#: site: the plant topology of one broker: everyone (testers, the agent's endpoint) publishes to it, the agent's
#: ingest reads "site-agent" (a catch-all binding, so the agent's own messages arrive there too) and the MES reads
#: "site-mes" (MES_BINDING). relay1/relay2: two sites whose agents relay to each other (q1 <- relay1, q2 <- relay2).
#: The virtual host "cfx-site" is for the TLS-with-vhost test.
DEFINITIONS = {
    "exchanges": [_exchange("plant"), _exchange("cfx"), _exchange("site"), _exchange("relay1"), _exchange("relay2")],
    "queues": [_queue("agent-in"), _queue("mes"), _queue("site-agent"), _queue("site-mes"), _queue("q1"),
               _queue("q2"), _queue("mes1"), _queue("mes2")],
    "bindings": [_binding("plant", "agent-in"), _binding("cfx", "mes"), _binding("site", "site-agent"),
                 _binding("site", "site-mes", MES_BINDING), _binding("relay1", "q1"), _binding("relay2", "q2"),
                 _binding("relay1", "mes1"), _binding("relay2", "mes2")],
    "users": [{"name": "guest", "password": "guest", "tags": "administrator"},
              {"name": "fixture", "password": "fx-Pa55", "tags": ""}],
    "vhosts": [{"name": "/"}, {"name": "cfx-site"}],
    "permissions": [{"user": u, "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}
                    for u in ("guest", "fixture") for v in ("/", "cfx-site")],
}


class RabbitMQ:
    def __init__(self, workdir: Path, certs: dict[str, Path] | None = None) -> None:
        self.dir = Path(workdir)
        self.certs = certs  # with test certificates: also a TLS listener (amqps) on tls_port
        self.tls_port = free_port()
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"fxtest{uuid.uuid4().hex[:8]}@localhost"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"amqps://localhost:{self.tls_port}"

    def _env(self) -> dict[str, str]:
        d = self.dir
        return {**os.environ, "HOME": str(d), "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_DIST_PORT": str(self.dist_port),
                "ERL_EPMD_PORT": str(self.epmd_port), "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
                "RABBITMQ_LOG_BASE": str(d / "log"), "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
                "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf")}

    def start(self, timeout: float = 60.0) -> "RabbitMQ":
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "enabled_plugins").write_text("[rabbitmq_amqp1_0].\n")
        (d / "definitions.json").write_text(json.dumps(DEFINITIONS))
        (d / "rabbitmq-env.conf").write_text("")
        (d / "rabbitmq.conf").write_text(
            f"load_definitions = {d / 'definitions.json'}\n"
            "loopback_users = none\n"
            "log.console = false\n"
            f"log.file = {d / 'log' / 'rabbit.log'}\n"
            + (f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
               f"ssl_options.cacertfile = {self.certs['ca.crt']}\n"
               f"ssl_options.certfile = {self.certs['server.crt']}\n"
               f"ssl_options.keyfile = {self.certs['server.key']}\n"
               "ssl_options.verify = verify_none\n"
               "ssl_options.fail_if_no_peer_cert = false\n" if self.certs else ""))
        self.proc = subprocess.Popen([SERVER], env=self._env(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited {self.proc.returncode}; logs in {self.dir / 'log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"AMQP\x03\x01\x00\x00")  # SASL layer of AMQP 1.0: answered once the plugin is up
                    s.settimeout(2)
                    if s.recv(8).startswith(b"AMQP"):
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"RabbitMQ did not accept AMQP 1.0 on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._kill_epmd()
        self.proc = None

    def crash(self) -> None:
        """SIGKILL to the whole node (VM, wrapper, its epmd): a power cut as far as the broker is concerned."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._kill_epmd()
        self.proc = None

    def _kill_epmd(self) -> None:
        """The node started a private epmd daemon (its port is in its environment, not its command line); it is
        ours to end, and only that one."""
        mark = f"ERL_EPMD_PORT={self.epmd_port}".encode()
        for proc in Path("/proc").iterdir():  # (no pgrep: procps may not be installed)
            if not proc.name.isdigit():
                continue
            try:
                if (proc / "comm").read_text().strip() == "epmd" and \
                        mark in (proc / "environ").read_bytes().split(b"\0"):
                    os.kill(int(proc.name), signal.SIGTERM)
            except (OSError, ValueError):
                pass


# ------------------------------------------------------------------------------------------- AMQP 1.0 peers
def send(snd, doc, *, compress=False, subject=None, raw: bytes | None = None, encoding="auto"):
    """As the SDK sends: one Data section, durable, message-id = UniqueID, cfx-* properties."""
    from proton import Message

    if raw is None:
        props = cfx.amqp_properties(doc if isinstance(doc, dict) else doc[0], compressed=compress)
        body = cfx.encode(doc, compress=compress)
    else:
        props, body = {"id": str(uuid.uuid4()), "subject": subject or "x", "content_type": cfx.CONTENT_TYPE,
                       "content_encoding": None, "properties": {}}, raw
    enc = props["content_encoding"] if encoding == "auto" else encoding
    msg = Message(body=body, inferred=True, durable=True, id=props["id"], subject=subject or props["subject"],
                  content_type=props["content_type"], content_encoding=enc, properties=props["properties"])
    snd.send(msg, timeout=20)


def envelope_of(m):
    return cfx.decode(bytes(m.body), None if m.content_encoding in (None, "None") else m.content_encoding)[0]
