"""MicroPython's socket names for umqtt.simple under CPython: real TCP sockets with MicroPython's stream methods
(``read(n)`` reads n bytes or to the end, None when a non-blocking socket has nothing; ``write(buf, n)``)."""
from __future__ import annotations

import socket as _socket


def getaddrinfo(host: str, port: int, *_: object) -> list:
    return _socket.getaddrinfo(host, port, _socket.AF_INET, _socket.SOCK_STREAM)


class socket:
    def __init__(self, af: int = _socket.AF_INET, type: int = _socket.SOCK_STREAM, proto: int = 0) -> None:
        self._s = _socket.socket(af, type, proto)

    def connect(self, addr: tuple) -> None:
        self._s.connect(addr)

    def setblocking(self, flag: bool) -> None:
        self._s.setblocking(flag)

    def settimeout(self, t: float | None) -> None:
        self._s.settimeout(t)

    def write(self, buf: bytes | bytearray | str, n: int | None = None) -> int:
        data = buf.encode() if isinstance(buf, str) else bytes(memoryview(buf)[:n] if n is not None else buf)
        self._s.sendall(data)
        return len(data)

    def read(self, n: int) -> bytes | None:
        out = b""
        while len(out) < n:
            try:
                chunk = self._s.recv(n - len(out))
            except BlockingIOError:
                return out or None
            if not chunk:
                break
            out += chunk
        return out

    def close(self) -> None:
        self._s.close()
