"""The outbox: event ids are assigned at commit, in commit order; a reader polling `id > cursor` skips nothing;
a rollback announces nothing and leaves no gap; each event carries the case as it stood at that transition."""

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from core import agents as agent_service
from core import cases as case_service
from core import teams as team_service
from core.models import AgentEvent, CaseEvent, CaseStatus
from core.outbox import last_event_id, pending_events, read_events
from core.schemas import AgentCreate, AgentUpdate
from tests.conftest import Stack
from workflows.messages import CaseDraft


def make_team(session_factory: sessionmaker[Session]) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    with session_factory.begin() as session:
        team_service.create_team(session=session, name=name)
    return name


def filing(team: str) -> CaseDraft:
    return CaseDraft(
        customer_name="Dana",
        customer_email="dana@shop.example",
        order_id=f"o-{uuid.uuid4().hex[:10]}",
        product_sku="SKU-1",
        product_name="Kettle",
        reason="broken",
        team=team,
    )


def open_case(session: Session, team: str) -> str:
    case_id = f"c{uuid.uuid4().hex[:20]}"
    case_service.open_case(session=session, case_id=case_id, data=filing(team), actor="test", idempotency_key=None)
    return case_id


def events_of(session_factory: sessionmaker[Session], case_id: str) -> list[CaseEvent]:
    with session_factory() as session:
        return list(session.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)))


class Poller:
    """Reads the outbox the way the stream's reader and the webhook activity do: `id > cursor`, then moves on."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory
        with session_factory() as session:
            self.cursor = last_event_id(session=session)
        self.seen: list[int] = []

    def poll(self) -> list[int]:
        with self.session_factory() as session:
            rows = read_events(session=session, after=self.cursor)
        ids = [r.id for r in rows]
        self.seen += ids
        if ids:
            self.cursor = ids[-1]
        return ids


@pytest.fixture
def sf(any_stack: Stack) -> sessionmaker[Session]:
    return any_stack.session_factory


def test_a_filing_records_each_transition_with_its_own_state(sf: sessionmaker[Session]) -> None:
    team = make_team(sf)
    with sf.begin() as session:
        agent_service.create_agent(
            session=session, data=AgentCreate(name="A", email=f"{uuid.uuid4().hex}@x.io", team=team)
        )
    with sf.begin() as session:
        case_id = open_case(session, team)
        case_service.confirm_assignment(
            session=session, case_id=case_id, agent_id=case_service.get_case(session=session, case_id=case_id).agent_id,
            actor="workflow",
        )  # fmt: skip
        assert [e.type for e in pending_events(session)] == ["filed", "reserved", "assigned"]
    rows = events_of(sf, case_id)
    assert [(e.type, e.snapshot and e.snapshot["status"]) for e in rows] == [
        ("filed", "queued"),
        ("reserved", "reserved"),
        ("assigned", "assigned"),
    ]
    assert rows[0].snapshot is not None and rows[0].snapshot["agent_id"] is None
    assert rows[2].snapshot is not None and rows[2].snapshot["agent_id"] == rows[2].agent_id
    assert rows[0].snapshot["assigned_at"] is None and rows[2].snapshot["assigned_at"] is not None
    assert [e.id for e in rows] == list(range(rows[0].id, rows[0].id + 3)), "one transaction takes consecutive ids"


def test_a_rolled_back_transition_announces_nothing_and_leaves_no_gap(sf: sessionmaker[Session]) -> None:
    team = make_team(sf)
    poller = Poller(sf)
    before = poller.cursor
    with pytest.raises(RuntimeError, match="changed my mind"), sf.begin() as session:
        open_case(session, team)
        assert len(pending_events(session)) == 1
        raise RuntimeError("changed my mind")
    assert poller.poll() == []
    with sf() as session:
        assert last_event_id(session=session) == before
    with sf.begin() as session:
        case_id = open_case(session, team)
    assert poller.poll() == [before + 1], "the next event takes the id the rollback gave back"
    assert events_of(sf, case_id)[0].id == before + 1


def test_events_recorded_in_a_rolled_back_savepoint_are_dropped(sf: sessionmaker[Session]) -> None:
    team = make_team(sf)
    poller = Poller(sf)
    with sf.begin() as session:
        kept = open_case(session, team)
        try:
            with session.begin_nested():
                open_case(session, team)
                raise RuntimeError("undo this one")
        except RuntimeError:
            pass
        with session.begin_nested():
            kept_too = open_case(session, team)
    assert len(poller.poll()) == 2
    assert [e.type for e in events_of(sf, kept)] == ["filed"]
    assert [e.type for e in events_of(sf, kept_too)] == ["filed"]


def test_agent_events_share_the_sequence_and_carry_the_agent(sf: sessionmaker[Session]) -> None:
    team = make_team(sf)
    poller = Poller(sf)
    with sf.begin() as session:
        change = agent_service.create_agent(
            session=session, data=AgentCreate(name="Ana", email=f"{uuid.uuid4().hex}@x.io", team=team)
        )
    with sf.begin() as session:
        case_id = open_case(session, team)
    with sf.begin() as session:
        agent_service.remove_agent(session=session, agent_id=change.agent.id, actor="admin")
    with sf() as session:
        rows = read_events(session=session, after=poller.cursor)
    assert [(r.kind, r.type) for r in rows] == [
        ("agent", "created"),
        ("case", "filed"),
        ("case", "reserved"),
        ("agent", "removed"),
        ("case", "requeued"),
    ]
    assert rows[0].snapshot is not None and rows[0].snapshot["name"] == "Ana" and rows[0].snapshot["team"] == team
    removed = next(r for r in rows if r.type == "removed")
    assert removed.snapshot is not None and removed.snapshot["current_case_id"] is None
    requeued = next(r for r in rows if r.type == "requeued")
    assert requeued.subject_id == case_id and requeued.agent_id == change.agent.id
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    with sf() as session:
        assert session.get(AgentEvent, rows[0].id) is not None


def _pause_after_sequence_bump(session: Session, reached: threading.Event, release: threading.Event) -> None:
    """Make this session stop between taking its ids (the UPDATE of event_sequence) and COMMIT."""
    connection = session.connection()

    @event.listens_for(connection, "after_cursor_execute")
    def _hold(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE event_sequence"):
            reached.set()
            assert release.wait(30)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


class TwoTransitions:
    """Two product transactions that share no lock but the sequence row: renaming an away agent of one team,
    cancelling a queued case of another (neither runs dispatch, whose index scan can touch a neighbour's row)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.sf = session_factory
        team1, team2 = make_team(session_factory), make_team(session_factory)
        with session_factory.begin() as session:
            self.agent_id = agent_service.create_agent(
                session=session,
                data=AgentCreate(name="Ana", email=f"{uuid.uuid4().hex}@x.io", team=team1, status="away"),
            ).agent.id
            self.case_id = open_case(session, team2)

    def rename_agent(self, session: Session) -> None:
        agent_service.update_agent(
            session=session, agent_id=self.agent_id, data=AgentUpdate(name=f"Ana {uuid.uuid4().hex[:4]}"), actor="t"
        )

    def cancel_case(self, session: Session) -> None:
        case_service.cancel_case(session=session, case_id=self.case_id, reason="changed mind", actor="t")

    def ids(self) -> tuple[int, int]:
        """The ids of the rename's event and the cancel's event."""
        with self.sf() as session:
            renamed = session.scalars(
                select(AgentEvent.id).where(AgentEvent.agent_id == self.agent_id, AgentEvent.type == "updated")
            ).one()
        return renamed, events_of(self.sf, self.case_id)[-1].id


def test_a_transaction_that_records_first_but_commits_last_is_not_skipped(
    stack: Stack, pool: ThreadPoolExecutor
) -> None:
    """DESIGN section 11's pitfall: T1 records its event first, T2 commits first; a poller between the two
    commits must not move past T1's event. Ids follow commit order, so T2's id is the lower one."""
    pair = TwoTransitions(stack.session_factory)
    poller = Poller(stack.session_factory)
    recorded, release = threading.Event(), threading.Event()

    def first() -> None:
        with stack.session_factory.begin() as session:
            pair.rename_agent(session)
            assert len(pending_events(session)) == 1
            recorded.set()
            assert release.wait(30)

    def second() -> None:
        assert recorded.wait(30)
        with stack.session_factory.begin() as session:
            pair.cancel_case(session)

    t1 = pool.submit(first)
    pool.submit(second).result(30)
    between = poller.poll()
    release.set()
    t1.result(30)
    after = poller.poll()
    renamed, cancelled = pair.ids()
    assert between == [cancelled] and after == [renamed]
    assert cancelled < renamed, "ids follow commit order, not the order events were recorded in"


def test_a_reader_waits_for_a_writer_holding_the_sequence(stack: Stack, pool: ThreadPoolExecutor) -> None:
    """T1 has taken its id but not committed; T2 queues behind it on the sequence row; a reader sees neither
    until T1 commits, then both, in order."""
    pair = TwoTransitions(stack.session_factory)
    poller = Poller(stack.session_factory)
    bumped, release = threading.Event(), threading.Event()

    def first() -> None:
        with stack.session_factory.begin() as session:
            _pause_after_sequence_bump(session, bumped, release)
            pair.rename_agent(session)

    def second() -> None:
        with stack.session_factory.begin() as session:
            pair.cancel_case(session)

    t1 = pool.submit(first)
    assert bumped.wait(30)
    t2 = pool.submit(second)
    assert poller.poll() == []
    release.set()
    t1.result(30)
    t2.result(30)
    poller.poll()
    assert poller.seen == list(pair.ids())
    assert poller.seen[1] == poller.seen[0] + 1


def test_concurrent_writers_produce_a_dense_commit_ordered_sequence(stack: Stack, pool: ThreadPoolExecutor) -> None:
    """Many writers on four teams while a poller runs: the poller sees every id exactly once, with no gap."""
    sf = stack.session_factory
    teams = [make_team(sf) for _ in range(4)]
    poller = Poller(sf)
    start = poller.cursor
    stop = threading.Event()

    def poll_until_stopped() -> None:
        while not stop.is_set():
            poller.poll()

    reader = threading.Thread(target=poll_until_stopped)
    reader.start()

    def write(i: int) -> None:
        with sf.begin() as session:
            open_case(session, teams[i % len(teams)])

    try:
        list(pool.map(write, range(60)))
    finally:
        stop.set()
        reader.join(30)
    poller.poll()
    with sf() as session:
        end = last_event_id(session=session)
    assert poller.seen == list(range(start + 1, end + 1))
    assert end - start >= 60


def test_snapshot_is_the_case_as_the_api_shows_it(sf: sessionmaker[Session]) -> None:
    team = make_team(sf)
    with sf.begin() as session:
        case_id = open_case(session, team)
    with sf.begin() as session:
        case_service.cancel_case(session=session, case_id=case_id, reason="changed mind", actor="admin")
    with sf() as session:
        shown = case_service.to_public(case_service.get_case(session=session, case_id=case_id)).model_dump(mode="json")
    last = events_of(sf, case_id)[-1]
    assert last.type == "cancelled" and last.snapshot == shown
    assert shown["status"] == CaseStatus.CANCELLED
