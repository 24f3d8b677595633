"""The FastAPI application."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api.console import customer as console_customer
from api.console import pages as console_pages
from api.console.session import install_console_error_pages, install_console_handlers, install_link_handler
from api.errors import install_error_handlers
from api.event_hub import EventHub
from api.metrics import install_metrics
from api.routes import agents, api_keys, auth, cases, events, health, return_links, teams, track, webhooks
from api.security import check_route_rules
from core.config import Settings, get_settings, require_secret_key
from core.db import make_engine, make_session_factory
from core.logging import configure_logging
from core.security import dummy_hash


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the engine and the Temporal client are made in the lifespan, not at import. Refuses to build
    without a SECRET_KEY, or with a route that declares no access rule."""
    settings = settings or get_settings()
    require_secret_key(settings)
    if not logging.getLogger().handlers:
        # Run by uvicorn rather than embedded (tests): log JSON, redacted, like the worker.
        configure_logging(settings.LOG_LEVEL)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.DATABASE_URL, pool_size=settings.DB_POOL_SIZE, settings=settings)
        app.state.settings = settings
        app.state.session_factory = make_session_factory(engine)
        # Lazy: the API starts (and /readyz says why it is not ready) while Temporal is still coming up.
        app.state.temporal_client = await Client.connect(
            settings.TEMPORAL_ADDRESS,
            namespace=settings.TEMPORAL_NAMESPACE,
            data_converter=pydantic_data_converter,
            lazy=True,
        )
        # Made now, so the first sign-in with an unknown email takes no longer than any other.
        await run_in_threadpool(dummy_hash)
        app.state.event_hub = EventHub(
            app.state.session_factory,
            poll_interval=settings.EVENT_POLL_INTERVAL_SECONDS,
            queue_size=settings.EVENT_SUBSCRIBER_QUEUE_SIZE,
        )
        await app.state.event_hub.start()
        yield
        await app.state.event_hub.stop()
        engine.dispose()

    app = FastAPI(
        title="Returns desk",
        version="1.0.0",
        summary="Product-return cases, each a durable Temporal workflow, assigned to support agents.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    routers = (auth.router, teams.router, agents.router, cases.router, api_keys.router, track.router)
    for router in (*routers, webhooks.router, events.router, return_links.router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(health.router)
    install_console_handlers(app)
    install_link_handler(app)
    app.include_router(console_pages.router)
    app.include_router(console_customer.router)
    install_console_error_pages(app)
    install_metrics(app)
    check_route_rules(app)
    return app
