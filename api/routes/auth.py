"""Sign-in, and who you are: the only routes that pay for Argon2."""

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request

from api.deps import SessionDep, SessionFactoryDep, SettingsDep
from api.errors import error_responses
from api.schemas import AccessToken, Me, PasswordChange
from api.security import Allow, CurrentPrincipal, Public, RuledRoute, client_address, forbidden, unauthorized
from core.agents import get_agent
from core.config import Settings
from core.models import AppUser, utcnow
from core.schemas import AgentPublic
from core.security import hash_password, issue_access_token, verify_password
from core.users import (
    clear_account_failures,
    find_login,
    login_retry_after,
    normalize_email,
    record_login_failure,
    set_password,
)

router = APIRouter(tags=["auth"], route_class=RuledRoute)
log = logging.getLogger("returns.api.auth")

# One answer for an unknown email, a wrong password and an account that cannot sign in: nothing to enumerate.
WRONG_CREDENTIALS = "wrong email or password"


class SignInForm:
    """The OAuth2 password form (`grant_type=password`, `username`, `password`), as the /docs Authorize button
    sends it; other OAuth2 fields (scope, client_id) are ignored."""

    def __init__(
        self,
        username: Annotated[str, Form(min_length=1, max_length=320, description="your email")],
        password: Annotated[str, Form(min_length=1, max_length=1024, json_schema_extra={"format": "password"})],
        grant_type: Annotated[str, Form(pattern="^password$")] = "password",
    ) -> None:
        self.username, self.password = username, password


def _access_token(settings: Settings, user: AppUser) -> AccessToken:
    token = issue_access_token(
        secret_key=settings.SECRET_KEY,
        user_id=user.id,
        role=user.role,
        version=user.token_version,
        minutes=settings.ACCESS_TOKEN_MINUTES,
    )
    return AccessToken(access_token=token, expires_in=settings.ACCESS_TOKEN_MINUTES * 60)


def _too_many(retry_after: int) -> HTTPException:
    return HTTPException(
        status_code=429,
        detail=f"too many failed sign-ins; try again in {retry_after} seconds",
        headers={"Retry-After": str(retry_after)},
    )


def _wait_before_trying(session_factory: SessionFactoryDep, settings: Settings, email: str, address: str) -> None:
    with session_factory() as session:
        wait = login_retry_after(
            session=session,
            email=email,
            address=address,
            per_account=settings.LOGIN_FAILURES_PER_ACCOUNT,
            per_address=settings.LOGIN_FAILURES_PER_ADDRESS,
            now=utcnow(),
        )
    if wait is not None:
        log.warning("sign-in throttled for %ds (client %s)", wait, address)
        raise _too_many(wait)


def _note_failure(session_factory: SessionFactoryDep, email: str, address: str) -> None:
    with session_factory.begin() as session:
        record_login_failure(session=session, email=email, address=address, now=utcnow())


@router.post(
    "/auth/token",
    response_model=AccessToken,
    dependencies=[Public("signing in is how a person gets a credential")],
    responses=error_responses(400, 401, 422, 429, 503),
)
def sign_in(
    form: Annotated[SignInForm, Depends()],
    request: Request,
    settings: SettingsDep,
    session_factory: SessionFactoryDep,
) -> AccessToken:
    """Sign in with your email as `username` and your password; send the answer's `access_token` as
    `Authorization: Bearer <access_token>`."""
    email, address = normalize_email(form.username), client_address(request)
    _wait_before_trying(session_factory, settings, email, address)
    with session_factory() as session:
        user = find_login(session=session, email=email)
    if not verify_password(form.password, user.password_hash if user else None) or user is None:
        _note_failure(session_factory, email, address)
        log.info("failed sign-in (client %s)", address)
        raise unauthorized(WRONG_CREDENTIALS)
    with session_factory.begin() as session:
        clear_account_failures(session=session, email=email)
    return _access_token(settings, user)


@router.get("/me", response_model=Me, dependencies=[Allow(admin=True, agent=True)], responses=error_responses(503))
def read_me(principal: CurrentPrincipal, session: SessionDep) -> Me:
    """Who you are: your role, and for an agent their agent id, team and record."""
    user = session.get(AppUser, principal.user_id)
    assert user is not None  # the principal was read from this row a moment ago
    agent = get_agent(session=session, agent_id=principal.agent_id) if principal.agent_id else None
    return Me(
        role=user.role,
        user_id=user.id,
        email=user.email,
        agent_id=principal.agent_id,
        team=agent.team if agent else None,
        agent=AgentPublic.model_validate(agent) if agent else None,
    )


@router.post(
    "/me/password",
    response_model=AccessToken,
    dependencies=[Allow(admin=True, agent=True)],
    responses=error_responses(400, 422, 429, 503),
)
def change_password(
    body: PasswordChange,
    principal: CurrentPrincipal,
    request: Request,
    settings: SettingsDep,
    session_factory: SessionFactoryDep,
) -> AccessToken:
    """Change your own password (give the current one). Every token you hold stops working; the answer is a new
    one."""
    with session_factory() as session:
        user = session.get(AppUser, principal.user_id)
    assert user is not None
    address = client_address(request)
    _wait_before_trying(session_factory, settings, user.email, address)
    if not verify_password(body.current_password, user.password_hash):
        _note_failure(session_factory, user.email, address)
        raise forbidden("current_password is wrong")
    new_hash = hash_password(body.new_password)  # before the transaction: Argon2 takes a while
    with session_factory.begin() as session:
        user = session.get(AppUser, principal.user_id, with_for_update=True)
        if user is None or user.deleted_at is not None:
            raise unauthorized("the access token is no longer valid; sign in again")
        set_password(session=session, user=user, password_hash=new_hash)
        clear_account_failures(session=session, email=user.email)
        token = _access_token(settings, user)
    return token
