"""A raw-socket HTTP server on loopback for byte-level cases: each connection's requests are answered by a function
that writes exactly the bytes it wants, where it wants, and may stall or hang up."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

Answer = Callable[[socket.socket, bytes, int], None]
"""Writes the answer to request number N (from 0, over all connections), given its head and body."""


class RawServer:
    """``with RawServer(answer) as server:`` then ``server.url``; ``server.requests`` counts what arrived."""

    def __init__(self, answer: Answer, ssl_context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._ssl_context = ssl_context
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closing = threading.Event()
        self.connections: list[socket.socket] = []
        """The connections accepted, in order."""

    def __enter__(self) -> RawServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        self._listener.close()
        for connection in self.connections:
            connection.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        try:
            if self._ssl_context is not None:
                connection = self._ssl_context.wrap_socket(connection, server_side=True)
                self.connections.append(connection)  # closed at exit with the plain one it wraps
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = connection.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buffer) < length:
                    buffer += connection.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                number, self.requests = self.requests, self.requests + 1
                self.answer(connection, head + b"\r\n\r\n" + body, number)
        except OSError:
            return


def json_answer(body: bytes, extra: bytes = b"") -> bytes:
    """A 200 JSON answer with its Content-Length, and ``extra`` bytes after it."""
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s%s" % (
        len(body), body, extra)


LOGIN = b'{"code": 0, "data": {"token": "t0k3n", "expires_at": 0}}'
ASK = b'{"code": 0, "data": {"token": "str3am"}}'


def login_ask_then(stream: Callable[[socket.socket], None]) -> Answer:
    """A raw server's answer: a working login and ask, then ``stream(connection)`` for the stream request."""
    def answer(connection: socket.socket, request: bytes, number: int) -> None:
        if b"/user/login" in request:
            connection.sendall(json_answer(LOGIN))
        elif b"/chatapi/text" in request:
            connection.sendall(json_answer(ASK))
        else:
            stream(connection)
    return answer
