"""A TCP proxy for integration tests, to take the broker away from its clients and give it back.

The embedded broker advertises the proxy's port, so every client connection (the bootstrap and
the ones metadata names) goes through it. :meth:`TcpProxy.cut` closes every connection and stops
listening, as a network outage between the worker and Kafka would; :meth:`TcpProxy.restore`
listens again on the same port. The broker and its data stay as they were.

Given a server TLS context, the proxy terminates TLS: clients speak TLS to it (mutual TLS if
the context requires a client certificate), and it speaks plain Kafka to the broker, as a
TLS listener of a real cluster would.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from concurrent.futures import Future
from typing import Any


class TcpProxy:
    def __init__(
        self,
        listen_port: int,
        target_port: int,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.listen_port = listen_port
        self.target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    def restore(self) -> None:
        """Listen (again) on the proxy's port."""
        self._call(self._listen())

    def cut(self) -> None:
        """Stop listening and close every connection in both directions."""
        self._call(self._cut())

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve,
                self.host,
                self.listen_port,
                reuse_address=True,
                ssl=self.ssl_context,
                ssl_handshake_timeout=10 if self.ssl_context else None,
            )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self.connections += 1
        self._writers.update((client_w, broker_w))
        await asyncio.gather(self._pipe(client_r, broker_w), self._pipe(broker_r, client_w))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
