"""FastAPI dependencies: settings, the database (with a deadline), the Temporal client; the principal: security.py."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from api.errors import ServiceUnavailable
from core.config import Settings
from core.db import run_transaction


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Database:
    """The database as routes use it: every call runs in a worker thread and is given up after `timeout`.

    A database that accepts connections but stops answering would otherwise hold the request until the
    driver's read timeout, possibly twice (the pool's pre-ping, then a fresh connection); the thread goes on
    alone until then, and the client gets a 503 at once.
    """

    session_factory: sessionmaker[Session]
    timeout: float

    async def read[T](self, work: Callable[[Session], T]) -> T:
        """`work(session)` in a session of its own (no commit)."""

        def run() -> T:
            with self.session_factory() as session:
                return work(session)

        return await self._within_deadline(run)

    async def write[T](self, work: Callable[[Session], T]) -> T:
        """`work(session)` in one transaction, committed (retried whole on a deadlock)."""
        return await self._within_deadline(lambda: run_transaction(self.session_factory, work))

    async def _within_deadline[T](self, run: Callable[[], T]) -> T:
        try:
            with anyio.fail_after(self.timeout):
                return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        except TimeoutError:
            raise ServiceUnavailable(f"the database did not answer within {self.timeout:g}s; retry later") from None


def get_database(request: Request) -> Database:
    return Database(request.app.state.session_factory, request.app.state.settings.API_DB_TIMEOUT_SECONDS)


def get_temporal_client(request: Request) -> Client:
    return request.app.state.temporal_client  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
TemporalClientDep = Annotated[Client, Depends(get_temporal_client)]
