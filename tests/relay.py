"""A TCP relay on loopback that times idle keep-alive connections out with ``408 Request Timeout``, as Kestrel and
many proxies do, in front of a local GPTalk server. Each byte boundary it writes is its own."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"


class IdleTimeoutRelay:
    """Relays 127.0.0.1:<port> to ``target`` (host, port). A client connection idle for ``idle`` seconds is met,
    by ``mode``:

    - ``"408-close"``: a 408 with ``Connection: close``, then the close (what Kestrel sends);
    - ``"408-open"``: a 408 and nothing else: the connection stays open with those bytes waiting;
    - ``"stray-200"``: a whole ``200`` answer nobody asked for, as a broken proxy may send after a body;
    - ``"408-next"``: nothing at once, but the next request on it is answered 408 and closed, unread by the server
      (a request that crossed the server's timeout on the wire).

    ``stats["timeouts"]`` counts the 408s (or stray answers) sent. Use as ``with IdleTimeoutRelay(...) as r:``.
    """

    def __init__(self, target: tuple[str, int], idle: float, mode: str) -> None:
        self.target, self.idle, self.mode = target, idle, mode
        self.stats: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.url = ""

    def __enter__(self) -> IdleTimeoutRelay:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", 0), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers += [client_writer, upstream_writer]
        answers = asyncio.ensure_future(self._pump(upstream_reader, client_writer))
        try:
            await self._requests(client_reader, client_writer, upstream_writer)
        finally:
            answers.cancel()
            upstream_writer.close()
            client_writer.close()

    async def _requests(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                        upstream_writer: asyncio.StreamWriter) -> None:
        timed_out = False
        while True:
            try:
                data = await asyncio.wait_for(client_reader.read(65536), self.idle)
            except TimeoutError:
                if self.mode == "408-next":
                    timed_out = True
                    continue
                closing = self.mode == "408-close"
                if self.mode == "stray-200":
                    client_writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nnot you")
                else:
                    client_writer.write(TIMEOUT_408 + (b"Connection: close\r\n\r\n" if closing else b"\r\n"))
                await client_writer.drain()
                self.stats["timeouts"] += 1  # counted once sent: a caller that waits for it finds the bytes there
                if closing:
                    return
                continue
            if not data:
                return
            if timed_out:
                client_writer.write(TIMEOUT_408 + b"Connection: close\r\n\r\n")
                await client_writer.drain()
                self.stats["timeouts"] += 1
                return
            upstream_writer.write(data)
            await upstream_writer.drain()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
