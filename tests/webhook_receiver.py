"""A real HTTP receiver for webhook tests: a small HTTP/1.1 server on 127.0.0.1 that verifies every
signature with `standardwebhooks` and answers what the test tells it to."""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    at: float
    verified: bool
    status: int = 0

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


Answer = tuple[int, dict[str, str], bytes]


async def ok(_: Received) -> Answer:
    return 200, {}, b"ok"


@dataclass
class Receiver:
    """Answers every request with `answer(request)`; keeps every request in `requests`."""

    secret: str | None = None
    answer: Callable[[Received], Awaitable[Answer]] = ok
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> "Receiver":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def delivered(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        return [r for r in self.requests if 200 <= r.status < 300]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                verified = False
                if self.secret is not None:
                    try:
                        Webhook(self.secret).verify(body, headers)
                        verified = True
                    except WebhookVerificationError:
                        verified = False
                received = Received(headers=headers, body=body, at=time.monotonic(), verified=verified)
                self.requests.append(received)
                status, extra, content = await self.answer(received)
                received.status = status
                head = [f"HTTP/1.1 {status} X", f"content-length: {len(content)}"]
                head += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + content)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
