"""A TCP proxy on 127.0.0.1 that can cut the database off and let it back, for outage tests.

The proxy runs its own event loop in a thread, so it keeps forwarding whatever the test's loop is doing.
"""

import asyncio
import enum
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Outage(enum.StrEnum):
    """How the proxy behaves while the database is cut off (open connections are reset either way)."""

    # Nothing listens on the port: a new connection is refused (MySQL client error 2003).
    REFUSE = "refuse"
    # The port accepts and resets at once: the handshake is lost (MySQL client error 2013).
    RESET = "reset"


class TcpProxy:
    """Forward 127.0.0.1:<port> to `upstream`; `cut()` drops every connection and refuses new ones."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.accepted = 0
        self.reset = 0
        self._outage: Outage | None = None
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)

    # --- control, from any thread ---------------------------------------------------------------

    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self, outage: Outage = Outage.REFUSE) -> None:
        """Reset every open connection, and refuse (or reset) new ones until `heal()`."""
        self._call(self._cut(outage))

    def heal(self) -> None:
        """Forward again."""
        self._call(self._heal())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._cut(Outage.REFUSE))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # --- the proxy itself, on its own loop -------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self, outage: Outage) -> None:
        self._outage = outage
        if outage == Outage.REFUSE and self._server is not None:
            self._server.close()
            self._server = None
        elif outage == Outage.RESET and self._server is None:
            await self._listen()
        for writer in list(self._open):
            self._abort(writer)
        self._open.clear()

    async def _heal(self) -> None:
        self._outage = None
        if self._server is None:
            await self._listen()

    def _abort(self, writer: asyncio.StreamWriter) -> None:
        """Close with a TCP reset, as a dropped link or a killed server looks to the client."""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        writer.transport.abort()
        self.reset += 1

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._outage is not None:
            self._abort(client_writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._abort(client_writer)
            return
        self.accepted += 1
        self._open |= {client_writer, upstream_writer}
        try:
            await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))
        finally:
            for writer in (client_writer, upstream_writer):
                self._open.discard(writer)
                writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
