"""Record the workflow histories that `tests/test_replay.py` replays: one per path a case can take.

    .venv/bin/python -m tests.histories.record        (TEST_DATABASE_URL names the MariaDB server to use)

Runs a Temporal dev server of its own, a database `<test database>_record`, a real worker process (reaching
the database through `TcpProxy`) and the API in process; drives each path through the API, then writes each
workflow's history as JSON next to this file. Re-record after every change to workflow code that changes the
commands it issues, and keep the old files that running workflows still need (docs/workflows.md).
"""

import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url
from temporalio.client import Client, WorkflowUpdateStage
from temporalio.contrib.pydantic import pydantic_data_converter

from core.config import Settings
from core.db import make_engine, make_session_factory
from core.ids import new_id
from core.models import Agent, AgentStatus, utcnow
from core.temporal import reconciler_id
from tests.helpers import API, add_agent, agent_token, bearer, file_case, new_team, resolve
from tests.support import (
    ServiceProcess,
    TemporalDevServer,
    drop_database,
    eventually,
    in_process_api,
    own_database,
    through,
    worker_env,
    worker_process,
)
from tests.tcp_proxy import TcpProxy
from workflows.messages import ResolveCaseInput
from workflows.return_case import ReturnCaseWorkflow

HERE = Path(__file__).resolve().parent
DEFAULT_TEST_DATABASE_URL = "mysql+pymysql://root@127.0.0.1:3306/returns_test"


async def _status(api: httpx.AsyncClient, case_id: str, wanted: str) -> dict[str, Any]:
    found = await eventually(
        lambda: api.get(f"{API}/cases/{case_id}"), lambda r: r.status_code == 200 and r.json()["status"] == wanted, 90
    )
    return found.json()  # type: ignore[no-any-return]


async def _resolve_retrying(api: httpx.AsyncClient, case_id: str, agent_id: str) -> None:
    """Resolve, again after a 503 (the worker may be on its way back)."""
    for _ in range(60):
        r = await resolve(api, case_id, agent_id)
        if r.status_code == 200:
            return
        assert r.status_code == 503, r.text
        await asyncio.sleep(1)
    raise AssertionError(f"case {case_id} could not be resolved")


class Recorder:
    def __init__(self, api: httpx.AsyncClient, client: Client, settings: Settings, proxy: TcpProxy) -> None:
        self.api, self.client, self.settings, self.proxy = api, client, settings, proxy
        self.worker: ServiceProcess | None = None
        self.recorded: dict[str, str] = {}  # file name -> workflow id

    async def assigned_at_once(self) -> None:
        team = await new_team(self.api)
        agent = await add_agent(self.api, team)
        case = await file_case(self.api, team)
        assert case["status"] == "assigned"
        assert (await resolve(self.api, case["id"], agent["id"])).status_code == 200
        self.recorded["assigned-at-once"] = case["workflow_id"]

    async def queued_then_handed_off(self) -> None:
        team = await new_team(self.api)
        agent = await add_agent(self.api, team)
        first = await file_case(self.api, team)
        waiting = await file_case(self.api, team)
        assert waiting["status"] == "queued"
        assert (await resolve(self.api, first["id"], agent["id"])).status_code == 200
        await _status(self.api, waiting["id"], "assigned")
        assert (await resolve(self.api, waiting["id"], agent["id"])).status_code == 200
        self.recorded["queued-then-handed-off"] = waiting["workflow_id"]

    async def requeued_after_agent_removal(self) -> None:
        team = await new_team(self.api)
        leaving = await add_agent(self.api, team)
        staying = await add_agent(self.api, team, status="away")
        case = await file_case(self.api, team)
        assert case["agent_id"] == leaving["id"]
        assert (await self.api.delete(f"{API}/agents/{leaving['id']}")).status_code == 204
        await _status(self.api, case["id"], "queued")
        r = await self.api.patch(f"{API}/agents/{staying['id']}", json={"status": "available"})
        assert r.status_code == 200, r.text
        await _status(self.api, case["id"], "assigned")
        assert (await resolve(self.api, case["id"], staying["id"])).status_code == 200
        self.recorded["requeued-after-agent-removal"] = case["workflow_id"]

    async def cancelled(self) -> None:
        team = await new_team(self.api)
        await add_agent(self.api, team)
        case = await file_case(self.api, team)
        r = await self.api.post(f"{API}/cases/{case['id']}/cancel", json={"reason": "customer kept the kettle"})
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        self.recorded["cancelled"] = case["workflow_id"]

    async def resolved_after_worker_crash(self) -> None:
        team = await new_team(self.api)
        agent = await add_agent(self.api, team)
        case = await file_case(self.api, team)
        assert self.worker is not None
        self.worker.kill()  # SIGKILL: the case's workflow was cached in that worker
        self.worker = self._start_worker("worker-after-crash")
        await _resolve_retrying(self.api, case["id"], agent["id"])
        self.recorded["resolved-after-worker-crash"] = case["workflow_id"]

    async def resolve_waits_out_a_database_outage(self) -> None:
        """The resolve's local attempt window runs out, then a regular activity waits for the database."""
        team = await new_team(self.api)
        agent = await add_agent(self.api, team)
        case = await file_case(self.api, team)
        self.proxy.cut()
        await self.client.get_workflow_handle(case["workflow_id"]).start_update(
            ReturnCaseWorkflow.resolve,
            ResolveCaseInput(agent_id=agent["id"], resolution="refunded"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await asyncio.sleep(40)
        self.proxy.heal()
        await _status(self.api, case["id"], "resolved")
        self.recorded["resolve-waits-out-a-database-outage"] = case["workflow_id"]

    async def reconciler_repairs(self) -> None:
        """The reconciler dispatches a waiting case to an agent nobody dispatched (a crash after a commit)."""
        team = await new_team(self.api)
        case = await file_case(self.api, team)
        engine = make_engine(self.settings.DATABASE_URL, pool_size=1)
        agent_id = new_id("a")
        with make_session_factory(engine).begin() as session:
            session.add(
                Agent(id=agent_id, name="Drift", email=f"{agent_id}@x.example", active_email=f"{agent_id}@x.example",
                      team=team, status=AgentStatus.AVAILABLE, available_since=utcnow())
            )  # fmt: skip
        engine.dispose()
        await _status(self.api, case["id"], "assigned")
        await asyncio.sleep(2)  # a few more quiet passes
        self.recorded["reconciler"] = reconciler_id(self.settings)

    # --- routing (DESIGN section 13) ---------------------------------------------------------------------

    async def _team_with(self, **timers: int) -> str:
        team = await new_team(self.api)
        r = await self.api.patch(f"{API}/teams/{team}", json=timers)
        assert r.status_code == 200, r.text
        return team

    async def _as(self, agent_id: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.api.post(f"{API}{path}", headers=bearer(await agent_token(self.api, agent_id)), **kwargs)

    async def offer_accepted(self) -> None:
        team = await self._team_with(offer_timeout_seconds=60)
        agent = await add_agent(self.api, team)
        case = await file_case(self.api, team)
        assert case["status"] == "reserved", case
        assert (await self._as(agent["id"], f"/cases/{case['id']}/accept")).status_code == 200
        assert (await resolve(self.api, case["id"], agent["id"])).status_code == 200
        self.recorded["offer-accepted"] = case["workflow_id"]

    async def offer_declined_then_missed(self) -> None:
        """Declined by the first agent, offered to the second, who misses it (set away); offered to the first
        again, who accepts."""
        team = await self._team_with(offer_timeout_seconds=2)
        first = await add_agent(self.api, team)
        second = await add_agent(self.api, team)
        case = await file_case(self.api, team)
        assert case["agent_id"] == first["id"], case
        assert (await self._as(first["id"], f"/cases/{case['id']}/decline")).status_code == 200
        await eventually(
            lambda: self.api.get(f"{API}/cases/{case['id']}"),
            lambda r: r.json()["status"] == "reserved" and r.json()["agent_id"] == first["id"],
            30,
        )  # the second agent missed it meanwhile
        assert (await self.api.get(f"{API}/agents/{second['id']}")).json()["status"] == "away"
        assert (await self._as(first["id"], f"/cases/{case['id']}/accept")).status_code == 200
        assert (await resolve(self.api, case["id"], first["id"])).status_code == 200
        self.recorded["offer-declined-then-missed"] = case["workflow_id"]

    async def escalated_then_overdue(self) -> None:
        team = await self._team_with(wait_sla_seconds=1, resolve_sla_seconds=1)
        case = await file_case(self.api, team)
        await eventually(
            lambda: self.api.get(f"{API}/cases/{case['id']}"), lambda r: r.json()["escalated_at"] is not None, 30
        )
        agent = await add_agent(self.api, team)
        await _status(self.api, case["id"], "assigned")
        await eventually(
            lambda: self.api.get(f"{API}/cases/{case['id']}"), lambda r: r.json()["overdue_at"] is not None, 30
        )
        assert (await resolve(self.api, case["id"], agent["id"])).status_code == 200
        self.recorded["escalated-then-overdue"] = case["workflow_id"]

    async def timers_changed_while_waiting(self) -> None:
        team = await new_team(self.api)
        case = await file_case(self.api, team)
        assert (await self.api.patch(f"{API}/teams/{team}", json={"wait_sla_seconds": 1})).status_code == 200
        await eventually(
            lambda: self.api.get(f"{API}/cases/{case['id']}"), lambda r: r.json()["escalated_at"] is not None, 30
        )
        r = await self.api.post(f"{API}/cases/{case['id']}/cancel", json={"reason": "recording"})
        assert r.status_code == 200, r.text
        self.recorded["timers-changed-while-waiting"] = case["workflow_id"]

    async def transferred(self) -> None:
        team, other = await new_team(self.api), await new_team(self.api)
        agent = await add_agent(self.api, team)
        case = await file_case(self.api, team)
        r = await self._as(agent["id"], f"/cases/{case['id']}/transfer", json={"team": other, "note": "recording"})
        assert r.status_code == 200, r.text
        taker = await add_agent(self.api, other)
        await _status(self.api, case["id"], "assigned")
        assert (await resolve(self.api, case["id"], taker["id"])).status_code == 200
        self.recorded["transferred"] = case["workflow_id"]

    async def reopened(self) -> None:
        """The second run of a case's workflow: reopened after its resolve, then resolved again."""
        team = await new_team(self.api)
        agent = await add_agent(self.api, team)
        case = await file_case(self.api, team)
        assert (await resolve(self.api, case["id"], agent["id"])).status_code == 200
        await asyncio.sleep(1)  # the first run finishes
        r = await self.api.post(f"{API}/cases/{case['id']}/reopen", json={"reason": "refund never arrived"})
        assert r.status_code == 200, r.text
        assert (await resolve(self.api, case["id"], agent["id"])).status_code == 200
        self.recorded["reopened"] = case["workflow_id"]

    def _start_worker(self, name: str) -> ServiceProcess:
        env = worker_env(self.settings.DATABASE_URL, self.settings.TEMPORAL_ADDRESS, self.settings.TASK_QUEUE)
        worker = worker_process(name, env, Path(tempfile.gettempdir()))
        worker.start()
        return worker

    async def run(self, scenarios: list[Callable[[], Awaitable[None]]]) -> None:
        self.worker = self._start_worker("worker")
        try:
            for scenario in scenarios:
                started = time.monotonic()
                await scenario()
                print(f"{scenario.__name__}: {time.monotonic() - started:.1f}s")  # noqa: T201
            for name, workflow_id in self.recorded.items():
                history = await self.client.get_workflow_handle(workflow_id).fetch_history()
                (HERE / f"{name}.json").write_text(history.to_json() + "\n")
                print(f"wrote {name}.json ({len(history.events)} events)")  # noqa: T201
        finally:
            if self.worker is not None:
                self.worker.terminate()


async def main() -> None:
    base = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    database_url = own_database(base, "record")
    proxy = TcpProxy(make_url(database_url).port or 3306).start()
    with tempfile.TemporaryDirectory() as state:
        server = TemporalDevServer(Path(state))
        server.start()
        try:
            await server.wait_ready()
            settings = Settings(
                DATABASE_URL=through(proxy, database_url),
                TEMPORAL_ADDRESS=server.address,
                TASK_QUEUE=f"record-{uuid.uuid4().hex[:8]}",
                TEMPORAL_RPC_TIMEOUT_SECONDS=10,
            )
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            async with in_process_api(settings) as api:
                recorder = Recorder(api, client, settings, proxy)
                scenarios = [
                    recorder.assigned_at_once,
                    recorder.queued_then_handed_off,
                    recorder.requeued_after_agent_removal,
                    recorder.cancelled,
                    recorder.resolved_after_worker_crash,
                    recorder.resolve_waits_out_a_database_outage,
                    recorder.reconciler_repairs,
                    recorder.offer_accepted,
                    recorder.offer_declined_then_missed,
                    recorder.escalated_then_overdue,
                    recorder.timers_changed_while_waiting,
                    recorder.transferred,
                    recorder.reopened,
                ]
                # Named scenarios only (`... record offer_accepted reopened`): the others' files stay as recorded.
                wanted = set(sys.argv[1:])
                await recorder.run([s for s in scenarios if not wanted or s.__name__ in wanted])
        finally:
            server.stop(signal.SIGTERM)
            proxy.stop()
            drop_database(database_url)


if __name__ == "__main__":
    asyncio.run(main())
