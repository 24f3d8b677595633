"""Cases: file, read, list, resolve, cancel, history."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy.orm import Session
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import Database, DatabaseDep, SettingsDep, TemporalClientDep
from api.errors import domain_error_from_update, error_responses, temporal_outage
from api.schemas import CaseFiled
from api.security import Allow, CurrentPrincipal, Principal, RuledRoute, forbidden
from core import cases as case_service
from core import search_attributes as sa
from core.config import Settings
from core.errors import CannotReopen, CaseNotFound, DomainError, Forbidden, IdempotencyKeyReused, NotAnOffer
from core.ids import case_id_for_idempotency_key, new_id, workflow_id_for_case
from core.models import TERMINAL_STATUSES, CaseStatus, ReturnCase, Team
from core.rules import cancel_refusal, resolve_refusal, routing_timer
from core.schemas import (
    CaseCancel,
    CaseCreate,
    CaseEventPublic,
    CaseHistory,
    CasePublic,
    CaseReopen,
    CaseResolve,
    CaseTimer,
    CaseTransfer,
    Page,
)
from core.security import tracking_token
from workflows.delivery import CASE_MOVED, Delivery, deliveries, signal_from_client
from workflows.messages import (
    CancelCaseInput,
    CaseDraft,
    CaseRecord,
    CaseRequeuedInput,
    FileCaseInput,
    OfferReplyInput,
    ReopenRequest,
    ResolveCaseInput,
    ReturnCaseInput,
)
from workflows.return_case import ReturnCaseWorkflow

router = APIRouter(prefix="/cases", tags=["cases"], route_class=RuledRoute)

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255, description="Repeat-safe filing key")
]
StatusFilter = Annotated[
    str | None,
    Query(pattern="^(active|queued|reserved|assigned|resolved|cancelled)$", description="`active` or one state"),
]
Limit = Annotated[int, Query(ge=1, le=200)]


def _rpc_timeout(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.TEMPORAL_RPC_TIMEOUT_SECONDS)


T = TypeVar("T")
# Temporal aborts an update whose workflow task failed on the server (routinely: UnhandledCommand, when
# a signal lands while the workflow completes) with FAILED_PRECONDITION "WorkflowNotReady"; the next
# workflow task takes a new update. Ours are all idempotent, so they are sent again before any 503.
ABORTED_UPDATE_RETRY_DELAYS = (0.1, 0.3, 1.0)
# A reopen that reaches the previous run, still ending, tries again this many times (0.2 s, 0.4 s, ... apart).
REOPEN_ATTEMPTS = 5


async def _send_update[T](send: Callable[[], Awaitable[T]]) -> T:
    """Send an update, again if Temporal aborted it because the workflow task failed."""
    for delay in ABORTED_UPDATE_RETRY_DELAYS:
        try:
            return await send()
        except RPCError as err:
            if err.status != RPCStatusCode.FAILED_PRECONDITION:
                raise
            await asyncio.sleep(delay)
    return await send()


def _read_case(session: Session, case_id: str) -> CasePublic:
    return case_service.to_public(case_service.get_case(session=session, case_id=case_id))


def _public(record: CaseRecord) -> CasePublic:
    """A case a workflow returned, as the API shows it."""
    return CasePublic.model_validate(record.model_dump())


def visible_to(principal: Principal, case: ReturnCase | CasePublic) -> bool:
    """An agent sees their team's cases and the case they hold (which stays theirs if they change team)."""
    return principal.role != "agent" or case.team == principal.team or case.agent_id == principal.agent_id


def _read_visible_case(session: Session, case_id: str, principal: Principal) -> ReturnCase:
    """The case, or the same 404 as for an unknown id when the principal may not see it (nothing leaks)."""
    case = case_service.get_case(session=session, case_id=case_id)
    if not visible_to(principal, case):
        raise CaseNotFound(f"case {case_id} not found")
    return case


def _filed(case: CasePublic, settings: Settings) -> CaseFiled:
    token = tracking_token(secret_key=settings.SECRET_KEY, case_id=case.id)
    return CaseFiled(
        **case.model_dump(), tracking_token=token, tracking_url=f"{settings.PUBLIC_URL}/api/v1/track/{token}"
    )


def _summary(data: CaseCreate | CasePublic) -> str:
    return f"{data.customer_name}: order {data.order_id}, {data.product_name} ({data.product_sku})"[:200]


def _details(data: CaseCreate | CasePublic) -> str:
    return (
        f"**Customer** {data.customer_name}\n\n**Order** {data.order_id}\n\n"
        f"**Product** {data.product_name} (`{data.product_sku}`)\n\n**Reason** {data.reason}\n\n"
        f"**Team** {data.team}, priority {data.priority.value}"
    )


async def _existing_filing(db: Database, case_id: str, data: CaseCreate, key: str | None) -> CasePublic | None:
    """The filing rules before any workflow starts (core/cases.py `check_filing`): the case this request
    repeats, if any; a reused key (409), an unknown team (422) or an open order line (409) are refused."""

    def check(session: Session) -> CasePublic | None:
        existing = case_service.check_filing(session=session, case_id=case_id, data=data, idempotency_key=key)
        return None if existing is None else case_service.to_public(existing)

    return await db.read(check)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CaseFiled,
    dependencies=[Allow(admin=True, scopes={"cases:file"})],
    responses={
        200: {"model": CaseFiled, "description": "A repeat of an earlier filing (same Idempotency-Key)"},
        **error_responses(400, 409, 422, 503),
    },
)
async def create_case(
    body: CaseCreate,
    response: Response,
    db: DatabaseDep,
    client: TemporalClientDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey = None,
) -> CaseFiled:
    """File a return case; it comes back `assigned` when an agent was free, else `queued`, with the customer's
    private `tracking_url`."""
    return _filed(await _file_case(body, response, db, client, settings, principal.actor, idempotency_key), settings)


async def _file_case(
    body: CaseCreate,
    response: Response,
    db: Database,
    client: Client,
    settings: Settings,
    actor: str,
    idempotency_key: str | None,
) -> CasePublic:
    """File a return case; it comes back `assigned` when an agent was free, else `queued`."""
    case_id = new_id("c") if idempotency_key is None else case_id_for_idempotency_key(idempotency_key)
    existing = await _existing_filing(db, case_id, body, idempotency_key)
    if existing is not None:
        response.status_code = status.HTTP_200_OK
        return existing
    workflow_id = workflow_id_for_case(case_id)
    draft = CaseDraft.model_validate(body.model_dump())

    def start() -> WithStartWorkflowOperation[ReturnCaseWorkflow, CaseRecord | None]:
        """The workflow start sent with the `file` update (a fresh one per attempt: the SDK never reuses one)."""
        return WithStartWorkflowOperation(
            ReturnCaseWorkflow.run,
            ReturnCaseInput(case_id=case_id, case=draft, actor=actor, idempotency_key=idempotency_key),
            id=workflow_id,
            task_queue=settings.TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.CASE_STATUS, CaseStatus.QUEUED.value),
                    SearchAttributePair(sa.TEAM, body.team),
                    SearchAttributePair(sa.CASE_PRIORITY, body.priority.value),
                    SearchAttributePair(sa.CUSTOMER_EMAIL, body.customer_email),
                    SearchAttributePair(sa.ORDER_ID, body.order_id),
                ]
            ),
            static_summary=_summary(body),
            static_details=_details(body),
        )

    try:
        result = await _send_update(
            lambda: client.execute_update_with_start_workflow(
                ReturnCaseWorkflow.file,
                FileCaseInput(case=draft, idempotency_key=idempotency_key),
                start_workflow_operation=start(),
                id=f"file-{uuid.uuid4()}",
                rpc_timeout=_rpc_timeout(settings),
            )
        )
    except WorkflowUpdateFailedError as err:
        raise domain_error_from_update(err) from None
    except WorkflowAlreadyStartedError:
        # The workflow for this key ran and closed: the case exists, or the filing was refused.
        existing = await _existing_filing(db, case_id, body, idempotency_key)
        if existing is None:
            raise IdempotencyKeyReused(
                "this Idempotency-Key belongs to a filing that was refused; use a new key"
            ) from None
        response.status_code = status.HTTP_200_OK
        return existing
    except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as err:
        raise temporal_outage(err, settings.TEMPORAL_RPC_TIMEOUT_SECONDS, case_id) from err
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return _public(result.case)


@router.get(
    "",
    response_model=Page[CasePublic],
    dependencies=[Allow(admin=True, agent=True, scopes={"cases:read"})],
    responses=error_responses(422, 503),
)
async def read_cases(
    db: DatabaseDep,
    principal: CurrentPrincipal,
    status: StatusFilter = None,
    agent_id: Annotated[str | None, Query(max_length=32)] = None,
    team: Annotated[str | None, Query(max_length=64)] = None,
    customer_email: Annotated[str | None, Query(max_length=320)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Limit = 50,
) -> Page[CasePublic]:
    """List cases oldest first, filtered by status (`active` = not terminal), agent, team or customer. An agent
    sees their own team's cases (and the case they hold); naming another team is a 403."""
    if principal.role == "agent" and team is not None and team != principal.team:
        raise forbidden(f"agents see only the cases of their own team ({principal.team})")
    rows, next_cursor = await db.read(
        lambda s: case_service.list_cases(
            session=s,
            status=status,
            agent_id=agent_id,
            team=team,
            customer_email=customer_email,
            cursor=cursor,
            limit=limit,
            visible_to=(str(principal.team), str(principal.agent_id)) if principal.role == "agent" else None,
        )
    )
    return Page[CasePublic](items=[case_service.to_public(r) for r in rows], next_cursor=next_cursor)


READ_CASE = Allow(admin=True, agent=True, scopes={"cases:read"})


@router.get("/{case_id}", response_model=CasePublic, dependencies=[READ_CASE], responses=error_responses(404, 422, 503))
async def read_case(case_id: str, db: DatabaseDep, principal: CurrentPrincipal) -> CasePublic:
    """One case (an agent: of their team, or the one they hold)."""
    return await db.read(lambda s: case_service.to_public(_read_visible_case(s, case_id, principal)))


@router.get(
    "/{case_id}/history", response_model=CaseHistory, dependencies=[READ_CASE], responses=error_responses(404, 422, 503)
)
async def read_case_history(
    case_id: str, db: DatabaseDep, settings: SettingsDep, principal: CurrentPrincipal
) -> CaseHistory:
    """Every transition of the case, oldest first, with who did it and a link to its workflow in the Temporal UI; and
    the routing timer it runs now, if any (a fired timer's outcome is an event)."""

    def read(session: Session) -> tuple[list[CaseEventPublic], CaseTimer | None]:
        case = _read_visible_case(session, case_id, principal)
        events = [
            CaseEventPublic.model_validate(e) for e in case_service.case_history(session=session, case_id=case_id)
        ]
        team = session.get(Team, case.team)
        timer = routing_timer(case, team)
        return events, CaseTimer(step=timer.step, due_at=timer.due_at, summary=timer.summary) if timer else None

    events, timer = await db.read(read)
    workflow_id = workflow_id_for_case(case_id)
    return CaseHistory(
        case_id=case_id,
        workflow_id=workflow_id,
        temporal_ui_url=f"{settings.TEMPORAL_UI_URL}/namespaces/{settings.TEMPORAL_NAMESPACE}/workflows/{workflow_id}",
        events=events,
        running_timer=timer,
    )


@router.post(
    "/{case_id}/resolve",
    response_model=CasePublic,
    dependencies=[Allow(agent=True, refusal="only the agent who holds the case can resolve it")],
    responses=error_responses(400, 404, 409, 422, 503),
)
async def resolve_case(
    case_id: str,
    db: DatabaseDep,
    client: TemporalClientDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    body: CaseResolve | None = None,
) -> CasePublic:
    """Resolve the case you hold (403 for a case you do not hold, 409 when yours cannot be resolved now). You are
    freed and take the next waiting case."""
    agent_id = str(principal.agent_id)
    case = await db.read(lambda s: _read_visible_case(s, case_id, principal))
    if case.agent_id != agent_id:
        raise Forbidden(f"case {case_id} is not yours: only the agent who holds it can resolve it")
    resolution = body.resolution if body else None
    return await _update_case(
        case_id,
        db,
        client,
        settings,
        send=lambda handle: handle.execute_update(
            ReturnCaseWorkflow.resolve,
            ResolveCaseInput(agent_id=agent_id, resolution=resolution),
            rpc_timeout=_rpc_timeout(settings),
        ),
        refusal=lambda case: resolve_refusal(case, agent_id),
    )


@router.post(
    "/{case_id}/cancel",
    response_model=CasePublic,
    dependencies=[Allow(admin=True, scopes={"cases:cancel"})],
    responses=error_responses(400, 404, 409, 422, 503),
)
async def cancel_case(
    case_id: str,
    db: DatabaseDep,
    client: TemporalClientDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    body: CaseCancel | None = None,
) -> CasePublic:
    """Cancel the case wherever it stands; a holding agent is freed and takes the next waiting case."""
    await db.read(lambda s: _read_case(s, case_id))  # 404 for an unknown case
    return await cancel_through_workflow(
        case_id, body.reason if body else None, principal.actor, db=db, client=client, settings=settings
    )


async def cancel_through_workflow(
    case_id: str, reason: str | None, actor: str, *, db: Database, client: Client, settings: Settings
) -> CasePublic:
    """Cancel a case (the caller has read it) by its workflow's update, recording `actor`; answered from the record
    once the workflow closed."""
    return await _update_case(
        case_id,
        db,
        client,
        settings,
        send=lambda handle: handle.execute_update(
            ReturnCaseWorkflow.cancel,
            CancelCaseInput(reason=reason, actor=actor),
            rpc_timeout=_rpc_timeout(settings),
        ),
        refusal=cancel_refusal,
    )


@router.post(
    "/{case_id}/accept",
    response_model=CasePublic,
    dependencies=[Allow(agent=True, refusal="only the agent the case is offered to can accept it")],
    responses=error_responses(400, 404, 409, 422, 503),
)
async def accept_offer(
    case_id: str, db: DatabaseDep, client: TemporalClientDep, settings: SettingsDep, principal: CurrentPrincipal
) -> CasePublic:
    """Accept the case offered to you (its team has `offer_timeout_seconds`): it becomes assigned to you (409 once
    the offer has expired, been declined or been taken back)."""
    agent_id = await _offered_agent(db, case_id, principal)
    return await _update_case(
        case_id,
        db,
        client,
        settings,
        send=lambda handle: handle.execute_update(
            ReturnCaseWorkflow.accept, OfferReplyInput(agent_id=agent_id), rpc_timeout=_rpc_timeout(settings)
        ),
        refusal=lambda case: (
            None
            if case.status == CaseStatus.ASSIGNED and case.agent_id == agent_id
            else NotAnOffer(f"case {case_id} is {case.status.value}, not offered to you")
        ),
    )


@router.post(
    "/{case_id}/decline",
    response_model=CasePublic,
    dependencies=[Allow(agent=True, refusal="only the agent the case is offered to can decline it")],
    responses=error_responses(400, 404, 409, 422, 503),
)
async def decline_offer(
    case_id: str, db: DatabaseDep, client: TemporalClientDep, settings: SettingsDep, principal: CurrentPrincipal
) -> CasePublic:
    """Decline the case offered to you: it goes to the next agent in line (not back to you while another agent is
    free) and you go to the back of the idle order."""
    agent_id = await _offered_agent(db, case_id, principal)
    return await _update_case(
        case_id,
        db,
        client,
        settings,
        send=lambda handle: handle.execute_update(
            ReturnCaseWorkflow.decline, OfferReplyInput(agent_id=agent_id), rpc_timeout=_rpc_timeout(settings)
        ),
        refusal=lambda case: NotAnOffer(f"case {case_id} is {case.status.value}, not offered to you"),
    )


async def _offered_agent(db: Database, case_id: str, principal: Principal) -> str:
    """The signed-in agent, who must hold the case (403 otherwise; another team's case is a 404)."""
    agent_id = str(principal.agent_id)
    case = await db.read(lambda s: _read_visible_case(s, case_id, principal))
    if case.agent_id != agent_id:
        raise Forbidden(f"case {case_id} is not offered to you")
    return agent_id


@router.post(
    "/{case_id}/transfer",
    response_model=CasePublic,
    dependencies=[Allow(admin=True, agent=True, refusal="only the case's assignee or an admin can transfer it")],
    responses=error_responses(400, 404, 409, 422, 503),
)
async def transfer_case(
    case_id: str, body: CaseTransfer, db: DatabaseDep, client: TemporalClientDep, principal: CurrentPrincipal
) -> CasePublic:
    """Move the case to another team's queue (`{team, note}`), keeping its place (original `queued_at`); its agent
    is freed and takes their next case at once. The assignee or an admin."""
    by_agent: str | None = None
    if principal.role == "agent":
        held = await db.read(lambda s: _read_visible_case(s, case_id, principal))
        if held.agent_id != principal.agent_id:
            raise Forbidden(f"case {case_id} is not yours: only its assignee or an admin can transfer it")
        by_agent = principal.agent_id

    def write(session: Session) -> tuple[CasePublic, list[Delivery]]:
        moved = case_service.transfer_case(
            session=session, case_id=case_id, team=body.team, note=body.note, actor=principal.actor, by_agent=by_agent
        )
        return case_service.to_public(moved.case), deliveries(moved.reservations)

    case, signals = await db.write(write)
    # The case's workflow reads its case back (new team, queue, timers); then every reservation dispatch made.
    moved_signal = Delivery(case_id, "", CASE_MOVED, CaseRequeuedInput(agent_id="", actor=principal.actor))
    await signal_from_client(client, [moved_signal, *signals])
    return case


@router.post(
    "/{case_id}/reopen",
    response_model=CasePublic,
    dependencies=[Allow(admin=True)],
    responses=error_responses(400, 404, 409, 422, 503),
)
async def reopen_case(
    case_id: str,
    db: DatabaseDep,
    client: TemporalClientDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    body: CaseReopen | None = None,
) -> CasePublic:
    """Reopen a resolved case within `REOPEN_WINDOW_DAYS`: queued again as `high`, same id and history, a new run of
    its workflow (409 outside the window, or when the order line has another open case)."""
    return await reopen_through_workflow(
        case_id, body.reason if body else None, principal.actor, db=db, client=client, settings=settings
    )


async def reopen_through_workflow(
    case_id: str, reason: str | None, actor: str, *, db: Database, client: Client, settings: Settings
) -> CasePublic:
    """Reopen a resolved case: check the rules, then start a new run of its workflow (same id) that queues it."""

    def check(session: Session) -> CasePublic:
        case = case_service.get_case(session=session, case_id=case_id)
        if case.status in TERMINAL_STATUSES:
            case_service.reopen_check(session=session, case=case, window_days=settings.REOPEN_WINDOW_DAYS)
        return case_service.to_public(case)

    case = await db.read(check)
    if case.status not in TERMINAL_STATUSES:
        if case.reopened_at is None:
            raise CannotReopen(f"case {case_id} is {case.status.value}; only a resolved case can be reopened")
        return case  # a repeat of a reopen that already ran
    draft = CaseDraft.model_validate(case.model_dump())

    def start() -> WithStartWorkflowOperation[ReturnCaseWorkflow, CaseRecord | None]:
        """The start of the new run, sent with the update (a fresh one per attempt: the SDK never reuses one)."""
        return WithStartWorkflowOperation(
            ReturnCaseWorkflow.run,
            ReturnCaseInput(
                case_id=case_id,
                case=draft,
                actor=actor,
                reopen=ReopenRequest(reason=reason, actor=actor, window_days=settings.REOPEN_WINDOW_DAYS),
            ),
            id=workflow_id_for_case(case_id),
            task_queue=settings.TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.CASE_STATUS, CaseStatus.QUEUED.value),
                    SearchAttributePair(sa.TEAM, case.team),
                    SearchAttributePair(sa.CASE_PRIORITY, "high"),
                    SearchAttributePair(sa.CUSTOMER_EMAIL, case.customer_email),
                    SearchAttributePair(sa.ORDER_ID, case.order_id),
                ]
            ),
            static_summary=_summary(case),
            static_details=_details(case),
        )

    for attempt in range(REOPEN_ATTEMPTS):
        try:
            result = await client.execute_update_with_start_workflow(
                ReturnCaseWorkflow.file,
                FileCaseInput(case=draft),
                start_workflow_operation=start(),
                id=f"reopen-{uuid.uuid4()}",
                rpc_timeout=_rpc_timeout(settings),
            )
        except WorkflowUpdateFailedError as err:
            raise domain_error_from_update(err) from None
        except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as err:
            raise temporal_outage(err, settings.TEMPORAL_RPC_TIMEOUT_SECONDS, case_id) from err
        if result.case.status not in TERMINAL_STATUSES:
            return _public(result.case)
        # The run that resolved the case had not finished yet (it ends right after its last update): the update
        # reached it, not a new run. Give it a moment to end, then start the new run.
        await asyncio.sleep(0.2 * (attempt + 1))
    raise CannotReopen(f"case {case_id} is still closing its previous run; reopen it again in a moment")


async def _update_case(
    case_id: str,
    db: Database,
    client: Client,
    settings: Settings,
    *,
    send: Callable[[WorkflowHandle[ReturnCaseWorkflow, CaseRecord | None]], Awaitable[CaseRecord]],
    refusal: Callable[[CasePublic], DomainError | None],
) -> CasePublic:
    """Send an update to the workflow of a case the caller has read; once the workflow has closed, answer a repeat
    from the record and refuse anything else by the same rule."""
    handle = client.get_workflow_handle_for(ReturnCaseWorkflow.run, workflow_id_for_case(case_id))
    try:
        return _public(await _send_update(lambda: send(handle)))
    except WorkflowUpdateFailedError as err:
        raise domain_error_from_update(err) from None
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise temporal_outage(err, settings.TEMPORAL_RPC_TIMEOUT_SECONDS, case_id) from err
    except WorkflowUpdateRPCTimeoutOrCancelledError as err:
        raise temporal_outage(err, settings.TEMPORAL_RPC_TIMEOUT_SECONDS, case_id) from err
    case = await db.read(lambda s: _read_case(s, case_id))
    _raise_if_refused(refusal(case))
    return case


def _raise_if_refused(refusal: DomainError | None) -> None:
    if refusal is not None:
        raise refusal
