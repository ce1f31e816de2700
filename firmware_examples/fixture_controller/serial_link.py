"""The agent's serial JSON-lines protocol, controller side (the agent's docs/serial-protocol.md).

Every message gets the next ``seq`` of this boot's ``session`` and is kept until the agent acknowledges it (an
ack for n covers everything up to n: the agent writes it only once the event is durable). If the oldest kept
message has waited ``resend_ms``, all kept messages are written again, oldest first, unchanged: the agent
acknowledges what it already has without recording it twice, so a lost ack, a lost line or an agent restart
costs nothing. Bounded: with ``capacity`` messages kept the oldest is dropped for a new one, and every message
then says ``oldest`` so the agent records the gap instead of waiting for it.
"""
import json
import os

from clock import ticks_diff, ticks_ms

MAX_LINE = 1024  # an ack is ~30 bytes: a longer line without a newline is noise, not worth memory


class SerialLink:
    def __init__(self, uart, resend_ms=2000, capacity=64):
        self.uart = uart
        self.resend_ms = resend_ms
        self.capacity = capacity
        self.session = "%08x" % _random32()  # a new one every boot, never reused
        self.seq = 0
        self.kept = []  # unacknowledged messages, oldest first
        self.dropped = 0
        self.oldest_sent = ticks_ms()
        self.rx = b""

    def send(self, doc):
        self.seq += 1
        doc["seq"], doc["session"] = self.seq, self.session
        if len(self.kept) >= self.capacity:
            self.kept.pop(0)
            self.dropped += 1
        self.kept.append(doc)
        if len(self.kept) == 1:
            self.oldest_sent = ticks_ms()
        self._write(doc)

    def poll(self):
        """Read acknowledgements; resend everything kept if the oldest has waited too long."""
        self._read()
        if self.kept and ticks_diff(ticks_ms(), self.oldest_sent) >= self.resend_ms:
            for doc in self.kept:
                self._write(doc)
            self.oldest_sent = ticks_ms()

    def _write(self, doc):
        if self.dropped:
            doc["oldest"] = self.kept[0]["seq"]
        self.uart.write((json.dumps(doc) + "\n").encode())

    def _read(self):
        data = self.uart.read() if self.uart.any() else None
        if not data:
            return
        self.rx += data
        while b"\n" in self.rx:
            line, self.rx = self.rx.split(b"\n", 1)
            self._ack(line)
        if len(self.rx) > MAX_LINE:
            self.rx = b""

    def _ack(self, line):
        try:
            doc = json.loads(line)
            n = doc["ack"]
        except (ValueError, KeyError, TypeError):
            return  # line noise: the resend timer covers whatever it was
        if not isinstance(n, int):
            return
        if doc.get("error"):
            print("agent refused message %d: %s" % (n, doc["error"]))
        before = len(self.kept)
        while self.kept and self.kept[0]["seq"] <= n:
            self.kept.pop(0)
        if len(self.kept) != before:
            self.oldest_sent = ticks_ms()  # the new oldest was just sent or is about to be: its own wait starts
        if not self.kept:
            self.dropped = 0  # the agent has everything from the gap on: no need to say it again


def _random32():
    """32 random bits for this boot's session. ``os.urandom`` (the hardware RNG on the ESP32 and the Pico) is not
    on every port: MicroPython's WebAssembly port has none, and a missing one made the controller fail at boot
    (AttributeError). ``random`` is there on every port, seeded at boot (from the hardware where the port can).
    A session that repeated across boots would be worse than none: the agent takes its seq 1 for a resend of
    what it already has and drops it."""
    try:
        return int.from_bytes(os.urandom(4), "big")
    except AttributeError:
        import random

        return random.getrandbits(32)
