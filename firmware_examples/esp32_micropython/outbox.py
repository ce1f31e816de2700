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
        self.count, torn = self._count_lines()
        if torn:  # a line cut short by a power cut was never complete (so never sent): drop it, keep the rest
            self._compact()

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
        with open(self.path) as f:
            f.seek(self.pos)
            line = f.readline()
        topic, _, payload = line.rstrip("\n").partition("\t")
        return topic, payload

    def pop(self):
        """Forget the oldest message (it was acknowledged, or dropped for a newer one)."""
        if not self.count:
            return
        with open(self.path) as f:
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
        n, torn = 0, False
        try:
            with open(self.path) as f:
                if self.pos:  # an offset must be at a line start inside the file, or it is not this file's
                    f.seek(self.pos - 1)
                    if f.read(1) != "\n":
                        self.pos = 0
                f.seek(self.pos)
                for line in f:
                    torn = not line.endswith("\n")
                    n += not torn
        except OSError:
            self.pos = 0
        return n, torn

    def _compact(self):
        """Keep only the unsent lines. The offset is set to 0 before the new file replaces the old one: a power cut
        in between resends what was already sent (duplicates), where the other order would skip unsent messages."""
        tmp = self.path + ".new"
        with open(self.path) as src, open(tmp, "w") as dst:
            src.seek(self.pos)
            for line in src:
                if line.endswith("\n"):
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
