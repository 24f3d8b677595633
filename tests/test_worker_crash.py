"""Killing the worker process mid-flight loses no case and double-assigns nothing."""

import asyncio
import os
import signal
from pathlib import Path

import httpx

from api.main import create_app
from tests.conftest import Stack
from tests.helpers import API, add_agent, authorize_as_admin, case_body, eventually, new_team, resolve
from tests.invariants import assert_holding_invariants
from tests.support import api_settings, worker_process


async def _resolve_until_done(api: httpx.AsyncClient, case_id: str, agent_id: str) -> None:
    """Resolve as an agent would: retry while the service answers 503 (worker gone)."""
    for _ in range(120):
        r = await resolve(api, case_id, agent_id)
        if r.status_code == 200:
            return
        assert r.status_code == 503, r.text
        await asyncio.sleep(0.5)
    raise AssertionError(f"case {case_id} never resolved")


async def test_worker_killed_mid_flight_loses_no_case(
    stack: Stack, worker_process_env: dict[str, str], tmp_path: Path
) -> None:
    settings = api_settings(worker_process_env)
    app = create_app(settings)
    first = worker_process("worker-1", worker_process_env, tmp_path)
    second = worker_process("worker-2", worker_process_env, tmp_path)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as api:
            await authorize_as_admin(api, app.state.session_factory)
            try:
                first.start()
                team = await new_team(api)
                agents = [await add_agent(api, team) for _ in range(3)]
                filed = [(await api.post(f"{API}/cases", json=case_body(team))).json() for _ in range(12)]
                assert [c["status"] for c in filed].count("assigned") == 3

                async def work_queue() -> None:
                    # Each agent resolves whatever they hold until nothing is left.
                    async def agent_loop(agent_id: str) -> None:
                        while True:
                            listing = await api.get(f"{API}/cases", params={"team": team, "status": "active"})
                            assert listing.status_code == 200
                            active = listing.json()["items"]
                            if not active:
                                return
                            mine = [c for c in active if c["agent_id"] == agent_id and c["status"] == "assigned"]
                            if mine:
                                await _resolve_until_done(api, mine[0]["id"], agent_id)
                            else:
                                await asyncio.sleep(0.2)

                    await asyncio.gather(*(agent_loop(a["id"]) for a in agents))

                agents_done = asyncio.create_task(work_queue())
                await asyncio.sleep(1.0)
                assert first.process is not None
                os.kill(first.process.pid, signal.SIGKILL)
                first.process.wait()
                await asyncio.sleep(2.0)
                second.start()
                await asyncio.wait_for(agents_done, timeout=180)

                final = await eventually(
                    lambda: api.get(f"{API}/cases", params={"team": team, "limit": 200}),
                    lambda r: all(c["status"] == "resolved" for c in r.json()["items"]),
                    timeout=60,
                )
                cases = final.json()["items"]
                assert len(cases) == 12
                assert {c["id"] for c in cases} == {c["id"] for c in filed}
                assert_holding_invariants(stack.session_factory, team)
                for c in cases:
                    events = (await api.get(f"{API}/cases/{c['id']}/history")).json()["events"]
                    types = [e["type"] for e in events]
                    assert types.count("resolved") == 1 and types.count("filed") == 1, types
            finally:
                first.kill()
                second.terminate()
    assert "Traceback" not in second.log_text(), second.log_text()[-3000:]


async def test_worker_killed_while_a_timer_runs_the_timer_still_fires_once(
    stack: Stack, worker_process_env: dict[str, str], tmp_path: Path
) -> None:
    """A team's wait SLA (a durable timer in the case workflow) runs out while no worker is alive: the next worker
    escalates the case, once."""
    settings = api_settings(worker_process_env)
    app = create_app(settings)
    first = worker_process("worker-1", worker_process_env, tmp_path)
    second = worker_process("worker-2", worker_process_env, tmp_path)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as api:
            await authorize_as_admin(api, app.state.session_factory)
            try:
                first.start()
                team = await new_team(api)
                assert (await api.patch(f"{API}/teams/{team}", json={"wait_sla_seconds": 3})).status_code == 200
                case = (await api.post(f"{API}/cases", json=case_body(team))).json()
                assert case["status"] == "queued", case
                assert first.process is not None
                os.kill(first.process.pid, signal.SIGKILL)  # the timer is running in the workflow
                first.process.wait()
                await asyncio.sleep(4.0)  # its deadline passes with no worker alive
                assert (await api.get(f"{API}/cases/{case['id']}")).json()["escalated_at"] is None
                second.start()
                escalated = await eventually(
                    lambda: api.get(f"{API}/cases/{case['id']}"),
                    lambda r: r.json()["escalated_at"] is not None,
                    timeout=60,
                )
                assert escalated.json()["priority"] == "high"
                await asyncio.sleep(2.0)  # room for a second firing, which must not come
                types = [e["type"] for e in (await api.get(f"{API}/cases/{case['id']}/history")).json()["events"]]
                assert types == ["filed", "escalated"], types
                history = await stack.client.get_workflow_handle(case["workflow_id"]).fetch_history()
                fired = [e for e in history.events if e.HasField("timer_fired_event_attributes")]
                started = [e for e in history.events if e.HasField("timer_started_event_attributes")]
                assert len(fired) == 1 and len(started) == 1
            finally:
                first.kill()
                second.terminate()
    assert "Traceback" not in second.log_text(), second.log_text()[-3000:]
