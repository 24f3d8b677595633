"""Who is asking, and may they: the principal behind a request, and the rule every route declares.

A request carries one credential, `Authorization: Bearer <access token or API key>`; `get_principal` turns it into
a Principal (an admin, an agent or a service key) with one primary-key read, and never hashes anything. Each
route declares exactly one rule in its `dependencies`: `Allow(...)` (who may call it), `Public(...)` (anyone), or
a customer's tracking token in its path (`TrackedCaseId`). `check_route_rules` refuses to build an app with a
route that declares none (deny by default).
"""

import hashlib
import hmac
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Request, params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer
from sqlalchemy.orm import Session

from api.deps import get_database
from core.api_keys import LAST_USED_RESOLUTION, SCOPES, find_api_key, note_api_key_use
from core.config import Settings
from core.models import UserRole, utcnow
from core.security import (
    TokenExpired,
    TokenInvalid,
    case_id_of_tracking_token,
    derive_key,
    looks_like_api_key,
    read_access_token,
)
from core.users import get_user_with_agent

log = logging.getLogger("returns.api.security")

TOKEN_URL = "/api/v1/auth/token"
Role = Literal["admin", "agent", "service"]

# Both read the same header; declared so the OpenAPI document (and the /docs *Authorize* button) shows the two
# ways in. The principal itself is read once, by `get_principal`.
_people = OAuth2PasswordBearer(
    tokenUrl=TOKEN_URL,
    scheme_name="SignIn",
    description="Admins and agents: sign in with email and password, then send the access token",
    auto_error=False,
)
_services = HTTPBearer(
    scheme_name="ApiKey",
    description="Services (the storefront's backend): `Authorization: Bearer rdk_...`, a key an admin created",
    auto_error=False,
)


@dataclass(frozen=True)
class Principal:
    """Who a request acts as. `actor` is what case and agent events record."""

    role: Role
    actor: str
    user_id: str | None = None
    agent_id: str | None = None
    team: str | None = None  # the agent's team, read live
    key_id: str | None = None
    key_name: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    key_last_used_at: datetime | None = None


def client_address(request: Request) -> str:
    """The client's address (behind the proxy, uvicorn takes it from X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


def unauthorized(detail: str) -> HTTPException:
    """401: no credential, or one that is not (or no longer) valid."""
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> HTTPException:
    """403: a valid credential that may not do this."""
    return HTTPException(status_code=403, detail=detail)


NO_CREDENTIAL = (
    "sign in first (POST /api/v1/auth/token) and send `Authorization: Bearer <access_token>`; "
    "a service sends its API key the same way"
)


# The console's session: the same signed access token, in an HttpOnly cookie. A request that changes something
# with it must also send the session's CSRF token in this header (a page of ours has it; another site has not).
SESSION_COOKIE = "rd_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(secret_key: str, session_token: str) -> str:
    """The CSRF token of a console session (derived from it: nothing to store)."""
    return hmac.new(derive_key(secret_key, "csrf"), session_token.encode(), hashlib.sha256).hexdigest()[:40]


def csrf_matches(secret_key: str, session_token: str, given: str | None) -> bool:
    """Whether `given` is the session's CSRF token."""
    return given is not None and hmac.compare_digest(given.encode(), csrf_token(secret_key, session_token).encode())


def read_credential(request: Request) -> str | None:
    """The bearer credential of the request (or the console's session cookie), or None when it carries none."""
    header = request.headers.get("authorization")
    if header is None:
        return _session_credential(request)
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise unauthorized("the Authorization header must be `Bearer <access token or API key>`")
    return value.strip()


def _session_credential(request: Request) -> str | None:
    session_token = request.cookies.get(SESSION_COOKIE)
    if not session_token:
        return None
    settings: Settings = request.app.state.settings
    if request.method not in SAFE_METHODS and not csrf_matches(
        settings.SECRET_KEY, session_token, request.headers.get(CSRF_HEADER)
    ):
        raise forbidden(f"a change made with the console's session needs its {CSRF_HEADER} header; reload the page")
    return session_token


async def get_principal(
    request: Request,
    _sign_in: Annotated[str | None, Depends(_people)],
    _api_key: Annotated[HTTPAuthorizationCredentials | None, Depends(_services)],
) -> Principal:
    """The principal behind the request's credential (401 when it has none, or a bad one)."""
    credential = read_credential(request)
    if credential is None:
        raise unauthorized(NO_CREDENTIAL)
    settings: Settings = request.app.state.settings
    if looks_like_api_key(credential) and request.cookies.get(SESSION_COOKIE) != credential:
        return await get_database(request).read(lambda session: _service(session, credential))
    return await get_database(request).read(lambda session: _person(session, settings, credential))


def _service(session: Session, credential: str) -> Principal:
    key = find_api_key(session=session, plain=credential)
    if key is None:
        raise unauthorized("the API key is not valid")
    if key.revoked_at is not None:
        log.warning("refused revoked API key %s (%r)", key.id, key.name)
        raise unauthorized("the API key was revoked")
    return Principal(
        role="service",
        actor=f"key:{key.name}",
        key_id=key.id,
        key_name=key.name,
        scopes=frozenset(key.scopes),
        key_last_used_at=key.last_used_at,
    )


def _person(session: Session, settings: Settings, credential: str) -> Principal:
    try:
        claims = read_access_token(secret_key=settings.SECRET_KEY, token=credential)
    except TokenExpired:
        raise unauthorized("the access token has expired; sign in again") from None
    except TokenInvalid:
        raise unauthorized("the access token is not valid") from None
    found = get_user_with_agent(session=session, user_id=claims.user_id)
    if found is None:
        raise unauthorized("the access token is not valid")
    user, agent = found
    if user.deleted_at is not None or user.token_version != claims.version or user.role != claims.role:
        raise unauthorized("the access token is no longer valid; sign in again")
    if user.role == UserRole.ADMIN:
        return Principal(role="admin", actor=f"admin:{user.id}", user_id=user.id)
    if agent is None or agent.deleted_at is not None:
        raise unauthorized("the access token is no longer valid; sign in again")
    return Principal(role="agent", actor=f"agent:{agent.id}", user_id=user.id, agent_id=agent.id, team=agent.team)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


# --- the rules routes declare ---------------------------------------------------------------------------------


class RouteRule:
    """Base of the rules: a route must declare exactly one. `refusals` are the answers the rule itself gives."""

    refusals: tuple[int, ...] = ()


class AccessRule(RouteRule):
    """Who may call the route: admins, agents, and service keys holding one of `scopes`."""

    refusals = (401, 403)

    def __init__(self, *, admin: bool, agent: bool, scopes: frozenset[str], refusal: str | None) -> None:
        unknown = scopes - set(SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}")
        self.admin, self.agent, self.scopes, self.refusal = admin, agent, scopes, refusal

    async def __call__(self, principal: CurrentPrincipal, request: Request) -> Principal:
        if principal.role == "admin" and self.admin:
            return principal
        if principal.role == "agent" and self.agent:
            return principal
        if principal.role == "service" and principal.scopes & self.scopes:
            await _note_key_use(request, principal)
            return principal
        raise forbidden(self._refusal_for(principal))

    def _refusal_for(self, principal: Principal) -> str:
        if self.refusal is not None:
            return self.refusal
        if principal.role == "service":
            if not self.scopes:
                return "API keys cannot use this route"
            needed = " or ".join(f"`{s}`" for s in sorted(self.scopes))
            return f"this API key lacks the scope {needed}"
        allowed = [who for who, ok in (("admins", self.admin), ("agents", self.agent)) if ok]
        if self.scopes:
            allowed.append("services")
        return f"only {' and '.join(allowed)} can do this" if allowed else "nobody can do this"

    def __repr__(self) -> str:
        return f"Allow(admin={self.admin}, agent={self.agent}, scopes={sorted(self.scopes)})"


async def _note_key_use(request: Request, principal: Principal) -> None:
    # Only after the key was allowed: a refused request changes nothing.
    now = utcnow()
    last = principal.key_last_used_at
    if principal.key_id is None or (last is not None and now - last < LAST_USED_RESOLUTION):
        return
    key_id = principal.key_id
    await get_database(request).write(lambda session: note_api_key_use(session=session, key_id=key_id, now=now))


class PublicRule(RouteRule):
    """Anyone may call the route, with or without a credential (which is then ignored)."""

    def __init__(self, why: str) -> None:
        self.why = why

    async def __call__(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"Public({self.why!r})"


class TrackingTokenRule(RouteRule):
    """The customer's tracking token in the path is the credential, for that one case only."""

    refusals = (404,)

    def __call__(
        self,
        request: Request,
        token: Annotated[str, Path(max_length=200, description="the case's tracking token, from its filing")],
    ) -> str:
        settings: Settings = request.app.state.settings
        case_id = case_id_of_tracking_token(secret_key=settings.SECRET_KEY, token=token)
        if case_id is None:
            raise HTTPException(status_code=404, detail="no case has this tracking token")
        return case_id

    def __repr__(self) -> str:
        return "TrackingToken()"


def Allow(  # noqa: N802 (reads as a declaration in the route decorator)
    *,
    admin: bool = False,
    agent: bool = False,
    scopes: frozenset[str] | set[str] = frozenset(),
    refusal: str | None = None,
) -> params.Depends:
    """The rule `dependencies=[Allow(...)]`: who may call the route; anyone else gets a 403, no credential a 401."""
    return params.Depends(AccessRule(admin=admin, agent=agent, scopes=frozenset(scopes), refusal=refusal))


def Public(why: str) -> params.Depends:  # noqa: N802
    """The rule `dependencies=[Public("why")]`: anyone may call the route."""
    return params.Depends(PublicRule(why))


_tracking_rule = TrackingTokenRule()
# The case id a customer's tracking token stands for (404 for a token we did not make); also the route's rule.
TrackedCaseId = Annotated[str, Depends(_tracking_rule)]

# Routes FastAPI itself adds (not APIRoutes, so no dependencies): public by this explicit list.
FRAMEWORK_PUBLIC_PATHS = ("openapi_url", "docs_url", "redoc_url", "swagger_ui_oauth2_redirect_url")


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependants(sub)


def rules_of(dependant: Dependant) -> list[RouteRule]:
    """The access rules a route's dependencies declare (a route must declare exactly one)."""
    found: list[RouteRule] = []
    for sub in _dependants(dependant):
        if isinstance(sub.call, RouteRule) and sub.call not in found:
            found.append(sub.call)
    return found


def api_routes(app: FastAPI) -> Iterator[tuple[str, str, list[RouteRule]]]:
    """(method, path, declared rules) of every API route, routers' prefixes included; other routes as method "*"."""
    for context in iter_route_contexts(app.routes):
        path = str(context.path)
        if isinstance(context.original_route, APIRoute):
            rules = rules_of(context.dependant)
            for method in sorted(context.methods or ()):
                yield method, path, rules
        else:
            yield "*", path, []


def route_rule_problems(app: FastAPI) -> list[str]:
    """Every route of the app that does not declare exactly one rule (none, or several)."""
    framework = {getattr(app, name) for name in FRAMEWORK_PUBLIC_PATHS} - {None}
    problems = []
    for method, path, rules in api_routes(app):
        if method == "*":
            if path not in framework:
                problems.append(f"{path}: not an API route, so it cannot declare a rule")
        elif len(rules) != 1:
            problems.append(f"{method} {path}: {len(rules)} rules {rules} (declare exactly one)")
    return problems


def check_route_rules(app: FastAPI) -> None:
    """Refuse to build an app with a route that declares no rule: nothing is public by accident."""
    problems = route_rule_problems(app)
    if problems:
        raise RuntimeError("routes without exactly one access rule: " + "; ".join(problems))


def rule_responses(dependencies: Sequence[params.Depends] | None) -> dict[int | str, dict[str, Any]]:
    """The refusals (401, 403, 404) the declared rule answers, for the route's OpenAPI responses."""
    from api.errors import error_responses

    codes: set[int] = set()
    for dependency in dependencies or []:
        if isinstance(dependency.dependency, RouteRule):
            codes.update(dependency.dependency.refusals)
    return error_responses(*sorted(codes))


class RuledRoute(APIRoute):
    """An API route whose OpenAPI responses include the refusals of the rule it declares."""

    def __init__(
        self,
        path: str,
        endpoint: Any,
        *,
        dependencies: Sequence[params.Depends] | None = None,
        responses: dict[int | str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        merged = {**rule_responses(dependencies), **(responses or {})}
        super().__init__(path, endpoint, dependencies=dependencies, responses=merged, **kwargs)


def person_of_token(session: Session, settings: Settings, token: str) -> Principal:
    """The admin or agent a signed access token stands for (401 HTTPException when it is not, or no longer, valid)."""
    return _person(session, settings, token)
