"""The console's pages for people: sign-in, the agent's home, the admin's pages. Pages read the database
directly; the changes they make go through the JSON API (with the session cookie and its CSRF token)."""

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi import Path as FastApiPath
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from api.console.session import ConsolePage, end_session, page, set_session, templates
from api.deps import DatabaseDep, SettingsDep
from api.routes.auth import WRONG_CREDENTIALS, _note_failure, _wait_before_trying
from api.security import SESSION_COOKIE, Principal, Public, RuledRoute, client_address, csrf_matches
from core import cases as case_service
from core.agents import get_agent, list_agents
from core.api_keys import SCOPES, list_api_keys
from core.clock import db_now
from core.console import search_cases, waiting_last_hour
from core.errors import CaseNotFound, DomainError
from core.events import EVENT_TYPES
from core.ids import workflow_id_for_case
from core.models import CaseStatus, ReturnCase, UserRole
from core.security import issue_access_token, verify_password
from core.teams import list_teams, queue_figures
from core.users import clear_account_failures, find_login, normalize_email
from core.webhooks import list_deliveries, list_endpoints

router = APIRouter(route_class=RuledRoute, include_in_schema=False)
log = logging.getLogger("returns.api.console")

ADMIN_PAGE = ConsolePage(admin=True)
AGENT_PAGE = ConsolePage(agent=True)
ANY_PAGE = ConsolePage(admin=True, agent=True)
AdminPrincipal = Annotated[Principal, ADMIN_PAGE]
AgentPrincipal = Annotated[Principal, AGENT_PAGE]
AnyPrincipal = Annotated[Principal, ANY_PAGE]
# A console session lasts a working day (it ends earlier on sign-out, removal or a new password).
SESSION_MINUTES = 12 * 60


def waited(seconds: float | None) -> str:
    """A duration in words: "45 s", "3 min", "2 h 5 min"."""
    if seconds is None:
        return "–"
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def clock(at: datetime | None) -> str:
    """A time as people read it (UTC)."""
    return "–" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


templates.env.filters["waited"] = waited
templates.env.filters["clock"] = clock


def home_of(role: str) -> str:
    """Where a person lands after sign-in."""
    return "/console/admin" if role == UserRole.ADMIN else "/console/agent"


def _safe_next(next_path: str | None) -> str | None:
    if not next_path or not next_path.startswith("/console") or urlsplit(next_path).netloc:
        return None
    return next_path


# --- sign-in -------------------------------------------------------------------------------------------------


@router.get("/", dependencies=[Public("the console's front door: it sends you to sign in")])
async def front_door() -> RedirectResponse:
    """The console's front door."""
    return RedirectResponse("/console", status_code=303)


@router.get("/login", response_class=HTMLResponse, dependencies=[Public("the sign-in page")])
async def login_page(request: Request, next: Annotated[str | None, Query(max_length=500)] = None) -> HTMLResponse:
    """The sign-in form (Email, Password, Sign in)."""
    return page(request, "login.html", next=_safe_next(next) or "", error=None, email="")


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


@router.post("/login", response_class=HTMLResponse, dependencies=[Public("signing in is how a person gets a session")])
async def login(
    request: Request,
    settings: SettingsDep,
    db: DatabaseDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Sign in: the session cookie, then the home of your role; the wrong password stays here with an error."""

    def again(error: str, status_code: int) -> HTMLResponse:
        return page(
            request, "login.html", status_code=status_code, next=_safe_next(next) or "", error=error, email=email
        )

    if not _same_origin(request):
        return again("This sign-in did not come from this site. Please sign in here.", 403)
    if not email.strip() or not password:
        return again("Give your email and your password.", 422)
    login_email, address = normalize_email(email), client_address(request)
    try:
        await _wait_before_trying(db, settings, login_email, address)
    except HTTPException as err:
        return again(f"Too many failed sign-ins: {err.detail}.", 429)
    user = await db.read(lambda s: find_login(session=s, email=login_email))
    verified = await run_in_threadpool(verify_password, password, user.password_hash if user else None)
    if not verified or user is None:
        await _note_failure(db, login_email, address)
        log.info("failed console sign-in (client %s)", address)
        return again(f"Sign-in failed: {WRONG_CREDENTIALS}.", 401)
    await db.write(lambda s: clear_account_failures(session=s, email=login_email))
    token = issue_access_token(
        secret_key=settings.SECRET_KEY,
        user_id=user.id,
        role=user.role,
        version=user.token_version,
        minutes=SESSION_MINUTES,
    )
    response = RedirectResponse(_safe_next(next) or home_of(user.role), status_code=303)
    set_session(response, request, token, SESSION_MINUTES * 60)
    return response


@router.post("/logout", dependencies=[Public("signing out needs no valid session, only this site's form")])
async def logout(request: Request, settings: SettingsDep, csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """Sign out: the session cookie is forgotten."""
    token = request.cookies.get(SESSION_COOKIE)
    if token and not csrf_matches(settings.SECRET_KEY, token, csrf):
        return RedirectResponse("/console", status_code=303)
    response = RedirectResponse("/login", status_code=303)
    end_session(response, request)
    return response


@router.get("/console", dependencies=[ANY_PAGE])
async def console_home(principal: AnyPrincipal) -> RedirectResponse:
    """Your home: the admin's or the agent's."""
    return RedirectResponse(home_of(principal.role), status_code=303)


# --- the agent -----------------------------------------------------------------------------------------------


def _agent_view(session: Session, principal: Principal) -> dict[str, Any]:
    assert principal.agent_id is not None
    agent = get_agent(session=session, agent_id=principal.agent_id)
    now = db_now(session)
    case = None
    history: list[Any] = []
    if agent.current_case_id is not None:
        case = case_service.get_case(session=session, case_id=agent.current_case_id)
        history = case_service.case_history(session=session, case_id=case.id)
    team_cases, _ = case_service.list_cases(session=session, status="active", team=agent.team, limit=100)
    other_teams = [t.name for t in list_teams(session=session) if t.name != agent.team]
    return {
        "agent": agent,
        "case": case,
        "offer": is_offer(case),
        "history": history,
        "team_cases": team_cases,
        "other_teams": other_teams,
        "now": now,
    }


def is_offer(case: ReturnCase | None) -> bool:
    """Whether the case is an offer its agent must accept or decline (reserved, with an expiry)."""
    return case is not None and case.status == CaseStatus.RESERVED and case.offer_expires_at is not None


def offer_seconds_left(case: ReturnCase, now: datetime) -> int:
    """Whole seconds until the offer expires (0 once it has)."""
    assert case.offer_expires_at is not None
    return max(int((case.offer_expires_at - now).total_seconds()), 0)


def case_state(case: ReturnCase | None, offer: bool) -> str:
    """What the agent's page shows of its held case: it is drawn again when this changes (not while they type)."""
    return "" if case is None else f"{case.id}:{'offer' if offer else 'held'}"


templates.env.globals["offer_seconds_left"] = offer_seconds_left
templates.env.globals["case_state"] = case_state


@router.get("/console/agent", response_class=HTMLResponse, dependencies=[AGENT_PAGE])
async def agent_home(request: Request, principal: AgentPrincipal, db: DatabaseDep) -> HTMLResponse:
    """The agent's home: availability, the case they hold (Resolution, Resolve), their team's active cases."""
    view = await db.read(lambda s: _agent_view(s, principal))
    return page(request, "agent.html", principal, **view)


@router.get("/console/agent/parts", dependencies=[AGENT_PAGE])
async def agent_parts(request: Request, principal: AgentPrincipal, db: DatabaseDep) -> JSONResponse:
    """The live parts of the agent's home (the case they hold, their team's cases), for its script."""
    view = await db.read(lambda s: _agent_view(s, principal))
    case: ReturnCase | None = view["case"]
    context = {"request": request, "principal": principal, **view}
    if case is None:
        announcement = "No case: you will get the next one."
    elif view["offer"]:
        left = offer_seconds_left(case, view["now"])
        announcement = (
            f"New offer: order {case.order_id}, {case.product_name}, from {case.customer_name}; "
            f"accept within {waited(left)}"
        )
    else:
        announcement = f"New case: order {case.order_id}, {case.product_name}, from {case.customer_name}"
    return JSONResponse(
        {
            "case_id": case.id if case else None,
            "case_state": case_state(case, view["offer"]),
            "offer": view["offer"],
            "overdue": bool(case and case.overdue_at),
            "status": view["agent"].status,
            "announce": announcement,
            "case_html": templates.get_template("agent_case.html").render(context),
            "team_html": templates.get_template("agent_team.html").render(context),
        },
        headers={"Cache-Control": "no-store"},
    )


# --- the admin -----------------------------------------------------------------------------------------------


def _queue_view(session: Session) -> dict[str, Any]:
    names = [t.name for t in list_teams(session=session)]
    return {
        "queues": queue_figures(session=session, teams=names),
        "charts": waiting_last_hour(session=session, teams=names),
    }


@router.get("/console/admin", response_class=HTMLResponse, dependencies=[ADMIN_PAGE])
async def admin_home(request: Request, principal: AdminPrincipal, db: DatabaseDep) -> HTMLResponse:
    """The admin's home: the live queue per team, with the last hour; case search."""
    return page(request, "admin.html", principal, **await db.read(_queue_view))


@router.get("/console/admin/queue", response_class=HTMLResponse, dependencies=[ADMIN_PAGE])
async def admin_queue_part(request: Request, principal: AdminPrincipal, db: DatabaseDep) -> HTMLResponse:
    """The queue part of the admin's home, for its script."""
    context = {"request": request, "principal": principal, **await db.read(_queue_view)}
    return HTMLResponse(
        templates.get_template("admin_queue.html").render(context), headers={"Cache-Control": "no-store"}
    )


@router.get("/console/admin/agents", response_class=HTMLResponse, dependencies=[ADMIN_PAGE])
async def admin_agents(request: Request, principal: AdminPrincipal, db: DatabaseDep) -> HTMLResponse:
    """Agents: add (Name, Email, Team, Password, Add agent), edit, remove."""

    def read(session: Session) -> dict[str, Any]:
        agents, _ = list_agents(session=session, status=None, team=None, cursor=None, limit=500)
        return {"agents": agents, "teams": list_teams(session=session)}

    return page(request, "admin_agents.html", principal, **await db.read(read))


@router.get("/console/admin/teams", response_class=HTMLResponse, dependencies=[ADMIN_PAGE])
async def admin_teams(request: Request, principal: AdminPrincipal, db: DatabaseDep) -> HTMLResponse:
    """Teams: their queues and routing timers (Save timers), and a form to add one."""

    def read(session: Session) -> dict[str, Any]:
        return {**_queue_view(session), "teams": list_teams(session=session)}

    return page(request, "admin_teams.html", principal, **await db.read(read))


@router.get("/console/admin/cases", response_class=HTMLResponse, dependencies=[ADMIN_PAGE])
async def admin_cases(
    request: Request,
    principal: AdminPrincipal,
    db: DatabaseDep,
    q: Annotated[str, Query(max_length=320)] = "",
) -> HTMLResponse:
    """Case search by order number or customer email."""
    found = await db.read(lambda s: search_cases(session=s, query=q))
    return page(request, "admin_cases.html", principal, q=q, found=found)


@router.get("/console/admin/cases/{case_id}", response_class=HTMLResponse, dependencies=[ADMIN_PAGE])
async def admin_case(
    request: Request, principal: AdminPrincipal, db: DatabaseDep, settings: SettingsDep, case_id: str
) -> HTMLResponse:
    """One case: its details, its timeline (who, what, why) and a link to its workflow in the Temporal UI."""

    def read(session: Session) -> dict[str, Any] | None:
        try:
            case = case_service.get_case(session=session, case_id=case_id)
        except CaseNotFound:
            return None
        return {
            "case": case,
            "offer": is_offer(case),
            "now": db_now(session),
            "history": case_service.case_history(session=session, case_id=case_id),
            "other_teams": [t.name for t in list_teams(session=session) if t.name != case.team],
        }

    found = await db.read(read)
    if found is None:
        return page(request, "not_found.html", principal, status_code=404, message=f"No case has the id {case_id}.")
    workflow_id = workflow_id_for_case(case_id)
    ui = f"{settings.TEMPORAL_UI_URL}/namespaces/{settings.TEMPORAL_NAMESPACE}/workflows/{workflow_id}"
    case = found["case"]
    window = timedelta(days=settings.REOPEN_WINDOW_DAYS)
    reopenable = case.status == CaseStatus.RESOLVED and case.resolved_at is not None
    reopenable = reopenable and case.resolved_at + window >= found["now"]
    return page(request, "admin_case.html", principal, temporal_url=ui, reopenable=reopenable, **found)


@router.get("/console/admin/api-keys", response_class=HTMLResponse, dependencies=[ADMIN_PAGE])
async def admin_api_keys(request: Request, principal: AdminPrincipal, db: DatabaseDep) -> HTMLResponse:
    """API keys: create (the key is shown once), revoke."""
    keys = await db.read(lambda s: list_api_keys(session=s))
    return page(request, "admin_api_keys.html", principal, keys=keys, scopes=SCOPES)


@router.get("/console/admin/webhooks", response_class=HTMLResponse, dependencies=[ADMIN_PAGE])
async def admin_webhooks(request: Request, principal: AdminPrincipal, db: DatabaseDep) -> HTMLResponse:
    """Webhooks and their recent deliveries."""

    def read(session: Session) -> dict[str, Any]:
        endpoints, _ = list_endpoints(session=session, cursor=None, limit=100)
        deliveries = {
            e.id: list_deliveries(session=session, endpoint_id=e.id, cursor=None, limit=10)[0] for e in endpoints
        }
        return {"endpoints": endpoints, "deliveries": deliveries}

    try:
        view = await db.read(read)
    except DomainError as err:
        return page(request, "not_found.html", principal, status_code=err.status_code, message=err.message)
    return page(request, "admin_webhooks.html", principal, event_types=EVENT_TYPES, **view)


# --- our own assets ------------------------------------------------------------------------------------------

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
ASSETS = {p.name: p for p in STATIC.iterdir() if p.suffix in MEDIA_TYPES}


@router.get("/console/static/{name}", dependencies=[Public("the console's own stylesheet and scripts")])
async def static_file(name: Annotated[str, FastApiPath(max_length=100)]) -> Response:
    """One of the console's own files (a fixed list: nothing else on disk is reachable)."""
    found = ASSETS.get(name)
    if found is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        found.read_bytes(),
        media_type=MEDIA_TYPES[found.suffix],
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
