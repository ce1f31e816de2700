"""``network`` for the firmware examples under CPython: a station interface that joins at once, unless the test
took the access point away (``link_up = False``)."""
from __future__ import annotations

STA_IF, AP_IF = 0, 1
STAT_IDLE, STAT_CONNECTING, STAT_GOT_IP = 1000, 1001, 1010
link_up = True


class WLAN:
    def __init__(self, interface: int = STA_IF) -> None:
        self._active = False
        self._joined = False

    def active(self, on: bool | None = None) -> bool:
        if on is not None:
            self._active = on
        return self._active

    def connect(self, ssid: str, key: str | None = None) -> None:
        self._joined = self._active and link_up

    def status(self) -> int:
        return STAT_GOT_IP if self.isconnected() else STAT_IDLE

    def isconnected(self) -> bool:
        self._joined = self._joined and link_up
        return self._joined

    def ifconfig(self) -> tuple[str, str, str, str]:
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
