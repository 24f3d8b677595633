"""The real app behind uvicorn on a free port, in a thread: for streams, which an in-process ASGI client
cannot read (httpx's ASGITransport waits for the whole body)."""

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn

from api.main import create_app
from core.config import Settings
from tests.support import free_port


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """Serve the app (its own event loop, its own event hub) until the block ends; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 5)
        if thread.is_alive():  # a stream still open: cut it
            server.force_exit = True
            await asyncio.to_thread(thread.join, 10)
