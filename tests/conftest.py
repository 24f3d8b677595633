"""Fixtures: a real Temporal dev server, a real MariaDB/MySQL database and SQLite, the real app and worker.

Tests isolate from each other by team: each makes its own team, so dispatch never mixes their cases. A stack's
`api` client carries an admin's token; `tests.helpers.resolve` acts as the agent, with their own token.
"""

import os
import secrets
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

# Before the app is imported anywhere: every process of the session (this one, and the workers and APIs it starts,
# which inherit the environment) signs and checks tokens with one key; tokens outlive the longest run.
os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))
os.environ.setdefault("ACCESS_TOKEN_MINUTES", str(24 * 60))

from api.main import create_app  # noqa: E402
from core.config import Settings  # noqa: E402
from core.db import make_engine, make_session_factory  # noqa: E402
from core.dev_server import temporal_cli  # noqa: E402
from core.search_attributes import ALL_SEARCH_ATTRIBUTES  # noqa: E402
from tests.helpers import authorize_as_admin  # noqa: E402
from tests.support import fresh_mysql_database, migrate, stop_reconciler, worker_env  # noqa: E402
from worker import all_activities, build_worker  # noqa: E402

DEFAULT_TEST_DATABASE_URL = "mysql+pymysql://root@127.0.0.1:3306/returns_test"
TEST_SECRET_KEY = os.environ["SECRET_KEY"]


@pytest.fixture(scope="session")
def mysql_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    fresh_mysql_database(url)
    migrate(url)
    return url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'returns.db'}"
    migrate(url)
    return url


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        search_attributes=ALL_SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_startup_timeout=timedelta(seconds=60),
        dev_server_log_level="error",
    )
    async with env:
        yield env


def temporal_address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


@dataclass
class Stack:
    """One running copy of the service: API client, worker, database handle and settings."""

    backend: str
    settings: Settings
    api: httpx.AsyncClient
    client: Client
    engine: Engine
    session_factory: sessionmaker[Session]
    admin_token: str = ""


async def start_stack(
    backend: str, url: str, env: WorkflowEnvironment, *, in_process_worker: bool = True
) -> AsyncIterator[Stack]:
    """The real app (with its lifespan) and, unless told otherwise, the real worker in this process."""
    settings = Settings(
        DATABASE_URL=url,
        TEMPORAL_ADDRESS=temporal_address(env),
        TASK_QUEUE=f"tq-{uuid.uuid4()}",
        TEMPORAL_RPC_TIMEOUT_SECONDS=20,
        ACTIVITY_THREADS=16,
        SECRET_KEY=TEST_SECRET_KEY,
        WEBHOOK_ALLOW_PRIVATE_URLS=True,
        WEBHOOK_RETRY_INITIAL_SECONDS=0.2,
        WEBHOOK_RETRY_MAX_INTERVAL_SECONDS=1.0,
    )
    engine = make_engine(url, pool_size=16)
    session_factory = make_session_factory(engine)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as api:
            admin_token = await authorize_as_admin(api, session_factory)
            stack = Stack(backend, settings, api, env.client, engine, session_factory, admin_token)
            if not in_process_worker:
                yield stack
            else:
                with ThreadPoolExecutor(max_workers=settings.ACTIVITY_THREADS) as executor:
                    worker = build_worker(
                        env.client, settings, all_activities(session_factory, settings, env.client), executor
                    )
                    async with worker:
                        yield stack
    engine.dispose()


@pytest_asyncio.fixture(scope="session")
async def mysql_stack(mysql_url: str, temporal_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    async for stack in start_stack("mysql", mysql_url, temporal_env):
        yield stack


@pytest_asyncio.fixture(scope="session")
async def sqlite_stack(sqlite_url: str, temporal_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    async for stack in start_stack("sqlite", sqlite_url, temporal_env):
        yield stack


@pytest.fixture
def stack(mysql_stack: Stack) -> Stack:
    """The MySQL stack: what most tests run on."""
    return mysql_stack


@pytest.fixture(params=["mysql", "sqlite"])
def any_stack(request: pytest.FixtureRequest) -> Stack:
    """The core flow runs on both the production database and the embedded default."""
    return request.getfixturevalue(f"{request.param}_stack")  # type: ignore[no-any-return]


@pytest_asyncio.fixture
async def worker_process_env(mysql_url: str, temporal_env: WorkflowEnvironment) -> AsyncIterator[dict[str, str]]:
    """Environment for a `python worker.py` child process on its own task queue; the reconciler its workers
    start is stopped afterwards."""
    task_queue = f"tq-{uuid.uuid4()}"
    yield worker_env(mysql_url, temporal_address(temporal_env), task_queue)
    await stop_reconciler(temporal_env.client, task_queue)
