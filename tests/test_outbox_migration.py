"""Migration 0005 on a database with history: agent_event ids move above case_event's, the sequence starts
after the highest, and the next transition takes the next id."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core import agents as agent_service
from core.config import PROJECT_ROOT
from core.db import make_engine, make_session_factory
from core.outbox import last_event_id, read_events
from core.schemas import AgentUpdate
from tests.conftest import DEFAULT_TEST_DATABASE_URL
from tests.support import fresh_mysql_database


def alembic(url: str, *args: str) -> None:
    subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "-x", f"url={url}", *args],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    )


def test_upgrade_renumbers_agent_events_and_starts_the_sequence() -> None:
    base = make_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    url = base.set(database=f"{base.database}_migration").render_as_string(hide_password=False)
    fresh_mysql_database(url)
    alembic(url, "upgrade", "0002")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO agent (id, name, email, active_email, team, status, available_since,"
                          " created_at, updated_at) VALUES ('a1', 'Ana', 'a@x.io', 'a@x.io', 'returns', 'away',"
                          " NOW(6), NOW(6), NOW(6))"))  # fmt: skip
        conn.execute(text("INSERT INTO return_case (id, team, priority, priority_rank, customer_name, customer_email,"
                          " order_id, product_sku, product_name, reason, status, queued_at, created_at, updated_at)"
                          " VALUES ('c1', 'returns', 'normal', 1, 'D', 'd@x.io', 'o', 's', 'p', 'r', 'queued',"
                          " NOW(6), NOW(6), NOW(6))"))  # fmt: skip
        for _ in range(3):
            conn.execute(text("INSERT INTO case_event (case_id, at, type, actor, data) VALUES"
                              " ('c1', NOW(6), 'filed', 't', '{}')"))  # fmt: skip
        for _ in range(5):
            conn.execute(text("INSERT INTO agent_event (agent_id, at, type, actor, status, team, removed, data)"
                              " VALUES ('a1', NOW(6), 'updated', 't', 'away', 'returns', 0, '{}')"))  # fmt: skip
    alembic(url, "upgrade", "0005")  # through the revisions in between
    with engine.connect() as conn:
        case_ids = list(conn.execute(text("SELECT id FROM case_event ORDER BY id")).scalars())
        agent_ids = list(conn.execute(text("SELECT id FROM agent_event ORDER BY id")).scalars())
    engine.dispose()
    assert case_ids == [1, 2, 3]
    assert agent_ids == [6, 7, 8, 9, 10], "shifted by the highest id of either table, order kept"
    app_engine = make_engine(url, pool_size=1)
    sf = make_session_factory(app_engine)
    with sf() as session:
        assert last_event_id(session=session) == 10
        assert read_events(session=session, after=0)[-1].id == 10
    with sf.begin() as session:
        agent_service.update_agent(session=session, agent_id="a1", data=AgentUpdate(name=f"A {uuid.uuid4().hex[:3]}"))
    with sf() as session:
        newest = read_events(session=session, after=10)
        assert [(e.id, e.kind, e.type) for e in newest] == [(11, "agent", "updated")]
    app_engine.dispose()
    alembic(url, "downgrade", "-1")  # back to the revision before this one
    server = create_engine(base.set(database=""))
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE `{base.database}_migration`"))
    server.dispose()
