"""Unsent messages kept in flash while the broker is unreachable, oldest first, sent in order when it returns.

One line per message in ``outbox.txt`` (topic, tab, payload: JSON never contains a raw tab or newline) and, in
``outbox.pos``, the offset of the first line not yet acknowledged by the broker. A message leaves the outbox only
after its PUBACK, so a reset or power cut in the middle of sending costs at most one duplicate, never a message.

Bounded: with ``limit`` messages waiting the oldest is dropped for each new one and counted (``dropped`` goes into
the next ``online`` status, so a loss is visible). Flash is written only while messages are waiting: a device whose
broker is up never touches the outbox.
"""
import os

COMPACT_BYTES = 16384  # rewrite the file once this much of it is already sent


class Outbox:
    def __init__(self, directory, limit):
        self.path = directory + "/outbox.txt"
        self.pos_path = directory + "/outbox.pos"
        self.limit = limit
        self.dropped = 0
        self.pos = self._read_pos()
        self.count, torn, damaged = self._count_lines()
        # a line cut short by a power cut was never complete (so never sent), a line that is not UTF-8 (damaged
        # flash) can never be sent: drop them, keep the rest; the damaged ones are counted and reported
        if torn or damaged:
            self._compact()
            self.dropped += damaged

    def __len__(self):
        return self.count

    def append(self, topic, payload):
        if self.count >= self.limit:
            self.pop()
            self.dropped += 1
        with open(self.path, "a") as f:
            f.write(topic + "\t" + payload + "\n")
        self.count += 1

    def peek(self):
        """The oldest waiting message as (topic, payload), or None."""
        if not self.count:
            return None
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            line = f.readline()
        topic, _, payload = line.decode().rstrip("\n").partition("\t")
        return topic, payload

    def pop(self):
        """Forget the oldest message (it was acknowledged, or dropped for a newer one)."""
        if not self.count:
            return
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            f.readline()
            self.pos = f.tell()
        self.count -= 1
        if not self.count:
            self._remove()
        elif self.pos >= COMPACT_BYTES:
            self._compact()
        else:
            self._write_pos()

    def _read_pos(self):
        try:
            with open(self.pos_path) as f:
                return int(f.read() or 0)
        except (OSError, ValueError):  # none yet, or torn by a power cut: resend from the start (duplicates only)
            return 0

    def _write_pos(self):
        with open(self.pos_path, "w") as f:
            f.write(str(self.pos))

    def _count_lines(self):
        """Read as bytes, as every read here is: MicroPython's text files raise UnicodeError on a line that is not
        UTF-8, and a line torn inside a character is one (the outbox then stopped the device at every boot)."""
        n, torn, damaged = 0, False, 0
        try:
            with open(self.path, "rb") as f:
                if self.pos:  # an offset must be at a line start inside the file, or it is not this file's
                    f.seek(self.pos - 1)
                    if f.read(1) != b"\n":
                        self.pos = 0
                f.seek(self.pos)
                for line in f:
                    torn = not line.endswith(b"\n")
                    ok = not torn and _utf8(line)
                    n += ok
                    damaged += not torn and not ok
        except OSError:
            self.pos = 0
        return n, torn, damaged

    def _compact(self):
        """Keep only the unsent lines. The offset is set to 0 before the new file replaces the old one: a power cut
        in between resends what was already sent (duplicates), where the other order would skip unsent messages."""
        tmp = self.path + ".new"
        with open(self.path, "rb") as src, open(tmp, "wb") as dst:
            src.seek(self.pos)
            for line in src:
                if line.endswith(b"\n") and _utf8(line):
                    dst.write(line)
        self.pos = 0
        self._write_pos()
        os.rename(tmp, self.path)  # littlefs (the ESP32 default) replaces the old file in one step

    def _remove(self):
        # the offset first: a power cut between the two must not leave an offset into a file that is then rebuilt
        for p in (self.pos_path, self.path):
            try:
                os.remove(p)
            except OSError:
                pass
        self.pos = 0


def _utf8(line):
    try:
        line.decode()
        return True
    except UnicodeError:
        return False
