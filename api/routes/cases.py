"""Cases: file, read, list, resolve, cancel, history."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.concurrency import run_in_threadpool
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

from api.deps import SessionDep, SettingsDep, TemporalClientDep
from api.errors import domain_error_from_update, error_responses, temporal_outage
from api.schemas import CaseFiled
from api.security import Allow, CurrentPrincipal, Principal, RuledRoute, forbidden
from core import cases as case_service
from core import search_attributes as sa
from core.config import Settings
from core.errors import CaseNotFound, DomainError, Forbidden, IdempotencyKeyReused, UnknownTeam
from core.ids import case_id_for_idempotency_key, new_id, workflow_id_for_case
from core.models import CaseStatus, ReturnCase, Team, utcnow
from core.rules import cancel_refusal, resolve_refusal
from core.schemas import (
    CancelCaseInput,
    CaseCancel,
    CaseCreate,
    CaseEventPublic,
    CaseHistory,
    CasePublic,
    CaseResolve,
    FileCaseInput,
    Page,
    ResolveCaseInput,
    ReturnCaseInput,
)
from core.security import tracking_token
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


async def _send_update(send: Callable[[], Awaitable[T]]) -> T:
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


def _summary(data: CaseCreate) -> str:
    return f"{data.customer_name}: order {data.order_id}, {data.product_name} ({data.product_sku})"[:200]


def _details(data: CaseCreate) -> str:
    return (
        f"**Customer** {data.customer_name}\n\n**Order** {data.order_id}\n\n"
        f"**Product** {data.product_name} (`{data.product_sku}`)\n\n**Reason** {data.reason}\n\n"
        f"**Team** {data.team}, priority {data.priority.value}"
    )


def _precheck_filing(session: Session, data: CaseCreate, case_id: str) -> None:
    """Refuse before any workflow starts: unknown team (422), order line already open (409)."""
    if session.get(Team, data.team) is None:
        raise UnknownTeam(f"team {data.team!r} does not exist")
    other = case_service.find_open_case_for_order_line(
        session=session, order_id=data.order_id, product_sku=data.product_sku
    )
    if other is not None and other.id != case_id:
        raise case_service.duplicate_open_case_error(other)


def _existing_for_key(session: Session, key: str, data: CaseCreate) -> CasePublic | None:
    existing = case_service.find_by_idempotency_key(session=session, key=key)
    if existing is None:
        return None
    if not case_service.matches_request(existing, data):
        raise IdempotencyKeyReused(f"Idempotency-Key was already used for case {existing.id} with different details")
    return case_service.to_public(existing)


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
    session: SessionDep,
    client: TemporalClientDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey = None,
) -> CaseFiled:
    """File a return case; it comes back `assigned` when an agent was free, else `queued`, with the customer's
    private `tracking_url`."""
    return _filed(
        await _file_case(body, response, session, client, settings, principal.actor, idempotency_key), settings
    )


async def _file_case(
    body: CaseCreate,
    response: Response,
    session: Session,
    client: Client,
    settings: Settings,
    actor: str,
    idempotency_key: str | None,
) -> CasePublic:
    if idempotency_key is not None:
        existing = await run_in_threadpool(_existing_for_key, session, idempotency_key, body)
        if existing is not None:
            response.status_code = status.HTTP_200_OK
            return existing
        case_id = case_id_for_idempotency_key(idempotency_key)
    else:
        case_id = new_id("c")
    await run_in_threadpool(_precheck_filing, session, body, case_id)
    session.close()  # release the connection before the long Temporal round trip

    workflow_id = workflow_id_for_case(case_id)
    filed_at = utcnow()

    def start() -> WithStartWorkflowOperation[ReturnCaseWorkflow, CasePublic | None]:
        """The workflow start sent with the `file` update (a fresh one per attempt: the SDK never reuses one)."""
        return WithStartWorkflowOperation(
            ReturnCaseWorkflow.run,
            ReturnCaseInput(
                case_id=case_id, case=body, filed_at=filed_at, actor=actor, idempotency_key=idempotency_key
            ),
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
                FileCaseInput(case=body, idempotency_key=idempotency_key),
                start_workflow_operation=start(),
                id=f"file-{uuid.uuid4()}",
                rpc_timeout=_rpc_timeout(settings),
            )
        )
    except WorkflowUpdateFailedError as err:
        raise domain_error_from_update(err) from None
    except WorkflowAlreadyStartedError:
        # The workflow for this key ran and closed: the case exists, or the filing was refused.
        existing = await run_in_threadpool(_existing_for_key, session, idempotency_key or "", body)
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
    return result.case


@router.get(
    "",
    response_model=Page[CasePublic],
    dependencies=[Allow(admin=True, agent=True, scopes={"cases:read"})],
    responses=error_responses(422, 503),
)
def read_cases(
    session: SessionDep,
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
    rows, next_cursor = case_service.list_cases(
        session=session,
        status=status,
        agent_id=agent_id,
        team=team,
        customer_email=customer_email,
        cursor=cursor,
        limit=limit,
        visible_to=(str(principal.team), str(principal.agent_id)) if principal.role == "agent" else None,
    )
    return Page[CasePublic](items=[case_service.to_public(r) for r in rows], next_cursor=next_cursor)


READ_CASE = Allow(admin=True, agent=True, scopes={"cases:read"})


@router.get("/{case_id}", response_model=CasePublic, dependencies=[READ_CASE], responses=error_responses(404, 422, 503))
def read_case(case_id: str, session: SessionDep, principal: CurrentPrincipal) -> CasePublic:
    """One case (an agent: of their team, or the one they hold)."""
    return case_service.to_public(_read_visible_case(session, case_id, principal))


@router.get(
    "/{case_id}/history", response_model=CaseHistory, dependencies=[READ_CASE], responses=error_responses(404, 422, 503)
)
def read_case_history(
    case_id: str, session: SessionDep, settings: SettingsDep, principal: CurrentPrincipal
) -> CaseHistory:
    """Every transition of the case, oldest first, with who did it and a link to its workflow in the Temporal UI."""
    _read_visible_case(session, case_id, principal)
    events = case_service.case_history(session=session, case_id=case_id)
    workflow_id = workflow_id_for_case(case_id)
    return CaseHistory(
        case_id=case_id,
        workflow_id=workflow_id,
        temporal_ui_url=f"{settings.TEMPORAL_UI_URL}/namespaces/{settings.TEMPORAL_NAMESPACE}/workflows/{workflow_id}",
        events=[CaseEventPublic.model_validate(e) for e in events],
    )


@router.post(
    "/{case_id}/resolve",
    response_model=CasePublic,
    dependencies=[Allow(agent=True, refusal="only the agent who holds the case can resolve it")],
    responses=error_responses(400, 404, 409, 422, 503),
)
async def resolve_case(
    case_id: str,
    session: SessionDep,
    client: TemporalClientDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    body: CaseResolve | None = None,
) -> CasePublic:
    """Resolve the case you hold (403 for a case you do not hold, 409 when yours cannot be resolved now). You are
    freed and take the next waiting case."""
    agent_id = str(principal.agent_id)
    case = await run_in_threadpool(_read_visible_case, session, case_id, principal)
    if case.agent_id != agent_id:
        raise Forbidden(f"case {case_id} is not yours: only the agent who holds it can resolve it")
    resolution = body.resolution if body else None
    return await _update_case(
        case_id,
        session,
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
    session: SessionDep,
    client: TemporalClientDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    body: CaseCancel | None = None,
) -> CasePublic:
    """Cancel the case wherever it stands; a holding agent is freed and takes the next waiting case."""
    return await cancel_through_workflow(
        case_id, body.reason if body else None, principal.actor, session=session, client=client, settings=settings
    )


async def cancel_through_workflow(
    case_id: str, reason: str | None, actor: str, *, session: Session, client: Client, settings: Settings
) -> CasePublic:
    """Cancel by the case workflow's update, recording `actor`; answered from the record once the workflow closed."""
    return await _update_case(
        case_id,
        session,
        client,
        settings,
        send=lambda handle: handle.execute_update(
            ReturnCaseWorkflow.cancel,
            CancelCaseInput(reason=reason, actor=actor),
            rpc_timeout=_rpc_timeout(settings),
        ),
        refusal=cancel_refusal,
    )


async def _update_case(
    case_id: str,
    session: Session,
    client: Client,
    settings: Settings,
    *,
    send: Callable[[WorkflowHandle[ReturnCaseWorkflow, CasePublic | None]], Awaitable[CasePublic]],
    refusal: Callable[[CasePublic], DomainError | None],
) -> CasePublic:
    """Send an update to the case's workflow; once the workflow has closed, answer a repeat from the record
    and refuse anything else by the same rule."""
    await run_in_threadpool(_read_case, session, case_id)  # 404 for an unknown case
    session.close()
    handle = client.get_workflow_handle_for(ReturnCaseWorkflow.run, workflow_id_for_case(case_id))
    try:
        return await _send_update(lambda: send(handle))
    except WorkflowUpdateFailedError as err:
        raise domain_error_from_update(err) from None
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise temporal_outage(err, settings.TEMPORAL_RPC_TIMEOUT_SECONDS, case_id) from err
    except WorkflowUpdateRPCTimeoutOrCancelledError as err:
        raise temporal_outage(err, settings.TEMPORAL_RPC_TIMEOUT_SECONDS, case_id) from err
    case = await run_in_threadpool(_read_case, session, case_id)
    _raise_if_refused(refusal(case))
    return case


def _raise_if_refused(refusal: DomainError | None) -> None:
    if refusal is not None:
        raise refusal
