"""``network`` for the firmware examples under MicroPython's own interpreter: a station interface that has joined
by the next look after ``connect`` (joining takes a moment), unless the test took the access point away
(``link_up = False``)."""
import machine

STA_IF, AP_IF = 0, 1
STAT_IDLE, STAT_CONNECTING, STAT_GOT_IP = 1000, 1001, 1010
link_up = True


class WLAN:
    def __init__(self, interface=STA_IF):
        self._active = False
        self._joined = False

    def active(self, on=None):
        if on is not None:
            self._active = on
        return self._active

    def connect(self, ssid, key=None):
        self._joined = self._active and link_up

    def status(self):
        return STAT_GOT_IP if self.isconnected() else STAT_IDLE

    def isconnected(self):
        machine.world()
        self._joined = self._joined and link_up
        return self._joined

    def ifconfig(self):
        return ("192.168.50.12", "255.255.255.0", "192.168.50.1", "192.168.50.1")
