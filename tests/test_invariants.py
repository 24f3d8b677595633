"""The invariant checker reports each kind of violation, built directly in the database, and nothing
for a clean history. `Scene` writes rows and events the way the service does, at chosen instants, so
each test can break exactly one promise."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.ids import new_id
from core.models import (
    PRIORITY_RANK,
    Agent,
    AgentEvent,
    AgentStatus,
    CaseEvent,
    CasePriority,
    CaseStatus,
    ReturnCase,
    Team,
    utcnow,
)
from core.outbox import buffer_event
from ops.invariants import (
    Violation,
    ViolationKind,
    check_database,
    find_violations,
    find_workflow_violations,
    snapshot_session,
)
from tests.conftest import Stack
from tests.helpers import API, add_agent, eventually, file_case, get_case, new_team, resolve

Kind = ViolationKind


class Scene:
    """Agents, cases and their events in one team, written as the service writes them, at instants
    `t(seconds)` after a base time an hour ago. Mutate, then `save()`, then `check()`."""

    def __init__(self, session_factory: sessionmaker[Session], team: str, other_team: str) -> None:
        self.session_factory, self.team, self.other_team = session_factory, team, other_team
        self.base = utcnow() - timedelta(hours=1)
        self.agents: dict[str, Agent] = {}
        self.cases: dict[str, ReturnCase] = {}
        self.events: list[CaseEvent] = []
        self.agent_events: list[AgentEvent] = []

    def t(self, seconds: float) -> datetime:
        return self.base + timedelta(seconds=seconds)

    # --- agents ---

    def agent(self, at: float, status: AgentStatus = AgentStatus.AVAILABLE) -> str:
        agent_id = new_id("a")
        email = f"{agent_id}@desk.example"
        self.agents[agent_id] = Agent(
            id=agent_id, name="Agent", email=email, active_email=email, team=self.team, status=status,
            available_since=self.t(at), created_at=self.t(at), updated_at=self.t(at),
        )  # fmt: skip
        self._agent_event(agent_id, at, "created")
        return agent_id

    def set_status(self, agent_id: str, at: float, status: AgentStatus) -> None:
        agent = self.agents[agent_id]
        agent.status = status
        if status == AgentStatus.AVAILABLE:
            agent.available_since = self.t(at)
        self._agent_event(agent_id, at, "updated")

    def move(self, agent_id: str, at: float, team: str) -> None:
        self.agents[agent_id].team = team
        self._agent_event(agent_id, at, "updated")

    def remove(self, agent_id: str, at: float) -> None:
        agent = self.agents[agent_id]
        agent.deleted_at, agent.status, agent.active_email = self.t(at), AgentStatus.AWAY, None
        self._agent_event(agent_id, at, "removed")

    def _agent_event(self, agent_id: str, at: float, type: str) -> None:
        agent = self.agents[agent_id]
        self.agent_events.append(
            AgentEvent(agent_id=agent_id, at=self.t(at), type=type, actor="test", status=agent.status,
                       team=agent.team, removed=agent.deleted_at is not None,
                       available_since=agent.available_since, data={})
        )  # fmt: skip

    # --- cases ---

    def file(self, at: float, *, queued_at: float | None = None, priority: CasePriority = CasePriority.NORMAL) -> str:
        case_id = new_id("c")
        order = f"ord-{case_id}"
        self.cases[case_id] = ReturnCase(
            id=case_id, team=self.team, priority=priority, priority_rank=PRIORITY_RANK[priority],
            customer_name="Dana", customer_email="dana@shop.example", order_id=order, product_sku="SKU",
            product_name="Kettle", reason="broken", status=CaseStatus.QUEUED,
            queued_at=self.t(at if queued_at is None else queued_at), open_order_line=f"{order}\x1fSKU",
        )  # fmt: skip
        self._event(case_id, at, "filed", None)
        return case_id

    def reserve(self, case_id: str, agent_id: str, at: float) -> None:
        case = self.cases[case_id]
        before = case.status
        case.status, case.agent_id, case.reserved_at = CaseStatus.RESERVED, agent_id, self.t(at)
        self.agents[agent_id].current_case_id = case_id
        self._event(case_id, at, "reserved", before, agent_id)

    def assign(self, case_id: str, at: float) -> None:
        case = self.cases[case_id]
        case.status, case.assigned_at = CaseStatus.ASSIGNED, self.t(at)
        self._event(case_id, at, "assigned", CaseStatus.RESERVED, case.agent_id)

    def hand(self, case_id: str, agent_id: str, at: float) -> None:
        """Reserve, then confirm a moment later."""
        self.reserve(case_id, agent_id, at)
        self.assign(case_id, at + 0.1)

    def resolve(self, case_id: str, at: float) -> None:
        self._close(case_id, at, CaseStatus.RESOLVED)

    def cancel(self, case_id: str, at: float) -> None:
        self._close(case_id, at, CaseStatus.CANCELLED)

    def _close(self, case_id: str, at: float, to: CaseStatus) -> None:
        case = self.cases[case_id]
        before = case.status
        case.status, case.open_order_line, case.is_open = to, None, False
        if to == CaseStatus.RESOLVED:
            case.resolved_at = self.t(at)
        else:
            case.cancelled_at = self.t(at)
        self._event(case_id, at, to.value, before, case.agent_id)
        holder = self.agents.get(case.agent_id or "")
        if holder is not None and holder.current_case_id == case_id:
            holder.current_case_id, holder.available_since = None, self.t(at)

    def requeue(self, case_id: str, at: float) -> None:
        case = self.cases[case_id]
        before, holder = case.status, case.agent_id
        case.status, case.agent_id, case.reserved_at, case.assigned_at = CaseStatus.QUEUED, None, None, None
        self._event(case_id, at, "requeued", before, holder)
        agent = self.agents.get(holder or "")
        if agent is not None and agent.current_case_id == case_id:
            agent.current_case_id = None

    def _event(self, case_id: str, at: float, type: str, before: str | None, agent_id: str | None = None) -> None:
        self.events.append(
            CaseEvent(case_id=case_id, at=self.t(at), type=type, actor="test", from_status=before,
                      to_status=self.cases[case_id].status, agent_id=agent_id, data={})
        )  # fmt: skip

    # --- database ---

    def save(self) -> None:
        with self.session_factory.begin() as session:
            session.add_all(self.agents.values())
            session.flush()
            session.add_all(self.cases.values())
            session.flush()
            rows: list[CaseEvent | AgentEvent] = [*self.events, *self.agent_events]
            for row in rows:
                buffer_event(session=session, row=row)

    def check(
        self, *, now: float = 3600, idle_grace: float = 5, reservation_grace: float | None = None
    ) -> list[Violation]:
        with snapshot_session(self.session_factory) as session:
            return find_violations(
                session=session,
                idle_grace=timedelta(seconds=idle_grace),
                now=self.t(now),
                teams=[self.team],
                reservation_grace=None if reservation_grace is None else timedelta(seconds=reservation_grace),
            )


def kinds(violations: list[Violation]) -> list[ViolationKind]:
    return sorted({v.kind for v in violations})


@pytest.fixture
def scene(stack: Stack) -> Iterator[Scene]:
    """A scene on two fresh teams, removed from the database afterwards (it is broken on purpose)."""
    team, other = f"inv-{uuid.uuid4().hex[:10]}", f"inv-{uuid.uuid4().hex[:10]}"
    with stack.session_factory.begin() as session:
        session.add_all([Team(name=team), Team(name=other)])
    made = Scene(stack.session_factory, team, other)
    yield made
    with stack.session_factory.begin() as session:
        case_ids = select(ReturnCase.id).where(ReturnCase.team.in_([team, other]))
        session.execute(delete(CaseEvent).where(CaseEvent.case_id.in_(case_ids)))
        session.execute(delete(AgentEvent).where(AgentEvent.agent_id.in_(list(made.agents) or [""])))
        session.execute(update(Agent).where(Agent.id.in_(list(made.agents) or [""])).values(current_case_id=None))
        session.execute(delete(ReturnCase).where(ReturnCase.team.in_([team, other])))
        session.execute(delete(Agent).where(Agent.id.in_(list(made.agents) or [""])))
        session.execute(delete(Team).where(Team.name.in_([team, other])))


def busy_day(s: Scene) -> None:
    """A clean history with every kind of transition: hand-offs in order, priority, away and back,
    a removal that requeues, a cancel, a move to another team."""
    ana, ben = s.agent(0), s.agent(1)
    first, second, third = s.file(10), s.file(11), s.file(12)
    s.hand(first, ana, 10.01)
    s.hand(second, ben, 11.01)
    urgent = s.file(13, priority=CasePriority.HIGH)
    s.resolve(first, 20)
    s.hand(urgent, ana, 20)  # high priority first, in the same transaction as the release
    s.set_status(ben, 21, AgentStatus.AWAY)  # keeps the case they hold
    s.resolve(second, 22)  # away: takes nothing next
    s.remove(ana, 23)
    s.requeue(urgent, 23)
    cleo = s.agent(24)
    s.hand(urgent, cleo, 24)  # the requeued case is first in line again
    s.resolve(urgent, 30)
    s.hand(third, cleo, 30)
    s.set_status(ben, 31, AgentStatus.AVAILABLE)
    fourth = s.file(32)
    s.hand(fourth, ben, 32)
    s.cancel(fourth, 33)
    s.resolve(third, 34)
    s.move(ben, 35, s.other_team)
    s.set_status(cleo, 36, AgentStatus.AWAY)
    s.cancel(s.file(40), 41)  # cancelled while queued: nobody in the team was available
    s.set_status(cleo, 45, AgentStatus.AVAILABLE)
    s.hand(s.file(50), cleo, 50)


# --- the database checks ------------------------------------------------------------------------


async def test_clean_history_has_no_violation(scene: Scene) -> None:
    busy_day(scene)
    scene.save()
    assert scene.check(reservation_grace=60) == []


async def test_agent_holding_two_cases(scene: Scene) -> None:
    ana = scene.agent(0)
    first, second = scene.file(10), scene.file(11)
    scene.hand(first, ana, 10)
    scene.hand(second, ana, 11)  # reserved while still holding the first
    scene.save()
    found = scene.check()
    assert Kind.AGENT_HOLDS_TWO_CASES in kinds(found)
    assert {v.agent_id for v in found if v.kind == Kind.AGENT_HOLDS_TWO_CASES} == {ana}


async def test_agent_held_two_cases_in_the_past(scene: Scene) -> None:
    ana = scene.agent(0)
    first, second = scene.file(10), scene.file(11)
    scene.hand(first, ana, 10)
    scene.hand(second, ana, 11)
    scene.resolve(first, 12)  # the current state is clean again; the history is not
    scene.save()
    found = scene.check()
    assert kinds(found) == [Kind.AGENT_HOLDS_TWO_CASES]
    assert found[0].case_id == second


async def test_case_and_agent_disagree_about_the_hold(scene: Scene) -> None:
    ana = scene.agent(0)
    case = scene.file(10)
    scene.hand(case, ana, 10)
    scene.agents[ana].current_case_id = None  # the agent forgot the case
    scene.save()
    found = scene.check()
    assert kinds(found) == [Kind.HOLDER_MISMATCH]
    assert (found[0].case_id, found[0].agent_id) == (case, ana)


async def test_agent_points_at_a_case_held_by_another(scene: Scene) -> None:
    ana, ben = scene.agent(0), scene.agent(1)
    case = scene.file(10)
    scene.hand(case, ana, 10)
    scene.agents[ana].current_case_id, scene.agents[ben].current_case_id = None, case
    scene.save()
    found = scene.check()
    assert kinds(found) == [Kind.HOLDER_MISMATCH]
    assert {v.agent_id for v in found} == {ana, ben}


async def test_case_held_by_removed_agent(scene: Scene) -> None:
    ana = scene.agent(0)
    case = scene.file(10)
    scene.hand(case, ana, 10)
    scene.remove(ana, 20)  # removed, but the case was not requeued
    scene.save()
    found = scene.check()
    assert Kind.HELD_BY_REMOVED_AGENT in kinds(found)
    assert all(v.agent_id == ana for v in found)


async def test_reserved_for_an_agent_removed_before(scene: Scene) -> None:
    ana = scene.agent(0)
    scene.remove(ana, 5)
    case = scene.file(10)
    scene.reserve(case, ana, 10)
    scene.requeue(case, 11)
    scene.save()
    found = scene.check(idle_grace=10_000)
    assert kinds(found) == [Kind.RESERVED_FOR_INELIGIBLE_AGENT]
    assert "removed" in found[0].detail


async def test_reserved_for_an_agent_away_at_that_moment(scene: Scene) -> None:
    ana = scene.agent(0)
    scene.set_status(ana, 5, AgentStatus.AWAY)
    case = scene.file(10)
    scene.hand(case, ana, 10)
    scene.resolve(case, 20)
    scene.save()
    found = scene.check()
    assert kinds(found) == [Kind.RESERVED_FOR_INELIGIBLE_AGENT]
    assert (found[0].case_id, found[0].agent_id) == (case, ana)
    assert "away" in found[0].detail


async def test_agent_back_from_away_may_take_a_case(scene: Scene) -> None:
    ana = scene.agent(0)
    scene.set_status(ana, 5, AgentStatus.AWAY)
    scene.set_status(ana, 8, AgentStatus.AVAILABLE)
    case = scene.file(10)
    scene.hand(case, ana, 10)
    scene.set_status(ana, 12, AgentStatus.AWAY)  # going away later does not matter
    scene.resolve(case, 20)
    scene.save()
    assert scene.check() == []


async def test_reserved_for_an_agent_of_another_team(scene: Scene) -> None:
    ana = scene.agent(0)
    scene.move(ana, 5, scene.other_team)
    case = scene.file(10)
    scene.hand(case, ana, 10)
    scene.resolve(case, 20)
    scene.save()
    found = scene.check()
    assert kinds(found) == [Kind.RESERVED_FOR_INELIGIBLE_AGENT]
    assert scene.other_team in found[0].detail


async def test_terminal_case_still_holds_its_agent(scene: Scene) -> None:
    ana = scene.agent(0)
    case = scene.file(10)
    scene.hand(case, ana, 10)
    scene.resolve(case, 20)
    scene.agents[ana].current_case_id = case  # the release forgot the agent
    scene.save()
    found = scene.check()
    assert kinds(found) == [Kind.TERMINAL_CASE_HOLDS_AGENT]
    assert (found[0].case_id, found[0].agent_id) == (case, ana)


async def test_idle_agent_while_a_case_waits(scene: Scene) -> None:
    ana = scene.agent(0)
    case = scene.file(100)
    scene.save()
    found = scene.check(now=100 + 6, idle_grace=5)
    assert kinds(found) == [Kind.IDLE_AGENT_WHILE_CASE_WAITS]
    assert (found[0].case_id, found[0].agent_id) == (case, ana)
    # Within the grace period it is not (yet) a violation.
    assert scene.check(now=100 + 4, idle_grace=5) == []


async def test_idle_counts_from_when_the_agent_came_back(scene: Scene) -> None:
    ana = scene.agent(0, status=AgentStatus.AWAY)
    scene.file(10)
    scene.set_status(ana, 100, AgentStatus.AVAILABLE)
    scene.save()
    assert scene.check(now=104, idle_grace=5) == []
    assert kinds(scene.check(now=106, idle_grace=5)) == [Kind.IDLE_AGENT_WHILE_CASE_WAITS]


async def test_away_agent_and_waiting_case_is_fine(scene: Scene) -> None:
    scene.agent(0, status=AgentStatus.AWAY)
    scene.file(10)
    scene.save()
    assert scene.check(now=1000) == []


async def test_out_of_order_handoff(scene: Scene) -> None:
    older, newer = scene.file(10), scene.file(11)
    other = scene.agent(12)
    ana = scene.agent(13)
    scene.hand(newer, other, 12)  # the newer case jumped the older one
    scene.hand(older, ana, 13)
    scene.save()
    found = scene.check()
    assert kinds(found) == [Kind.OUT_OF_ORDER_HANDOFF]
    assert found[0].case_id == newer and older in found[0].detail


async def test_high_priority_may_overtake(scene: Scene) -> None:
    ana = scene.agent(0, status=AgentStatus.AWAY)
    scene.file(10)
    urgent = scene.file(11, priority=CasePriority.HIGH)
    scene.set_status(ana, 12, AgentStatus.AVAILABLE)
    scene.hand(urgent, ana, 12)
    scene.save()
    assert scene.check() == []


async def test_normal_case_may_not_overtake_high_priority(scene: Scene) -> None:
    ana = scene.agent(0, status=AgentStatus.AWAY)
    normal = scene.file(10)
    urgent = scene.file(11, priority=CasePriority.HIGH)
    scene.set_status(ana, 12, AgentStatus.AVAILABLE)
    scene.hand(normal, ana, 12)
    scene.save()
    found = scene.check(idle_grace=10_000)
    assert [(v.kind, v.case_id) for v in found] == [(Kind.OUT_OF_ORDER_HANDOFF, normal)]
    assert urgent in found[0].detail


async def test_longest_idle_agent_passed_over(scene: Scene) -> None:
    ana, ben = scene.agent(0), scene.agent(5)
    case = scene.file(10)
    scene.hand(case, ben, 10)  # ana has been free longer
    scene.save()
    found = scene.check()
    assert [(v.kind, v.case_id, v.agent_id) for v in found] == [(Kind.AGENT_PASSED_OVER, case, ben)]
    assert ana in found[0].detail


async def test_idle_time_counts_from_the_last_release(scene: Scene) -> None:
    ana, ben = scene.agent(0), scene.agent(1)
    first, second = scene.file(2), scene.file(3)
    scene.hand(first, ana, 2)
    scene.hand(second, ben, 3)
    scene.resolve(second, 10)  # ben free since 10
    scene.resolve(first, 11)  # ana free since 11: ben is now the longest idle
    third = scene.file(12)
    scene.hand(third, ana, 12)
    scene.save()
    found = scene.check()
    assert [(v.kind, v.case_id, v.agent_id) for v in found] == [(Kind.AGENT_PASSED_OVER, third, ana)]
    assert ben in found[0].detail


async def test_away_and_busy_agents_may_be_passed_over(scene: Scene) -> None:
    ana, ben, cleo = scene.agent(0), scene.agent(1), scene.agent(5)
    scene.set_status(ana, 2, AgentStatus.AWAY)
    held = scene.file(3)
    scene.hand(held, ben, 3)
    case = scene.file(10)
    scene.hand(case, cleo, 10)  # ana is away, ben busy
    scene.save()
    assert scene.check() == []


async def test_only_cases_waiting_at_that_instant_count(scene: Scene) -> None:
    ana = scene.agent(0)
    newer = scene.file(10)
    scene.hand(newer, ana, 10)
    # Filed (into the database) after that hand-off, though the customer sent it earlier.
    scene.file(11, queued_at=5)
    scene.save()
    assert scene.check(idle_grace=10_000) == []


async def test_requeued_case_keeps_its_place(scene: Scene) -> None:
    ana, ben = scene.agent(0), scene.agent(1)
    first = scene.file(10)
    scene.hand(first, ana, 10)
    later = scene.file(11)
    scene.hand(later, ben, 11)  # nothing else waited: fine
    scene.resolve(later, 12)
    scene.remove(ana, 20)
    scene.requeue(first, 20)  # back in line with its original queued_at, before `newest`
    newest = scene.file(21)
    scene.hand(newest, ben, 22)  # wrong: the requeued case was first in line
    scene.save()
    found = scene.check(idle_grace=10_000)
    assert [(v.kind, v.case_id) for v in found] == [(Kind.OUT_OF_ORDER_HANDOFF, newest)]
    assert first in found[0].detail


async def test_requeued_case_served_first_is_fine(scene: Scene) -> None:
    ana, ben = scene.agent(0), scene.agent(1)
    first = scene.file(10)
    scene.hand(first, ana, 10)
    scene.set_status(ben, 10.5, AgentStatus.AWAY)
    newest = scene.file(11)
    scene.remove(ana, 20)
    scene.requeue(first, 20)
    scene.set_status(ben, 21, AgentStatus.AVAILABLE)
    scene.hand(first, ben, 21)
    scene.resolve(first, 22)
    scene.hand(newest, ben, 22)
    scene.save()
    assert scene.check(idle_grace=10_000) == []


async def test_stale_reservation(scene: Scene) -> None:
    ana = scene.agent(0)
    case = scene.file(10)
    scene.reserve(case, ana, 10)  # never confirmed
    scene.save()
    found = scene.check(now=100, reservation_grace=30)
    assert [(v.kind, v.case_id) for v in found] == [(Kind.STALE_RESERVATION, case)]
    assert scene.check(now=100) == []  # not checked without a grace period
    assert scene.check(now=30, reservation_grace=30) == []


async def test_inconsistent_fields(scene: Scene) -> None:
    ana = scene.agent(0)
    case = scene.file(10)
    scene.hand(case, ana, 10)
    scene.resolve(case, 20)
    scene.cases[case].resolved_at = None
    scene.save()
    found = scene.check()
    assert kinds(found) == [Kind.INCONSISTENT_FIELDS]
    assert "resolved_at missing" in found[0].detail


async def test_history_that_does_not_match_the_row(scene: Scene) -> None:
    ana = scene.agent(0)
    case = scene.file(10)
    scene.hand(case, ana, 10)
    scene.events.pop()  # the `assigned` event is missing
    scene.save()
    found = scene.check()
    assert kinds(found) == [Kind.BROKEN_HISTORY]
    assert "row says assigned" in found[0].detail


async def test_duplicate_terminal_event(scene: Scene) -> None:
    ana = scene.agent(0)
    case = scene.file(10)
    scene.hand(case, ana, 10)
    scene.resolve(case, 20)
    scene._event(case, 21, "resolved", CaseStatus.ASSIGNED, ana)  # written twice
    scene.save()
    found = scene.check()
    assert kinds(found) == [Kind.BROKEN_HISTORY]
    assert "starts from assigned but the case was resolved" in found[0].detail


async def test_case_with_no_events(scene: Scene) -> None:
    case = scene.file(10)
    scene.events.clear()
    scene.save()
    assert [(v.kind, v.case_id) for v in scene.check()] == [(Kind.BROKEN_HISTORY, case)]


# --- the database against the workflows ---------------------------------------------------------


async def test_live_service_is_clean(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    agents = [await add_agent(api, team) for _ in range(2)]
    cases = [await file_case(api, team) for _ in range(5)]
    assert (await resolve(api, cases[0]["id"], cases[0]["agent_id"])).status_code == 200
    assert (await api.post(f"{API}/cases/{cases[4]['id']}/cancel")).status_code == 200
    assert (await api.delete(f"{API}/agents/{agents[1]['id']}")).status_code == 204
    await eventually(
        lambda: get_case(api, cases[2]["id"]), lambda c: c["status"] == "assigned" and c["agent_id"] == agents[0]["id"]
    )
    assert check_database(stack.session_factory, idle_grace=timedelta(seconds=5), teams=[team]) == []
    found = await find_workflow_violations(
        client=stack.client, session_factory=stack.session_factory, teams=[team], recheck_after=timedelta(seconds=1)
    )
    assert found == []


async def test_open_case_whose_workflow_was_terminated(stack: Stack) -> None:
    team = await new_team(stack.api)
    case = await file_case(stack.api, team)
    await stack.client.get_workflow_handle(case["workflow_id"]).terminate(reason="invariant checker test")
    found = await find_workflow_violations(
        client=stack.client, session_factory=stack.session_factory, teams=[team], recheck_after=timedelta(seconds=0.2)
    )
    assert kinds(found) == [Kind.OPEN_CASE_WORKFLOW_CLOSED, Kind.WORKFLOW_NOT_COMPLETED]
    assert {v.case_id for v in found} == {case["id"]}


async def test_database_and_workflow_disagree(stack: Stack) -> None:
    api = stack.api
    team = await new_team(api)
    case = await file_case(api, team)
    _cancel_behind_the_workflows_back(stack, case["id"])
    found = await find_workflow_violations(
        client=stack.client, session_factory=stack.session_factory, teams=[team], recheck_after=timedelta(seconds=0.2)
    )
    assert [(v.kind, v.case_id) for v in found] == [(Kind.WORKFLOW_DISAGREES, case["id"])]
    assert "database: cancelled" in found[0].detail and "workflow: queued" in found[0].detail
    # The workflow learns the truth when asked to cancel; then both agree.
    assert (await api.post(f"{API}/cases/{case['id']}/cancel")).status_code == 200
    found = await find_workflow_violations(
        client=stack.client, session_factory=stack.session_factory, teams=[team], recheck_after=timedelta(seconds=0.2)
    )
    assert found == []


async def test_disagreement_that_moves_on_is_not_reported(stack: Stack) -> None:
    team = await new_team(stack.api)
    case = await file_case(stack.api, team)
    _cancel_behind_the_workflows_back(stack, case["id"])
    checking = asyncio.create_task(
        find_workflow_violations(
            client=stack.client, session_factory=stack.session_factory, teams=[team], recheck_after=timedelta(seconds=1)
        )
    )
    await asyncio.sleep(0.5)
    # The transition "lands" in the workflow while the checker waits to look again.
    assert (await stack.api.post(f"{API}/cases/{case['id']}/cancel")).status_code == 200
    assert await checking == []


async def test_case_row_without_workflow(scene: Scene, stack: Stack) -> None:
    case = scene.file(10)
    scene.save()
    found = await find_workflow_violations(
        client=stack.client,
        session_factory=stack.session_factory,
        teams=[scene.team],
        recheck_after=timedelta(seconds=0.1),
    )
    assert [(v.kind, v.case_id) for v in found] == [(Kind.WORKFLOW_MISSING, case)]


def _cancel_behind_the_workflows_back(stack: Stack, case_id: str) -> None:
    with stack.session_factory.begin() as session:
        row = session.get(ReturnCase, case_id)
        assert row is not None and row.status == CaseStatus.QUEUED
        now = utcnow()
        row.status, row.cancelled_at, row.open_order_line, row.is_open = CaseStatus.CANCELLED, now, None, False
        buffer_event(
            session=session,
            row=CaseEvent(case_id=case_id, at=now, type="cancelled", actor="test", from_status=CaseStatus.QUEUED,
                          to_status=CaseStatus.CANCELLED, agent_id=None, data={}),
        )  # fmt: skip
