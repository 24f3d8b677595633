"""One error shape, `{"detail": "..."}`, for every refusal; infrastructure outages are 503, never 500."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from core.errors import ERRORS_BY_TYPE, DomainError, DuplicateOpenCase
from core.logging import case_context

log = logging.getLogger("returns.api")

# How the Temporal SDK words a failed (lazy) connection; it raises a plain RuntimeError.
TEMPORAL_CONNECT_FAILED = "Failed client connect"


class ErrorBody(BaseModel):
    """Every refusal and every outage: one sentence saying what is wrong."""

    detail: str


class ConflictBody(ErrorBody):
    """A refused transition or a clash with existing data."""

    existing_case_id: str | None = Field(None, description="the open case of the order line (duplicate filings)")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str | None = None
    type: str | None = None


class ValidationErrorBody(ErrorBody):
    """Malformed input: `detail` names each wrong field; `errors` lists them (absent for a semantic refusal)."""

    errors: list[FieldError] = []


_RESPONSES: dict[int, tuple[type[BaseModel], str]] = {
    400: (ErrorBody, "The body could not be read (not UTF-8)"),
    401: (ErrorBody, "No credential, or one that is not (or no longer) valid; see `WWW-Authenticate`"),
    403: (ErrorBody, "The credential is valid but may not do this"),
    404: (ErrorBody, "No such id"),
    409: (ConflictBody, "Refused: the transition is not allowed, or the data clashes with existing data"),
    422: (ValidationErrorBody, "Malformed input, naming each wrong field"),
    429: (ErrorBody, "Too many failed attempts; retry after `Retry-After` seconds"),
    503: (ErrorBody, "The database or Temporal is unavailable; retry after `Retry-After` seconds"),
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the refusals and outages it can answer, each with its body model."""
    return {code: {"model": _RESPONSES[code][0], "description": _RESPONSES[code][1]} for code in codes}


class ServiceUnavailable(Exception):
    """A dependency (database or Temporal) is down or too slow; the client may retry."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def domain_error_from_update(err: WorkflowUpdateFailedError) -> DomainError:
    """The domain refusal carried by a failed update (its ApplicationError type names it)."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in ERRORS_BY_TYPE:
        if cause.type == DuplicateOpenCase.__name__:
            existing = str(cause.details[0]) if cause.details else ""
            return DuplicateOpenCase(cause.message, existing_case_id=existing)
        return ERRORS_BY_TYPE[cause.type](cause.message)
    raise err


def temporal_outage(err: Exception, timeout_seconds: float, case_id: str) -> ServiceUnavailable:
    """The 503 for Temporal not answering or not reachable about `case_id` (logged, since ops need to know)."""
    if isinstance(err, WorkflowUpdateRPCTimeoutOrCancelledError):
        outage = ServiceUnavailable(
            f"the case workflow did not answer within {timeout_seconds:g}s"
            " (no worker running, or the database is down); retry later"
        )
    else:
        outage = ServiceUnavailable(f"Temporal is unavailable: {err}")
    log.warning("answering 503: %s", outage.message, extra=case_context(case_id))
    return outage


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "request"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and outages to their HTTP answers."""

    @app.exception_handler(DomainError)
    async def _domain(_: Request, err: DomainError) -> JSONResponse:
        body: dict[str, object] = {"detail": err.message}
        if isinstance(err, DuplicateOpenCase):
            body["existing_case_id"] = err.existing_case_id
        return JSONResponse(body, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in err.errors()]
        return JSONResponse({"detail": _validation_message(err), "errors": errors}, status_code=422)

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(_: Request, err: ServiceUnavailable) -> JSONResponse:
        return JSONResponse({"detail": err.message}, status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, err: DBAPIError) -> JSONResponse:
        if err.connection_invalidated or _is_connectivity_error(err):
            log.warning("database unavailable: %s", err.orig)
            return JSONResponse(
                {"detail": "the database is unavailable; retry later"}, status_code=503, headers={"Retry-After": "2"}
            )
        log.exception("database error")
        return JSONResponse({"detail": "internal database error"}, status_code=500)

    @app.exception_handler(PoolTimeoutError)
    async def _pool(_: Request, err: PoolTimeoutError) -> JSONResponse:
        return JSONResponse(
            {"detail": "the database is overloaded; retry later"}, status_code=503, headers={"Retry-After": "2"}
        )

    @app.exception_handler(RPCError)
    async def _temporal(_: Request, err: RPCError) -> JSONResponse:
        if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            return JSONResponse({"detail": f"Temporal is unavailable: {err.message}"}, status_code=503)
        log.exception("Temporal error")
        return JSONResponse({"detail": f"Temporal error: {err.message}"}, status_code=500)

    @app.exception_handler(RuntimeError)
    async def _runtime(_: Request, err: RuntimeError) -> JSONResponse:
        # The API's Temporal client connects on first use (lazy): an API started while Temporal is down
        # gets this from the SDK until Temporal is back.
        if str(err).startswith(TEMPORAL_CONNECT_FAILED):
            log.warning("Temporal unavailable: %s", err)
            return JSONResponse(
                {"detail": f"Temporal is unavailable: {err}"}, status_code=503, headers={"Retry-After": "2"}
            )
        log.error("unexpected error", exc_info=err)
        return JSONResponse({"detail": "internal error"}, status_code=500)


def _is_connectivity_error(err: DBAPIError) -> bool:
    # MySQL client errors 2002/2003/2006/2013: cannot connect, server gone, connection lost.
    code = err.orig.args[0] if err.orig is not None and err.orig.args else None
    return code in (2002, 2003, 2006, 2013) or "Lost connection" in str(err.orig)
