"""The customer's pages: a return link (the order's products, Reason, Start return) and the tracking page,
which follows the case live. The link, and then the case's tracking token, are the only credentials."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from api.console.session import page
from api.deps import DatabaseDep, SettingsDep, TemporalClientDep
from api.errors import ServiceUnavailable
from api.routes.cases import _file_case
from api.routes.track import _tracked
from api.security import RouteRule
from core.config import Settings
from core.errors import DomainError, DuplicateOpenCase
from core.models import CaseStatus, utcnow
from core.return_links import LinkRefused, ReturnLink, read_return_link
from core.schemas import CaseCreate
from core.security import case_id_of_tracking_token, tracking_token

router = APIRouter(include_in_schema=False)

CUSTOMER = "customer"


class ReturnLinkRule(RouteRule):
    """The signed return link in the path is the credential, for that one order only."""

    refusals = (404,)

    def __call__(self, request: Request, link: Annotated[str, Path(max_length=4000)]) -> ReturnLink:
        settings: Settings = request.app.state.settings
        return read_return_link(secret_key=settings.SECRET_KEY, token=link, now=utcnow())

    def __repr__(self) -> str:
        return "ReturnLink()"


class TrackingPageRule(RouteRule):
    """The case's tracking token in the path is the credential, for that one case only."""

    refusals = (404,)

    def __call__(self, request: Request, token: Annotated[str, Path(max_length=200)]) -> str:
        settings: Settings = request.app.state.settings
        case_id = case_id_of_tracking_token(secret_key=settings.SECRET_KEY, token=token)
        if case_id is None:
            raise LinkRefused("This tracking link is not valid. Please use the link you were given.")
        return case_id

    def __repr__(self) -> str:
        return "TrackingPage()"


_link_rule = ReturnLinkRule()
_tracking_rule = TrackingPageRule()
LinkDep = Annotated[ReturnLink, Depends(_link_rule)]
TrackedPage = Annotated[str, Depends(_tracking_rule)]


@router.get("/returns/{link}", response_class=HTMLResponse)
async def return_link_page(request: Request, order: LinkDep) -> HTMLResponse:
    """The return link's page: the order's products, a Reason, and Start return."""
    return page(request, "return_link.html", order=order, error=None, reason="", chosen="")


@router.post("/returns/{link}", response_class=HTMLResponse)
async def start_return(
    request: Request,
    link: str,
    order: LinkDep,
    db: DatabaseDep,
    client: TemporalClientDep,
    settings: SettingsDep,
    product: Annotated[str, Form(max_length=100)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
    details: Annotated[str, Form(max_length=5000)] = "",
) -> Response:
    """Start a return for one product of the order; then its tracking page."""

    def again(error: str, status_code: int) -> HTMLResponse:
        return page(
            request,
            "return_link.html",
            status_code=status_code,
            order=order,
            error=error,
            reason=reason,
            chosen=product,
        )

    chosen = next((p for p in order.products if p.sku == product), None)
    if chosen is None:
        return again("Choose the product you are returning.", 422)
    if not reason.strip():
        return again("Tell us the reason for the return.", 422)
    if len(reason.strip()) > 500:
        return again("Please keep the reason under 500 characters (add more under Details).", 422)
    try:
        body = CaseCreate(
            customer_name=order.customer_name,
            customer_email=order.customer_email,
            order_id=order.order_id,
            product_sku=chosen.sku,
            product_name=chosen.name,
            reason=reason,
            description=details or None,
            team=order.team,
        )
    except ValidationError as err:
        return again(f"This return cannot be started: {err.errors()[0]['msg']}.", 422)
    try:
        case = await _file_case(body, Response(), db, client, settings, CUSTOMER, None)
    except DuplicateOpenCase as err:
        existing = tracking_token(secret_key=settings.SECRET_KEY, case_id=err.existing_case_id)
        return RedirectResponse(f"/track/{existing}", status_code=303)
    except DomainError as err:
        return again(f"This return cannot be started: {err.message}.", err.status_code)
    except ServiceUnavailable as err:
        return again(f"We cannot start your return right now ({err.message}). Please try again in a minute.", 503)
    token = tracking_token(secret_key=settings.SECRET_KEY, case_id=case.id)
    return RedirectResponse(f"/track/{token}", status_code=303)


@router.get("/track/{token}", response_class=HTMLResponse)
async def tracking_page(
    request: Request, case_id: TrackedPage, token: str, db: DatabaseDep, settings: SettingsDep
) -> HTMLResponse:
    """Your return: its status in words, updating live, with Cancel return until it is resolved and Reopen return
    for a while after."""
    try:
        tracked = await db.read(lambda s: _tracked(s, case_id))
    except DomainError:
        raise LinkRefused("This tracking link is not valid. Please use the link you were given.") from None
    window = timedelta(days=settings.REOPEN_WINDOW_DAYS)
    reopenable = tracked.resolved_at is not None and tracked.status == CaseStatus.RESOLVED
    reopenable = reopenable and tracked.resolved_at is not None and tracked.resolved_at + window >= utcnow()
    return page(
        request,
        "track.html",
        token=token,
        tracked=tracked,
        reopenable=reopenable,
        window_days=settings.REOPEN_WINDOW_DAYS,
    )
