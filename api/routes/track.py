"""The customer's view of their case, by the private tracking token they got when it was filed."""

from fastapi import APIRouter
from sqlalchemy.orm import Session

from api.deps import DatabaseDep, SettingsDep, TemporalClientDep
from api.errors import error_responses
from api.routes.cases import cancel_through_workflow, reopen_through_workflow
from api.schemas import TrackCancel, TrackedCase, TrackReopen
from api.security import RuledRoute, TrackedCaseId
from core import cases as case_service
from core.errors import CaseNotFound
from core.models import CaseStatus
from core.tracking import place_in_line, status_in_words

router = APIRouter(prefix="/track", tags=["customer tracking"], route_class=RuledRoute)

CUSTOMER = "customer"


def _tracked(session: Session, case_id: str) -> TrackedCase:
    try:
        case = case_service.get_case(session=session, case_id=case_id)
    except CaseNotFound:
        # A genuine token whose case is gone (e.g. the database was reset): the same answer as a forged one.
        raise CaseNotFound("no case has this tracking token") from None
    place = place_in_line(session=session, case=case)
    return TrackedCase(
        id=case.id,
        order_id=case.order_id,
        product_sku=case.product_sku,
        product_name=case.product_name,
        status=CaseStatus(case.status),
        status_text=status_in_words(case, place),
        place_in_line=place,
        resolution=case.resolution if case.status == CaseStatus.RESOLVED else None,
        filed_at=case.queued_at,
        resolved_at=case.resolved_at,
        cancelled_at=case.cancelled_at,
    )


@router.get("/{token}", response_model=TrackedCase, responses=error_responses(404, 422, 503))
async def track_case(case_id: TrackedCaseId, db: DatabaseDep) -> TrackedCase:
    """Your case: its status in words, your place in line while it waits, and the resolution once resolved."""
    return await db.read(lambda s: _tracked(s, case_id))


@router.post("/{token}/cancel", response_model=TrackedCase, responses=error_responses(400, 404, 409, 422, 503))
async def cancel_tracked_case(
    case_id: TrackedCaseId,
    db: DatabaseDep,
    client: TemporalClientDep,
    settings: SettingsDep,
    body: TrackCancel | None = None,
) -> TrackedCase:
    """Withdraw your return while it is not resolved (a 409 once it is)."""
    await db.read(lambda s: _tracked(s, case_id))  # the same 404 for a case that is gone
    await cancel_through_workflow(
        case_id, body.reason if body else None, CUSTOMER, db=db, client=client, settings=settings
    )
    return await db.read(lambda s: _tracked(s, case_id))


@router.post("/{token}/reopen", response_model=TrackedCase, responses=error_responses(400, 404, 409, 422, 503))
async def reopen_tracked_case(
    case_id: TrackedCaseId,
    db: DatabaseDep,
    client: TemporalClientDep,
    settings: SettingsDep,
    body: TrackReopen | None = None,
) -> TrackedCase:
    """Reopen your resolved return (the refund never came, say) within the reopen window; a 409 after it."""
    await db.read(lambda s: _tracked(s, case_id))  # the same 404 for a case that is gone
    await reopen_through_workflow(
        case_id, body.reason if body else None, CUSTOMER, db=db, client=client, settings=settings
    )
    return await db.read(lambda s: _tracked(s, case_id))
