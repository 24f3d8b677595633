"""Long routing timers (an hour's wait SLA, a day's resolve SLA) on Temporal's time-skipping dev server (v2: each
workflow has its own virtual clock, moved on by `fast_forward`), with the real app, worker and MariaDB.

The test has a dev server of its own, so it has a database of its own too: the session's reconciler would
otherwise dispatch its cases to workflows its server does not know.
"""

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core.dev_server import temporal_cli
from core.search_attributes import ALL_SEARCH_ATTRIBUTES
from tests.conftest import Stack, start_stack
from tests.helpers import API, add_agent, file_case, get_case, new_team, resolve
from tests.support import drop_database, own_database


@pytest_asyncio.fixture
async def skipping_stack(mysql_url: str) -> AsyncIterator[tuple[Stack, WorkflowEnvironment]]:
    url = own_database(mysql_url, "skip")
    env = await WorkflowEnvironment.start_time_skipping_v2(
        dev_server_existing_path=temporal_cli(),
        search_attributes=ALL_SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_startup_timeout=timedelta(seconds=60),
        dev_server_log_level="error",
        dev_server_extra_args=["--dynamic-config-value", "frontend.WorkflowTimeSkippingEnabled=true"],
    )
    try:
        async with env:
            async for stack in start_stack("mysql", url, env):
                yield stack, env
    finally:
        drop_database(url)


async def test_an_hour_wait_sla_and_a_day_resolve_sla_fire_on_virtual_time(
    skipping_stack: tuple[Stack, WorkflowEnvironment],
) -> None:
    stack, env = skipping_stack
    api = stack.api
    team = await new_team(api)
    r = await api.patch(f"{API}/teams/{team}", json={"wait_sla_seconds": 3600, "resolve_sla_seconds": 86400})
    assert r.status_code == 200, r.text
    case = await file_case(api, team)
    assert case["status"] == "queued"
    handle = stack.client.get_workflow_handle(case["workflow_id"])

    # Half the wait SLA: nothing yet.
    await env.fast_forward(handle, timedelta(minutes=30))
    assert (await get_case(api, case["id"]))["escalated_at"] is None
    # Past it: escalated, once.
    await env.fast_forward(handle, timedelta(minutes=45))
    escalated = await _when(api, case["id"], lambda c: c["escalated_at"] is not None)
    assert escalated["priority"] == "high" and escalated["queued_at"] == case["queued_at"]

    agent = await add_agent(api, team)
    await _when(api, case["id"], lambda c: c["status"] == "assigned")
    await env.fast_forward(handle, timedelta(hours=12))
    assert (await get_case(api, case["id"]))["overdue_at"] is None
    await env.fast_forward(handle, timedelta(hours=13))
    overdue = await _when(api, case["id"], lambda c: c["overdue_at"] is not None)
    assert overdue["status"] == "assigned"
    types = [e["type"] for e in (await api.get(f"{API}/cases/{case['id']}/history")).json()["events"]]
    assert types == ["filed", "escalated", "reserved", "assigned", "overdue"]
    assert (await resolve(api, case["id"], agent["id"])).status_code == 200


async def _when(api: Any, case_id: str, done: Any) -> dict[str, Any]:
    from tests.support import eventually

    return await eventually(lambda: get_case(api, case_id), done, timeout=30)
