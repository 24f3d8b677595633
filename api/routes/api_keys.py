"""Service API keys: admins create them (shown once), list them and revoke them."""

from fastapi import APIRouter, Response, status
from sqlalchemy.orm import Session

from api.deps import DatabaseDep
from api.errors import error_responses
from api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from api.security import Allow, CurrentPrincipal, RuledRoute
from core import api_keys as key_service
from core.schemas import Page

router = APIRouter(prefix="/api-keys", tags=["api keys"], route_class=RuledRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    dependencies=[Allow(admin=True)],
    responses=error_responses(400, 422, 503),
)
async def create_api_key(body: ApiKeyCreate, principal: CurrentPrincipal, db: DatabaseDep) -> ApiKeyCreated:
    """Create a key for a service with the given scopes; the answer shows the key this once."""

    def create(session: Session) -> ApiKeyCreated:
        key, plain = key_service.create_api_key(
            session=session, name=body.name, scopes=list(body.scopes), created_by=str(principal.user_id)
        )
        return ApiKeyCreated.model_validate({**ApiKeyPublic.model_validate(key).model_dump(), "key": plain})

    return await db.write(create)


@router.get("", response_model=Page[ApiKeyPublic], dependencies=[Allow(admin=True)], responses=error_responses(503))
async def read_api_keys(db: DatabaseDep) -> Page[ApiKeyPublic]:
    """Every key (without the key itself), revoked ones included, oldest first."""
    keys = await db.read(lambda session: key_service.list_api_keys(session=session))
    return Page[ApiKeyPublic](items=[ApiKeyPublic.model_validate(k) for k in keys])


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Allow(admin=True)],
    responses=error_responses(404, 422, 503),
)
async def revoke_api_key(key_id: str, db: DatabaseDep) -> Response:
    """Revoke a key: from the next request on it is refused (401)."""
    await db.write(lambda session: key_service.revoke_api_key(session=session, key_id=key_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
