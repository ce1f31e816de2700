"""A process with a durable subscriber whose side effect is an fsynced line per handled event.

Run by the crash test and killed with SIGKILL at random moments. Usage: consumer.py JOURNAL OUTFILE [DELAY_S]
(DELAY_S slows each delivery, like a real sink, so that kills land mid-stream.)
"""

import os
import sys
import time

from agent.events import BaseHandler, EventBus, Journal


class Appender(BaseHandler):
    name = "appender"

    def __init__(self, path, delay=0.0):
        self.delay = delay
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def handle(self, event):
        os.write(self.fd, (event.id + "\n").encode())
        os.fsync(self.fd)  # the side effect is durable before the bus acknowledges
        if self.delay:
            time.sleep(self.delay)


if __name__ == "__main__":
    journal = Journal(sys.argv[1], cursor_flush_interval=0.01)
    bus = EventBus(journal)
    bus.register_handler(Appender(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0))
    bus.start()
    print("ready", flush=True)
    while True:
        time.sleep(1)
