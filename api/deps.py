"""FastAPI dependencies: settings, database sessions and the Temporal client (the principal: api/security.py)."""

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from core.config import Settings

log = logging.getLogger("returns.api")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    # Close only: routes commit inside themselves, so a failed commit reaches the client.
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        try:
            session.close()
        except DBAPIError as err:
            # The answer went out already; the connection was lost meanwhile (its rollback failed), and
            # SQLAlchemy drops it from the pool. Raising now would only break the finished response.
            log.warning("closing a database session failed after the answer: %s", err.orig)


def get_temporal_client(request: Request) -> Client:
    return request.app.state.temporal_client  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
TemporalClientDep = Annotated[Client, Depends(get_temporal_client)]
