"""A TCP proxy on 127.0.0.1 that can cut the database off, make it hang or make it slow, for fault tests.

- `cut()`: connections are reset and new ones refused (or reset): a database that is down.
- `hang()`: connections stay open and new ones are accepted, but nothing is forwarded either way until
  `heal()` (a blackhole: a partition, a frozen host); what was held back is delivered then.
- `slow(seconds)`: every chunk waits that long before it is forwarded, each way (latency).

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
        self._latency = 0.0
        self._flowing: asyncio.Event | None = None
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
        """Forward again, at full speed."""
        self._call(self._heal())

    def hang(self) -> None:
        """Accept connections but forward nothing (both ways) until `heal()`."""
        self._call(self._set_flow(flowing=False))

    def slow(self, seconds: float) -> None:
        """Delay every chunk by `seconds` before forwarding it, until `heal()`."""
        self._latency = seconds

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

    async def _set_flow(self, *, flowing: bool) -> None:
        if self._flowing is None:
            self._flowing = asyncio.Event()
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _listen(self) -> None:
        await self._set_flow(flowing=True)
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
        self._latency = 0.0
        await self._set_flow(flowing=True)
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
        assert self._flowing is not None
        self._open.add(client_writer)
        await self._flowing.wait()  # a hung database accepts, then says nothing
        self._open.discard(client_writer)
        if client_writer.is_closing():
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

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(65536):
                if self._latency:
                    await asyncio.sleep(self._latency)
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
