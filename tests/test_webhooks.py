"""Webhook delivery through Temporal to a real local receiver that verifies every signature.

Events are produced by domain transactions in a team of the test's own with no available agent, so nothing
but the test's own transitions happen there (no dispatch, no case workflow).
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from core import agents as agent_service
from core import cases as case_service
from core import webhooks as webhook_service
from core.config import Settings
from core.events import public_type
from core.ids import workflow_id_for_webhook
from core.models import SystemEvent, WebhookDelivery, WebhookEndpoint
from core.outbox import read_events
from core.schemas import AgentCreate, AgentUpdate
from core.webhook_runs import start_webhook_delivery
from tests.conftest import TEST_SECRET_KEY, Stack
from tests.support import running, worker_process
from tests.test_outbox import TwoTransitions, filing, make_team
from tests.webhook_receiver import Answer, Received, Receiver
from worker import all_activities, build_worker
from workflows.messages import ReconcilerInput
from workflows.reconcile import ReconcileWorkflow

CASE_AND_AGENT = ["case.filed", "case.cancelled", "agent.created", "agent.updated"]


@asynccontextmanager
async def receiving(answer: Callable[[Received], Awaitable[Answer]] | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver()
    if answer is not None:
        receiver.answer = answer
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


_registered: list[tuple[Stack, str]] = []


def register(stack: Stack, receiver: Receiver, events: list[str]) -> str:
    """Create an endpoint for the receiver (the receiver learns the secret to verify with); removed after the test."""
    with stack.session_factory.begin() as session:
        endpoint, secret = webhook_service.create_endpoint(
            session=session, url=receiver.url, events=events, secret_key=TEST_SECRET_KEY
        )
    receiver.secret = secret
    _registered.append((stack, endpoint.id))
    return endpoint.id


@pytest.fixture(autouse=True)
def remove_endpoints() -> Iterator[None]:
    """Endpoints outlive their receivers otherwise, and their workflows would keep retrying a closed port."""
    yield
    while _registered:
        stack, endpoint_id = _registered.pop()
        with stack.session_factory.begin() as session:
            if session.get(WebhookEndpoint, endpoint_id) is not None:
                webhook_service.delete_endpoint(session=session, endpoint_id=endpoint_id)


def endpoint_row(stack: Stack, endpoint_id: str) -> WebhookEndpoint:
    with stack.session_factory() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        assert row is not None
        return row


def expected_events(stack: Stack, after: int, types: list[str]) -> list[int]:
    with stack.session_factory() as session:
        rows = read_events(session=session, after=after, limit=100000)
    return [e.id for e in rows if public_type(e) in types]


class Traffic:
    """Transitions in a team of the test's own: cases filed and cancelled, away agents created and renamed."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.team = make_team(stack.session_factory)
        self.cases: list[str] = []
        self.agents: list[str] = []

    def file(self) -> str:
        case_id = f"c{uuid.uuid4().hex[:20]}"
        with self.stack.session_factory.begin() as session:
            case_service.open_case(
                session=session, case_id=case_id, data=filing(self.team), actor="t", idempotency_key=None
            )
        self.cases.append(case_id)
        return case_id

    def cancel(self, case_id: str) -> None:
        with self.stack.session_factory.begin() as session:
            case_service.cancel_case(session=session, case_id=case_id, reason="test", actor="t")

    def agent(self) -> str:
        with self.stack.session_factory.begin() as session:
            agent_id = agent_service.create_agent(
                session=session,
                data=AgentCreate(name="Ana", email=f"{uuid.uuid4().hex}@x.io", team=self.team, status="away"),
            ).agent.id
        self.agents.append(agent_id)
        return agent_id

    def rename(self, agent_id: str) -> None:
        with self.stack.session_factory.begin() as session:
            agent_service.update_agent(
                session=session, agent_id=agent_id, data=AgentUpdate(name=f"Ana {uuid.uuid4().hex[:6]}"), actor="t"
            )


async def until(probe: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)


async def workflow_status(client: Client, endpoint_id: str) -> WorkflowExecutionStatus | None:
    return (await client.get_workflow_handle(workflow_id_for_webhook(endpoint_id)).describe()).status


def assert_in_order_per_subject(receiver: Receiver, expected: list[int]) -> None:
    """Every expected event arrived (2xx), each signed, first arrivals in id order; repeats carry the same id."""
    assert all(r.verified for r in receiver.requests), "every request verifies with standardwebhooks"
    for r in receiver.requests:
        assert r.webhook_id == r.json["id"], "webhook-id is the event id"
    first: list[int] = []
    for r in receiver.delivered():
        event_id = int(r.webhook_id)
        if event_id not in first:
            first.append(event_id)
    assert first == sorted(first), "delivered one at a time, in id order"
    assert [e for e in first if e in expected] == expected


async def test_every_event_arrives_signed_and_in_order_through_a_failing_spell(stack: Stack) -> None:
    failing = {"on": True}

    async def answer(_: Received) -> Answer:
        return (500, {}, b"down") if failing["on"] else (200, {}, b"ok")

    traffic = Traffic(stack)
    async with receiving(answer) as receiver:
        endpoint_id = register(stack, receiver, CASE_AND_AGENT)
        start = endpoint_row(stack, endpoint_id).cursor
        await start_webhook_delivery(stack.client, stack.settings, endpoint_id)
        agent = traffic.agent()
        cases = [traffic.file() for _ in range(4)]
        await until(lambda: len(receiver.requests) >= 3, what="three failed attempts")
        traffic.rename(agent)
        for case_id in cases[:2]:
            traffic.cancel(case_id)
        failing["on"] = False
        expected = expected_events(stack, start, CASE_AND_AGENT)
        assert len(expected) == 8
        await until(lambda: {int(r.webhook_id) for r in receiver.delivered()} >= set(expected), what="every event")
    assert_in_order_per_subject(receiver, expected)
    retried = [r for r in receiver.requests if r.status == 500]
    assert retried and {r.webhook_id for r in retried} == {str(expected[0])}, "retries repeat the same webhook-id"
    # The receiver has answered; the cursor moves right after, in the delivery's own transaction.
    await until(lambda: endpoint_row(stack, endpoint_id).cursor >= expected[-1], what="the cursor past the last")
    assert endpoint_row(stack, endpoint_id).failing_since is None
    with stack.session_factory() as session:
        attempts = list(
            session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id).order_by(WebhookDelivery.id)
            )
        )
    assert [a.attempt for a in attempts if a.event_id == expected[0]] == list(range(1, len(retried) + 2))
    assert {a.response_code for a in attempts} == {500, 200}
    for case_id in cases[2:]:
        traffic.cancel(case_id)


async def test_a_transaction_that_commits_after_a_later_recorded_one_is_delivered(
    stack: Stack,
) -> None:
    """The outbox pitfall, end to end: T1 records first and commits last; both arrive, in commit order."""
    pair = TwoTransitions(stack.session_factory)
    async with receiving() as receiver:
        endpoint_id = register(stack, receiver, ["case.cancelled", "agent.updated"])
        await start_webhook_delivery(stack.client, stack.settings, endpoint_id)
        recorded, release = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()

        def first() -> None:
            with stack.session_factory.begin() as session:
                pair.rename_agent(session)
                loop.call_soon_threadsafe(recorded.set)
                asyncio.run_coroutine_threadsafe(release.wait(), loop).result(30)

        with ThreadPoolExecutor(max_workers=1) as pool:
            t1 = loop.run_in_executor(pool, first)
            await recorded.wait()
            await asyncio.to_thread(lambda: _in_transaction(stack, pair.cancel_case))
            await until(lambda: len(receiver.delivered()) >= 1, what="the cancel's delivery")
            await asyncio.sleep(0.5)  # give the delivery loop time to (wrongly) move past the open transaction
            release.set()
            await t1
        renamed, cancelled = pair.ids()
        await until(lambda: len(receiver.delivered()) >= 2, what="the rename's delivery")
    assert [int(r.webhook_id) for r in receiver.delivered()] == [cancelled, renamed]
    assert [r.json["type"] for r in receiver.delivered()] == ["case.cancelled", "agent.updated"]


def _in_transaction(stack: Stack, work: Callable[[Any], None]) -> None:
    with stack.session_factory.begin() as session:
        work(session)


async def test_410_disables_the_endpoint_at_once_and_says_so(stack: Stack) -> None:
    async def gone(_: Received) -> Answer:
        return 410, {}, b"gone"

    traffic = Traffic(stack)
    async with receiving(gone) as receiver:
        endpoint_id = register(stack, receiver, ["agent.created"])
        start = endpoint_row(stack, endpoint_id).cursor
        await start_webhook_delivery(stack.client, stack.settings, endpoint_id)
        traffic.agent()
        await until(lambda: not endpoint_row(stack, endpoint_id).enabled, what="the endpoint disabled")
    assert len(receiver.requests) == 1
    row = endpoint_row(stack, endpoint_id)
    assert row.disabled_reason is not None and "410" in row.disabled_reason
    assert_disabled_event(stack, start, endpoint_id)
    await until_completed(stack.client, endpoint_id)


def assert_disabled_event(stack: Stack, after: int, endpoint_id: str) -> None:
    with stack.session_factory() as session:
        rows = [e for e in read_events(session=session, after=after) if public_type(e) == "webhook.disabled"]
        assert [e.snapshot and e.snapshot["id"] for e in rows] == [endpoint_id]
        assert rows[0].snapshot is not None and rows[0].snapshot["enabled"] is False
        assert "secret" not in str(rows[0].snapshot)
        assert session.get(SystemEvent, rows[0].id) is not None


async def until_completed(client: Client, endpoint_id: str) -> None:
    for _ in range(200):
        if await workflow_status(client, endpoint_id) == WorkflowExecutionStatus.COMPLETED:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the delivery workflow did not complete")


@asynccontextmanager
async def own_worker(stack: Stack, **overrides: Any) -> AsyncIterator[Settings]:
    """A worker of the test's own (own task queue) with these settings."""
    settings = stack.settings.model_copy(update={"TASK_QUEUE": f"tq-{uuid.uuid4()}", **overrides})
    with ThreadPoolExecutor(max_workers=settings.ACTIVITY_THREADS) as executor:
        async with build_worker(
            stack.client, settings, all_activities(stack.session_factory, settings, stack.client), executor
        ):
            yield settings


async def test_an_endpoint_failing_past_the_window_is_disabled(stack: Stack) -> None:
    async def broken(_: Received) -> Answer:
        return 503, {"retry-after": "1"}, b"busy"

    traffic = Traffic(stack)
    async with (
        own_worker(stack, WEBHOOK_RETRY_INITIAL_SECONDS=0.2, WEBHOOK_RETRY_WINDOW_SECONDS=2.5) as settings,
        receiving(broken) as receiver,
    ):
        endpoint_id = register(stack, receiver, ["agent.created"])
        start = endpoint_row(stack, endpoint_id).cursor
        await start_webhook_delivery(stack.client, settings, endpoint_id)
        traffic.agent()
        await until(lambda: not endpoint_row(stack, endpoint_id).enabled, timeout=30, what="disabled")
        await until_completed(stack.client, endpoint_id)
    attempts = [r.at for r in receiver.requests]
    assert len(attempts) >= 2
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert min(gaps) >= 0.9, f"Retry-After: 1 was honoured (gaps {gaps})"
    assert "failed for more than" in (endpoint_row(stack, endpoint_id).disabled_reason or "")
    assert_disabled_event(stack, start, endpoint_id)


async def test_the_address_is_checked_again_at_delivery(stack: Stack) -> None:
    """Registered while private addresses were allowed; the worker refuses them: nothing is sent."""
    traffic = Traffic(stack)
    async with (
        own_worker(
            stack, WEBHOOK_ALLOW_PRIVATE_URLS=False, WEBHOOK_RETRY_INITIAL_SECONDS=0.2, WEBHOOK_RETRY_WINDOW_SECONDS=1
        ) as settings,
        receiving() as receiver,
    ):
        endpoint_id = register(stack, receiver, ["agent.created"])
        await start_webhook_delivery(stack.client, settings, endpoint_id)
        traffic.agent()
        await until(lambda: not endpoint_row(stack, endpoint_id).enabled, timeout=30, what="disabled")
    assert receiver.requests == []
    with stack.session_factory() as session:
        errors = session.scalars(select(WebhookDelivery.error).where(WebhookDelivery.endpoint_id == endpoint_id)).all()
    assert errors and all(e is not None and "loopback" in e for e in errors)


async def test_a_slow_receiver_does_not_hold_up_another_endpoint(stack: Stack) -> None:
    async def stalls(_: Received) -> Answer:
        await asyncio.sleep(30)
        return 200, {}, b""

    traffic = Traffic(stack)
    async with (
        own_worker(stack, WEBHOOK_TIMEOUT_SECONDS=1.0, WEBHOOK_RETRY_INITIAL_SECONDS=0.2) as settings,
        receiving(stalls) as slow,
        receiving() as fast,
    ):
        slow_id = register(stack, slow, ["agent.created", "agent.updated"])
        fast_id = register(stack, fast, ["agent.created", "agent.updated"])
        for endpoint_id in (slow_id, fast_id):
            await start_webhook_delivery(stack.client, settings, endpoint_id)
        agent = traffic.agent()
        for _ in range(5):
            traffic.rename(agent)
        await until(lambda: len(fast.delivered()) == 6, timeout=15, what="six deliveries to the fast receiver")
        await until(lambda: len(slow.requests) >= 2, timeout=15, what="the slow one retried after its timeout")
        with stack.session_factory() as session:
            errors = session.scalars(select(WebhookDelivery.error).where(WebhookDelivery.endpoint_id == slow_id)).all()
        assert errors and all(e is not None and "no answer within 1s" in e for e in errors)
        with stack.session_factory.begin() as session:
            webhook_service.update_endpoint(session=session, endpoint_id=slow_id, url=None, events=None, enabled=False)


async def test_replay_sends_again_everything_after_an_event(stack: Stack) -> None:
    traffic = Traffic(stack)
    async with receiving() as receiver:
        endpoint_id = register(stack, receiver, ["agent.created", "agent.updated"])
        await start_webhook_delivery(stack.client, stack.settings, endpoint_id)
        agent = traffic.agent()
        traffic.rename(agent)
        traffic.rename(agent)
        await until(lambda: len(receiver.delivered()) == 3, what="three deliveries")
        ids = [int(r.webhook_id) for r in receiver.delivered()]
        with stack.session_factory.begin() as session:
            webhook_service.replay_from(session=session, endpoint_id=endpoint_id, since=ids[0])
        await until(lambda: len(receiver.delivered()) == 5, what="the two later events again")
        assert [int(r.webhook_id) for r in receiver.delivered()] == [*ids, *ids[1:]]


async def test_a_worker_killed_during_delivery_loses_nothing(
    stack: Stack, worker_process_env: dict[str, str], tmp_path: Path
) -> None:
    async def slowish(_: Received) -> Answer:
        await asyncio.sleep(0.15)
        return 200, {}, b"ok"

    env = {
        **worker_process_env,
        "SECRET_KEY": TEST_SECRET_KEY,
        "WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        "WEBHOOK_RETRY_INITIAL_SECONDS": "0.2",
    }
    settings = stack.settings.model_copy(update={"TASK_QUEUE": env["TASK_QUEUE"]})
    traffic = Traffic(stack)
    async with receiving(slowish) as receiver:
        endpoint_id = register(stack, receiver, ["agent.created", "agent.updated"])
        start = endpoint_row(stack, endpoint_id).cursor
        agent = traffic.agent()
        for _ in range(39):
            traffic.rename(agent)
        expected = expected_events(stack, start, ["agent.created", "agent.updated"])
        assert len(expected) == 40
        first = worker_process("worker-1", env, tmp_path)
        with running(first):
            await start_webhook_delivery(stack.client, settings, endpoint_id)
            await until(lambda: len(receiver.requests) >= 10, what="ten deliveries")
            first.kill()
        killed_at = len(receiver.requests)
        assert killed_at < 40
        with running(worker_process("worker-2", env, tmp_path)):
            await until(
                lambda: {int(r.webhook_id) for r in receiver.delivered()} >= set(expected),
                timeout=90,
                what="every event after the restart",
            )
    assert_in_order_per_subject(receiver, expected)


async def test_the_reconciler_starts_a_missing_delivery_workflow(stack: Stack) -> None:
    """An endpoint whose workflow never started (Temporal was down when it was registered) gets one from the
    reconciler's repair step, and its events flow."""
    traffic = Traffic(stack)
    async with receiving() as receiver:
        endpoint_id = register(stack, receiver, ["agent.created"])  # saved; no workflow started
        with pytest.raises(RPCError):
            await stack.client.get_workflow_handle(workflow_id_for_webhook(endpoint_id)).describe()
        handle = await stack.client.start_workflow(
            ReconcileWorkflow.run,
            ReconcilerInput(interval_seconds=3600, resignal_after_seconds=3600, webhook_repair_every=1),
            id=f"reconcile-test-{uuid.uuid4()}",
            task_queue=stack.settings.TASK_QUEUE,
        )
        try:
            for _ in range(200):
                try:
                    status = await workflow_status(stack.client, endpoint_id)
                except RPCError:
                    status = None
                if status == WorkflowExecutionStatus.RUNNING:
                    break
                await asyncio.sleep(0.1)
            assert status == WorkflowExecutionStatus.RUNNING
            traffic.agent()
            await until(lambda: len(receiver.delivered()) == 1, what="the delivery")
        finally:
            await handle.terminate("test over")
