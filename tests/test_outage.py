"""A long database outage: the history of a case caught mid-step stays bounded, and every case completes after.

The worker runs as a real process that reaches MariaDB only through `TcpProxy`. With the database cut
off, case workflows are given a step each (resolve, cancel, filing) straight through Temporal, since
the API refuses with a 503 while its own reads fail. Their history lengths are sampled through the
outage: once the local attempt window has run out, a step waits in a regular activity, whose retries
the server keeps without writing history, so the length must stop growing.
"""

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateStage
from temporalio.common import WorkflowIDConflictPolicy

from core.ids import case_id_for_idempotency_key, workflow_id_for_case
from ops.invariants import find_workflow_violations
from tests.conftest import Stack
from tests.helpers import API, add_agent, case_body, eventually, file_case, new_team, resolve
from tests.invariants import assert_holding_invariants
from tests.support import in_process_api, through, worker_process
from tests.tcp_proxy import Outage, TcpProxy
from workflows.messages import CancelCaseInput, CaseDraft, FileCaseInput, ResolveCaseInput, ReturnCaseInput
from workflows.return_case import ReturnCaseWorkflow

# Issue 13: an hour of outage may add at most this many events to a case that was mid-step.
HOUR_BUDGET = 50
SAMPLE_EVERY = 10.0


@dataclass
class Sampled:
    """History lengths of one case workflow, sampled through the outage."""

    label: str
    workflow_id: str
    lengths: list[tuple[float, int]] = field(default_factory=list)

    def at(self, moment: float) -> int:
        """The last length sampled at or before `moment` (seconds since the cut)."""
        return [n for t, n in self.lengths if t <= moment][-1]


async def _history_length(client: Client, workflow_id: str) -> int:
    return (await client.get_workflow_handle(workflow_id).describe()).history_length


async def _file_during_outage(client: Client, team: str, task_queue: str) -> str:
    """Start a filing the way the API does (update-with-start), waiting only until the update is accepted."""
    key = f"outage-{uuid.uuid4()}"
    case_id = case_id_for_idempotency_key(key)
    draft = CaseDraft.model_validate(case_body(team))
    start = WithStartWorkflowOperation(
        ReturnCaseWorkflow.run,
        ReturnCaseInput(case_id=case_id, case=draft, actor="test", idempotency_key=key),
        id=workflow_id_for_case(case_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    await client.start_update_with_start_workflow(
        ReturnCaseWorkflow.file,
        FileCaseInput(case=draft, idempotency_key=key),
        start_workflow_operation=start,
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    return case_id


async def _outage(stack: Stack, env: dict[str, str], tmp_path: Path, *, minutes: float) -> None:
    proxy = TcpProxy(make_url(env["DATABASE_URL"]).port or 3306).start()
    env = {**env, "DATABASE_URL": through(proxy, env["DATABASE_URL"])}
    task_queue = env["TASK_QUEUE"]
    worker = worker_process("outage-worker", env, tmp_path)
    client = stack.client
    try:
        worker.start()
        async with in_process_api(stack.settings.model_copy(update={"DATABASE_URL": env["DATABASE_URL"],
                                                                    "TASK_QUEUE": task_queue})) as api:  # fmt: skip
            team = await new_team(api)
            agents = [(await add_agent(api, team))["id"] for _ in range(2)]
            held = [await file_case(api, team) for _ in range(2)]
            queued = [await file_case(api, team) for _ in range(2)]
            assert {c["status"] for c in held} == {"assigned"} and {c["status"] for c in queued} == {"queued"}

            at_cut = {c["workflow_id"]: await _history_length(client, c["workflow_id"]) for c in (*held, *queued)}
            proxy.cut(Outage.REFUSE)
            cut_at = time.monotonic()
            # Three steps at once: a resolve, a cancel and a filing, each accepted once its workflow task runs.
            _, _, filed_id = await asyncio.gather(
                client.get_workflow_handle(held[0]["workflow_id"]).start_update(
                    ReturnCaseWorkflow.resolve,
                    ResolveCaseInput(agent_id=held[0]["agent_id"], resolution="refunded"),
                    wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                ),
                client.get_workflow_handle(queued[1]["workflow_id"]).start_update(
                    ReturnCaseWorkflow.cancel,
                    CancelCaseInput(reason="customer withdrew", actor="test"),
                    wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                ),
                _file_during_outage(client, team, task_queue),
            )
            cases = [
                Sampled("resolve", held[0]["workflow_id"], [(0.0, at_cut[held[0]["workflow_id"]])]),
                Sampled("cancel", queued[1]["workflow_id"], [(0.0, at_cut[queued[1]["workflow_id"]])]),
                # Its workflow did not exist before the cut: its first events are the start and the filing.
                Sampled("filing", workflow_id_for_case(filed_id), [(0.0, 0)]),
            ]
            idle = Sampled("untouched", held[1]["workflow_id"], [(0.0, at_cut[held[1]["workflow_id"]])])
            outage_seconds = minutes * 60
            while (elapsed := time.monotonic() - cut_at) < outage_seconds:
                for sampled in [*cases, idle]:
                    sampled.lengths.append((elapsed, await _history_length(client, sampled.workflow_id)))
                await asyncio.sleep(min(SAMPLE_EVERY, max(outage_seconds - elapsed, 0.1)))
            for sampled in [*cases, idle]:
                sampled.lengths.append((outage_seconds, await _history_length(client, sampled.workflow_id)))
            assert worker.alive(), worker.log_text()[-3000:]
            half = outage_seconds / 2
            for sampled in cases:
                total = sampled.at(outage_seconds) - sampled.lengths[0][1]
                per_minute = total / minutes
                print(  # noqa: T201
                    f"{sampled.label}: {sampled.lengths[0][1]} events at the cut, {sampled.at(outage_seconds)} after "
                    f"{minutes:g} min ({per_minute:.1f} events/min of outage); samples {sampled.lengths}"
                )
            untouched = f"{idle.lengths[0][1]} -> {idle.at(outage_seconds)}"
            print(f"untouched case: {untouched}")  # noqa: T201

            proxy.heal()
            healed_at = time.monotonic()

            async def recovered() -> bool:
                r1 = await api.get(f"{API}/cases/{held[0]['id']}")
                r2 = await api.get(f"{API}/cases/{queued[1]['id']}")
                r3 = await api.get(f"{API}/cases/{filed_id}")
                r4 = await api.get(f"{API}/cases/{queued[0]['id']}")
                return (
                    all(r.status_code == 200 for r in (r1, r2, r3, r4))
                    and r1.json()["status"] == "resolved"
                    and r2.json()["status"] == "cancelled"
                    and r3.json()["status"] in ("queued", "assigned")
                    # The resolve handed its agent the oldest waiting case.
                    and r4.json()["status"] == "assigned"
                    and r4.json()["agent_id"] == held[0]["agent_id"]
                )

            await eventually(recovered, lambda ok: ok, timeout=120)
            print(f"recovered {time.monotonic() - healed_at:.1f}s after healing")  # noqa: T201

            # Everything completes: the agents resolve what they hold until nothing is open.
            open_ids = [held[1]["id"], queued[0]["id"], filed_id]
            for _ in range(len(open_ids) + 1):
                for case_id in open_ids:
                    case = (await api.get(f"{API}/cases/{case_id}")).json()
                    if case["status"] == "assigned":
                        assert (await resolve(api, case_id, case["agent_id"])).status_code == 200
                await asyncio.sleep(0.5)
            for case_id in open_ids:
                await eventually(
                    lambda cid=case_id: api.get(f"{API}/cases/{cid}"),  # type: ignore[misc]
                    lambda r: r.json()["status"] == "resolved",
                    timeout=60,
                )
            assert sorted(agents) == sorted({c["agent_id"] for c in held})
    finally:
        worker.terminate()
        proxy.stop()

    assert_holding_invariants(stack.session_factory, team)
    violations = await find_workflow_violations(client=client, session_factory=stack.session_factory, teams=[team])
    assert not violations, "\n".join(str(v) for v in violations)

    for sampled in cases:
        # Once the local attempt window has run out, nothing more is written while the outage lasts.
        assert sampled.at(outage_seconds) == sampled.at(half), (sampled.label, sampled.lengths)
        assert sampled.at(outage_seconds) <= HOUR_BUDGET, (sampled.label, sampled.lengths)
    assert idle.at(outage_seconds) == idle.lengths[0][1], idle.lengths


async def test_two_minute_database_outage_keeps_histories_bounded(
    stack: Stack, worker_process_env: dict[str, str], tmp_path: Path
) -> None:
    await _outage(stack, worker_process_env, tmp_path, minutes=2)


@pytest.mark.slow
async def test_ten_minute_database_outage_keeps_histories_bounded(
    stack: Stack, worker_process_env: dict[str, str], tmp_path: Path
) -> None:
    await _outage(stack, worker_process_env, tmp_path, minutes=10)
