"""``usocket`` for umqtt.simple under MicroPython's own interpreter (its WebAssembly port has no sockets): the
socket's other end is ``BROKER``, an MQTT 3.1.1 broker in memory that answers CONNECT, QoS 0/1 PUBLISH, PINGREQ
and DISCONNECT as mosquitto would, and records what it got. The test takes it down (``stop``: the connection is
reset, new ones refused), makes it stop answering (``silent``: a half-open connection) or brings it back.

MicroPython's socket behaviour kept: ``read(n)`` returns None on a non-blocking socket with nothing to read and
b"" once the peer closed; a blocking read the peer never answers raises OSError(ETIMEDOUT) after ``settimeout``.
"""
import errno

import machine


class Broker:
    def __init__(self):
        self.up = True
        self.silent = False
        self.users = None  # {user: password} (str), or None: anonymous
        self.published = []  # (topic, payload, retain, qos), in the order they came
        self.retained = {}
        self.connects = []  # what each CONNECT said
        self.sock = None

    def stop(self):
        self.up = False
        if self.sock:
            self.sock.dead = True
            self.sock = None

    def start(self):
        self.up, self.silent = True, False


BROKER = Broker()


def getaddrinfo(host, port, *args):
    return [(2, 1, 0, "", (host, port))]


def _str(buf, i):
    n = buf[i] << 8 | buf[i + 1]
    return bytes(buf[i + 2:i + 2 + n]), i + 2 + n


class socket:
    def __init__(self, *args):
        self.inbound = b""
        self.outbound = b""
        self.blocking = True
        self.timeout = None
        self.dead = False
        self.closed = False

    def connect(self, addr):
        machine.world()
        if not BROKER.up:
            raise OSError(errno.ECONNREFUSED)
        BROKER.sock = self

    def settimeout(self, t):
        self.timeout = t
        self.blocking = t != 0

    def setblocking(self, flag):
        self.blocking = flag
        self.timeout = None if flag else 0

    def close(self):
        self.closed = True
        if BROKER.sock is self:
            BROKER.sock = None

    def write(self, buf, n=None):
        if self.dead or self.closed:
            raise OSError(errno.ECONNRESET)
        data = bytes(buf) if n is None else bytes(buf)[:n]
        self.inbound += data
        self._serve()
        return len(data)

    def read(self, n):
        machine.world()
        if self.dead:
            return b""
        if not self.outbound:
            if not self.blocking:
                return None
            raise OSError(errno.ETIMEDOUT)  # nothing will ever come: what a socket with a timeout says
        out, self.outbound = self.outbound[:n], self.outbound[n:]
        return out

    def _serve(self):
        while len(self.inbound) >= 2:
            size, mult, i = 0, 1, 1
            while True:
                if i >= len(self.inbound):
                    return
                b = self.inbound[i]
                size += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            if len(self.inbound) < i + size:
                return
            kind, body = self.inbound[0], self.inbound[i:i + size]
            self.inbound = self.inbound[i + size:]
            if not BROKER.silent:
                self._packet(kind, body)

    def _packet(self, kind, body):
        if kind == 0x10:  # CONNECT
            flags, keepalive = body[7], body[8] << 8 | body[9]
            client_id, i = _str(body, 10)
            c = {"client_id": client_id, "keepalive": keepalive, "clean": bool(flags & 2)}
            if flags & 4:
                c["will_topic"], i = _str(body, i)
                c["will_message"], i = _str(body, i)
                c["will_qos"], c["will_retain"] = flags >> 3 & 3, bool(flags & 0x20)
            if flags & 0x80:
                c["user"], i = _str(body, i)
            if flags & 0x40:
                c["password"], i = _str(body, i)
            BROKER.connects.append(c)
            user, password = c.get("user", b"").decode(), c.get("password", b"").decode()
            ok = BROKER.users is None or (user in BROKER.users and BROKER.users[user] == password)
            self.outbound += b"\x20\x02\x00" + (b"\x00" if ok else b"\x05")
        elif kind & 0xF0 == 0x30:  # PUBLISH
            qos, retain = kind >> 1 & 3, bool(kind & 1)
            topic, i = _str(body, 0)
            if qos:
                pid, i = body[i:i + 2], i + 2
            msg = bytes(body[i:])
            BROKER.published.append((topic.decode(), msg.decode(), retain, qos))
            if retain:
                BROKER.retained[topic.decode()] = msg.decode()
            if qos == 1:
                self.outbound += b"\x40\x02" + pid
        elif kind == 0xC0:  # PINGREQ
            self.outbound += b"\xd0\x00"
        elif kind == 0xE0:  # DISCONNECT
            self.close()
