"""The stream's hub, without HTTP: resume with no gap and no repeat, scoping, slow subscribers, removal."""

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from fastapi.sse import ServerSentEvent

from api.event_hub import EventHub
from core import agents as agent_service
from core import cases as case_service
from core.events import Audience
from core.outbox import last_event_id, read_events
from core.schemas import AgentCreate
from tests.conftest import Stack
from tests.test_outbox import TwoTransitions, filing, make_team
from tests.test_webhooks import Traffic


@pytest_asyncio.fixture
async def hub(stack: Stack) -> AsyncIterator[EventHub]:
    hub = EventHub(stack.session_factory, poll_interval=0.05, queue_size=100)
    await hub.start()
    assert await hub.wait_ready(10)
    yield hub
    await hub.stop()


class Collect:
    """Reads a stream in a task of its own (cancelling a read would close the generator), keeping what came."""

    def __init__(self, stream: AsyncIterator[ServerSentEvent]) -> None:
        self.stream = stream
        self.got: list[ServerSentEvent] = []
        self.ended = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.stream:
            self.got.append(event)
        self.ended = True

    async def take(self, n: int, timeout: float = 10) -> list[ServerSentEvent]:
        """The first `n` events (fails if they do not come in time)."""
        async with asyncio.timeout(timeout):
            while len(self.got) < n:
                if self.ended:
                    raise AssertionError(f"the stream ended after {len(self.got)} events")
                await asyncio.sleep(0.01)
        return self.got[:n]

    async def end(self, timeout: float = 10) -> list[ServerSentEvent]:
        """Everything, once the stream has ended by itself."""
        await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return self.got

    async def close(self) -> None:
        """The client goes away."""
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


async def caught_up(stack: Stack, hub: EventHub) -> None:
    """Wait until the hub has read everything committed so far (so a new subscriber starts after it)."""
    with stack.session_factory() as session:
        newest = last_event_id(session=session)
    async with asyncio.timeout(10):
        while (hub.position or 0) < newest:
            await asyncio.sleep(0.02)


def ids(events: list[ServerSentEvent]) -> list[int]:
    return [int(e.id or 0) for e in events]


async def test_resume_after_a_disconnect_gives_exactly_the_missed_events(stack: Stack, hub: EventHub) -> None:
    traffic = Traffic(stack)
    await caught_up(stack, hub)
    sub, position = hub.subscribe(Audience(kind="admin"), None)
    stream = Collect(hub.stream(sub, position))
    agent = traffic.agent()
    for _ in range(4):
        traffic.rename(agent)
    seen = (await stream.take(5))[:2]
    await stream.close()
    assert sub not in hub.subscribers, "a closed stream leaves the hub"
    for _ in range(3):
        traffic.rename(agent)
    sub2, position2 = hub.subscribe(Audience(kind="admin"), int(seen[-1].id or 0))
    resumed = Collect(hub.stream(sub2, position2))
    rest = await resumed.take(6)
    await asyncio.sleep(0.5)
    assert len(resumed.got) == 6
    await resumed.close()
    everything = ids(seen + rest)
    assert everything == sorted(everything) and len(set(everything)) == 8
    assert everything == list(range(everything[0], everything[0] + 8)), "no gap, no repeat"
    assert [e.event for e in seen + rest] == ["agent.created"] + ["agent.updated"] * 7


async def test_backlog_and_live_events_meet_without_gap_or_repeat_under_load(stack: Stack, hub: EventHub) -> None:
    traffic = Traffic(stack)
    agent = traffic.agent()
    with stack.session_factory() as session:
        start = last_event_id(session=session)
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            traffic.rename(agent)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        await asyncio.sleep(0.3)
        sub, position = hub.subscribe(Audience(kind="admin", types=frozenset({"agent.updated"})), start)
        stream = Collect(hub.stream(sub, position))
        got = await stream.take(40)
    finally:
        stop.set()
        writer.join(10)
    assert ids(got) == sorted(set(ids(got))), "in order, once each"
    with stack.session_factory() as session:
        expected = [e.id for e in read_events(session=session, after=start) if e.type == "updated"][:40]
    assert ids(got) == expected
    await stream.close()


async def test_an_agent_sees_their_cases_their_teams_queue_and_themselves_only(stack: Stack, hub: EventHub) -> None:
    team, other_team = make_team(stack.session_factory), make_team(stack.session_factory)

    def agent(team_name: str) -> str:
        with stack.session_factory.begin() as session:
            return agent_service.create_agent(
                session=session, data=AgentCreate(name="A", email=f"{uuid.uuid4().hex}@x.io", team=team_name)
            ).agent.id

    def file(team_name: str) -> str:
        case_id = f"c{uuid.uuid4().hex[:20]}"
        with stack.session_factory.begin() as session:
            case_service.open_case(
                session=session, case_id=case_id, data=filing(team_name), actor="t", idempotency_key=None
            )
        return case_id

    me = agent(team)
    await caught_up(stack, hub)
    sub, position = hub.subscribe(Audience(kind="agent", agent_id=me, team=team), None)
    stream = Collect(hub.stream(sub, position))
    mine = file(team)  # filed (queued in my team), then reserved for me
    mate = agent(team)  # a teammate: their agent events are not mine
    theirs = file(team)  # filed (queued: I see it), reserved for the teammate (I do not)
    elsewhere = file(other_team)  # another team's queue: never
    waiting = file(team)  # nobody free: stays queued in my team
    with stack.session_factory.begin() as session:
        case_service.cancel_case(session=session, case_id=mine, reason="t", actor="t")  # frees me: I take `waiting`
    got = await stream.take(6)
    await asyncio.sleep(0.5)
    assert len(stream.got) == 6
    seen = [(e.event, json.loads(e.raw_data or "{}")["data"]["id"]) for e in got]
    assert seen == [
        ("case.filed", mine),
        ("case.reserved", mine),
        ("case.filed", theirs),
        ("case.filed", waiting),
        ("case.cancelled", mine),
        ("case.reserved", waiting),
    ]
    assert elsewhere not in str(got) and mate not in str(got)
    with stack.session_factory.begin() as session:
        agent_service.remove_agent(session=session, agent_id=me, actor="admin")
    last = (await stream.end())[6:]
    assert [e.event for e in last] == ["agent.removed"], "the stream ends with the agent's removal"
    for case_id in (theirs, elsewhere, waiting):
        with stack.session_factory.begin() as session:
            case_service.cancel_case(session=session, case_id=case_id, reason="cleanup", actor="t")


async def test_a_removed_agents_stream_ends(stack: Stack, hub: EventHub) -> None:
    traffic = Traffic(stack)
    me = traffic.agent()
    await caught_up(stack, hub)
    sub, position = hub.subscribe(Audience(kind="agent", agent_id=me, team=traffic.team), None)
    stream = Collect(hub.stream(sub, position))
    traffic.rename(me)
    with stack.session_factory.begin() as session:
        agent_service.remove_agent(session=session, agent_id=me, actor="admin")
    got = await stream.end()
    assert [e.event for e in got] == ["agent.updated", "agent.removed"]
    assert sub not in hub.subscribers


async def test_a_subscriber_that_falls_behind_is_dropped_and_resumes(stack: Stack) -> None:
    hub = EventHub(stack.session_factory, poll_interval=0.05, queue_size=3)
    await hub.start()
    assert await hub.wait_ready(10)
    try:
        traffic = Traffic(stack)
        sub, position = hub.subscribe(Audience(kind="admin"), None)
        agent = traffic.agent()
        for _ in range(9):
            traffic.rename(agent)
        await asyncio.sleep(0.5)
        assert sub.dropped and sub not in hub.subscribers
        got = await Collect(hub.stream(sub, position)).end()
        assert len(got) == 3, "what was queued is delivered, then the stream ends"
        sub2, position2 = hub.subscribe(Audience(kind="admin"), int(got[-1].id or 0))
        resumed = Collect(hub.stream(sub2, position2))
        rest = await resumed.take(7)
        await resumed.close()
        assert ids(got + rest) == list(range(ids(got)[0], ids(got)[0] + 10))
    finally:
        await hub.stop()


async def test_a_transaction_that_commits_after_a_later_recorded_one_is_streamed(stack: Stack, hub: EventHub) -> None:
    pair = TwoTransitions(stack.session_factory)
    await caught_up(stack, hub)
    sub, position = hub.subscribe(Audience(kind="admin"), None)
    stream = Collect(hub.stream(sub, position))
    recorded, release = threading.Event(), threading.Event()

    def first() -> None:
        with stack.session_factory.begin() as session:
            pair.rename_agent(session)
            recorded.set()
            assert release.wait(30)

    t1 = asyncio.get_running_loop().run_in_executor(None, first)
    assert await asyncio.to_thread(recorded.wait, 30)
    with stack.session_factory.begin() as session:
        pair.cancel_case(session)
    early = await stream.take(1)
    await asyncio.sleep(0.3)  # the hub polls a few times while T1 is still open
    release.set()
    await t1
    late = (await stream.take(2))[1:]
    renamed, cancelled = pair.ids()
    assert ids(early + late) == [cancelled, renamed]
    assert [e.event for e in early + late] == ["case.cancelled", "agent.updated"]
    await stream.close()
