"""Liveness and readiness, at the root."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import DatabaseDep, TemporalClientDep
from api.security import Public, RuledRoute

router = APIRouter(tags=["health"], route_class=RuledRoute)


@router.get("/healthz", dependencies=[Public("liveness probe")])
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    dependencies=[Public("readiness probe of the load balancer and the orchestrator")],
    responses={503: {"description": "MySQL or Temporal is down"}},
)
async def readyz(db: DatabaseDep, client: TemporalClientDep) -> JSONResponse:
    """Ready when both the database and Temporal answer; 503 names whichever does not."""
    problems: list[str] = []
    try:
        # Within the API's database deadline, even when the database hangs (the ping's thread ends alone).
        await db.read(lambda session: session.execute(text("SELECT 1")))
    except Exception as err:  # readiness reports any failure, whatever its kind
        problems.append(f"database: {type(err).__name__}: {err}"[:300])
    try:
        await asyncio.wait_for(client.service_client.check_health(), timeout=5)
    except Exception as err:
        problems.append(f"temporal: {type(err).__name__}: {err}"[:300])
    if problems:
        return JSONResponse({"status": "unavailable", "detail": "; ".join(problems)}, status_code=503)
    return JSONResponse({"status": "ready"})
