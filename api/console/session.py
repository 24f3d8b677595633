"""The console's sign-in session and the rule its pages declare.

The session cookie holds the same signed access token the API issues (it names the user and their token
generation, so removing an agent or changing a password ends the session at once). Pages declare
`ConsolePage(...)`; without a valid session the browser is sent to /login, and a signed-in person of the wrong
role gets a page saying it is not theirs.
"""

import inspect
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request, params
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.deps import get_database
from api.security import SESSION_COOKIE, Principal, RouteRule, csrf_token, person_of_token
from core.config import Settings

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
# Our own files only: no third-party script, style, frame or form target.
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class SignInRequired(Exception):
    """No (valid) console session: the browser goes to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageRefused(Exception):
    """A signed-in person whose role may not open this page."""

    def __init__(self, principal: Principal, message: str) -> None:
        super().__init__(message)
        self.principal = principal
        self.message = message


class ConsolePageRule(RouteRule):
    """A console page: who may open it, with the session cookie as the credential."""

    refusals = (403,)

    def __init__(self, *, admin: bool, agent: bool) -> None:
        self.admin, self.agent = admin, agent

    async def __call__(self, request: Request) -> Principal:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise SignInRequired(request.url.path)
        settings: Settings = request.app.state.settings
        try:
            principal = await get_database(request).read(lambda s: person_of_token(s, settings, token))
        except HTTPException:
            raise SignInRequired(request.url.path) from None
        if (principal.role == "admin" and self.admin) or (principal.role == "agent" and self.agent):
            return principal
        raise PageRefused(principal, "This page is for admins only." if self.admin else "This page is for agents only.")

    def __repr__(self) -> str:
        return f"ConsolePage(admin={self.admin}, agent={self.agent})"


def ConsolePage(*, admin: bool = False, agent: bool = False) -> params.Depends:  # noqa: N802
    """The rule `dependencies=[ConsolePage(...)]` of a console page (the principal is also its value)."""
    return params.Depends(ConsolePageRule(admin=admin, agent=agent))


def secure_cookie(request: Request) -> bool:
    """Cookies are `Secure` everywhere but on this machine (plain http://localhost in development)."""
    return (request.url.hostname or "") not in LOCAL_HOSTS


def set_session(response: Response, request: Request, token: str, max_age: int) -> None:
    """Put the session token in an HttpOnly, SameSite cookie."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookie(request),
    )


def end_session(response: Response, request: Request) -> None:
    """Forget the session cookie."""
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookie(request))


def page(
    request: Request, name: str, principal: Principal | None = None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render a console page (with the session's CSRF token for its scripts and forms)."""
    token = request.cookies.get(SESSION_COOKIE)
    csrf = csrf_token(request.app.state.settings.SECRET_KEY, token) if token and principal is not None else ""
    response = templates.TemplateResponse(
        request=request,
        name=name,
        context={"principal": principal, "csrf": csrf, **context},
        status_code=status_code,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )
    return response


def install_console_handlers(app: FastAPI) -> None:
    """Send people without a session to /login, and show a refused page (403) in words."""

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, err: SignInRequired) -> Response:
        response = RedirectResponse(f"/login?next={quote(err.next_path)}", status_code=303)
        if request.cookies.get(SESSION_COOKIE):
            end_session(response, request)
        return response

    @app.exception_handler(PageRefused)
    async def _refused(request: Request, err: PageRefused) -> Response:
        return page(request, "refused.html", err.principal, status_code=403, message=err.message)


def install_link_handler(app: FastAPI) -> None:
    """A forged, damaged or expired customer link gets a page that says so (404)."""
    from core.return_links import LinkRefused

    @app.exception_handler(LinkRefused)
    async def _refused(request: Request, err: LinkRefused) -> Response:
        return page(request, "link_refused.html", status_code=404, message=err.reason)


CONSOLE_PREFIXES = ("/console", "/login", "/logout", "/returns/", "/track/")


def is_console_path(path: str) -> bool:
    """Whether a path is one of the console's pages (answered in HTML), not the JSON API."""
    return path == "/" or path.startswith(CONSOLE_PREFIXES)


Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def _in_html(handler: Handler) -> Handler:
    async def answer(request: Request, err: Any) -> Response:
        answered = handler(request, err)
        response = await answered if inspect.isawaitable(answered) else answered
        if not is_console_path(request.url.path) or not isinstance(response, JSONResponse):
            return response
        detail = json.loads(bytes(response.body)).get("detail")
        message = detail if isinstance(detail, str) else "the request could not be handled"
        return page(request, "error.html", status_code=response.status_code, message=message)

    return answer


def install_console_error_pages(app: FastAPI) -> None:
    """The API's error answers (503 when the database or Temporal is down, ...) as pages in words on the
    console's paths. Call after every other handler is installed."""
    for exc_class, handler in list(app.exception_handlers.items()):
        app.exception_handlers[exc_class] = _in_html(handler)
