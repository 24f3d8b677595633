"""Case activities: each one is one short database transaction, idempotent under retries."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.reporting import report_closed, report_confirmed, report_opened, report_reconciled
from core import cases as case_service
from core.dispatch import dispatch
from core.errors import DomainError, DuplicateOpenCase
from core.models import ReturnCase, Team
from workflows.messages import (
    CancelInput,
    CaseRecord,
    CloseResult,
    ConfirmAssignmentInput,
    OpenCaseInput,
    OpenCaseResult,
    ReconcileInput,
    ReconcileResult,
    ReopenInput,
    Reservation,
    ResolveInput,
    RoutingStepInput,
)


@contextmanager
def business_errors() -> Iterator[None]:
    """Turn domain refusals into non-retryable ApplicationErrors; anything else is transient and retried."""
    try:
        yield
    except DuplicateOpenCase as err:
        raise ApplicationError(err.message, err.existing_case_id, type=err.type, non_retryable=True) from err
    except DomainError as err:
        raise ApplicationError(err.message, type=err.type, non_retryable=True) from err


def _confirm_own_reservation(
    session: Session, case: ReturnCase, reservations: list[Reservation]
) -> tuple[ReturnCase, list[Reservation], Reservation | None]:
    """When the dispatch that queued a case reserved an agent for that very case, assign it in the same
    transaction (its workflow is the one running this step); the other reservations are still to signal."""
    own = next((r for r in reservations if r.case_id == case.id), None)
    if own is None:
        return case, reservations, None
    case = case_service.confirm_assignment(session=session, case_id=case.id, agent_id=own.agent_id, actor="workflow")
    return case, [r for r in reservations if r is not own], own


class CaseActivities:
    """Database activities of the case workflow and the reconciler."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    @activity.defn
    def open_case(self, data: OpenCaseInput) -> OpenCaseResult:
        """Insert the case row (idempotent by case id) and dispatch its team.

        When dispatch reserves an agent for this very case, the reservation is confirmed in the same
        transaction (the workflow asking is the one that would confirm it), so a filing that finds a free
        agent comes back `assigned` without a second activity; `reservations` then lists only other cases.
        """
        own: Reservation | None = None
        with business_errors(), self._session_factory.begin() as session:
            case, reservations = case_service.open_case(
                session=session,
                case_id=data.case_id,
                data=data.case,
                actor=data.actor,
                idempotency_key=data.idempotency_key,
            )
            case, reservations, own = _confirm_own_reservation(session, case, reservations)
            result = OpenCaseResult(case=case_service.to_record(case), reservations=reservations)
        report_opened(result.case, result.reservations)
        if own is not None:
            report_confirmed(result.case, own.agent_id)
        return result

    @activity.defn
    def confirm_assignment(self, data: ConfirmAssignmentInput) -> CaseRecord:
        """Turn a standing reservation into an assignment; return the case as the database has it."""
        with business_errors(), self._session_factory.begin() as session:
            case = case_service.confirm_assignment(
                session=session,
                case_id=data.case_id,
                agent_id=data.agent_id,
                actor="workflow",
                accept_offer=data.accept_offer,
            )
            confirmed = case_service.to_record(case)
        report_confirmed(confirmed, data.agent_id)
        return confirmed

    @activity.defn
    def resolve_case(self, data: ResolveInput) -> CloseResult:
        """Resolve, free the agent and dispatch the freed agent's team, in one transaction."""
        return self._close(
            case_service.resolve_case,
            case_id=data.case_id,
            agent_id=data.agent_id,
            resolution=data.resolution,
            actor=data.actor,
        )

    @activity.defn
    def cancel_case(self, data: CancelInput) -> CloseResult:
        """Cancel, free a holding agent and dispatch their team, in one transaction."""
        return self._close(case_service.cancel_case, case_id=data.case_id, reason=data.reason, actor=data.actor)

    @activity.defn
    def reopen_case(self, data: ReopenInput) -> OpenCaseResult:
        """Queue a resolved case again as `high` and dispatch its team (the first step of a reopened run)."""
        with business_errors(), self._session_factory.begin() as session:
            case, reservations = case_service.reopen_case(
                session=session,
                case_id=data.case_id,
                reason=data.request.reason,
                actor=data.request.actor,
                window_days=data.request.window_days,
            )
            case, reservations, own = _confirm_own_reservation(session, case, reservations)
            result = OpenCaseResult(case=case_service.to_record(case), reservations=reservations)
        report_opened(result.case, result.reservations)
        return result

    @activity.defn
    def routing_step(self, data: RoutingStepInput) -> CloseResult:
        """A routing timer fired (escalate, overdue, offer_missed) or the offered agent declined (decline)."""
        with business_errors(), self._session_factory.begin() as session:
            reservations: list[Reservation] = []
            if data.step == "escalate":
                case, reservations = case_service.escalate(session=session, case_id=data.case_id)
            elif data.step == "overdue":
                case = case_service.mark_overdue(session=session, case_id=data.case_id)
            elif data.step == "decline" and data.agent_id:
                case, reservations = case_service.decline_offer(
                    session=session, case_id=data.case_id, agent_id=data.agent_id
                )
            elif data.step == "offer_missed" and data.agent_id:
                case, reservations = case_service.miss_offer(
                    session=session, case_id=data.case_id, agent_id=data.agent_id
                )
            else:
                raise ApplicationError(f"unknown routing step {data.step!r}", type="Invalid", non_retryable=True)
            result = CloseResult(case=case_service.to_record(case), reservations=reservations)
        report_closed(result.case, result.reservations)
        return result

    def _close(self, close: Callable[..., tuple[Any, list[Reservation]]], **kwargs: Any) -> CloseResult:
        with business_errors(), self._session_factory.begin() as session:
            case, reservations = close(session=session, **kwargs)
            result = CloseResult(case=case_service.to_record(case), reservations=reservations)
        report_closed(result.case, result.reservations)
        return result

    @activity.defn
    def reconcile(self, data: ReconcileInput) -> ReconcileResult:
        """Dispatch every team and list reservations whose workflow has not confirmed them."""
        dispatched: list[Reservation] = []
        with self._session_factory() as session:
            teams = list(session.scalars(select(Team.name).order_by(Team.name)))
        for team in teams:
            # One transaction per team keeps each lock short.
            with self._session_factory.begin() as session:
                dispatched += dispatch(session=session, team=team, actor="reconciler")
        with self._session_factory() as session:
            stale = case_service.stale_reservations(
                session=session, unconfirmed_for=timedelta(seconds=data.resignal_after_seconds)
            )
        fresh = {r.case_id for r in dispatched}
        result = ReconcileResult(
            dispatched=dispatched,
            resignalled=[r for r in stale if r.case_id not in fresh],
            repaired=[],
        )
        report_reconciled(result)
        return result

    def all(self) -> list[Callable[..., Any]]:
        """Every activity, for worker registration (production and tests register the same list)."""
        return [
            self.open_case,
            self.confirm_assignment,
            self.resolve_case,
            self.cancel_case,
            self.reconcile,
            self.reopen_case,
            self.routing_step,
        ]
