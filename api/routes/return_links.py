"""Return links: the storefront asks for a link that lets its customer start a return for one order."""

from fastapi import APIRouter, status
from pydantic import BaseModel

from api.deps import SettingsDep
from api.errors import error_responses
from api.security import Allow, RuledRoute
from core.models import utcnow
from core.return_links import ReturnLinkCreate, issue_return_link

router = APIRouter(prefix="/return-links", tags=["customer tracking"], route_class=RuledRoute)


class ReturnLinkCreated(BaseModel):
    """The link to send to the customer (it carries the order, signed; nothing is stored)."""

    url: str
    token: str
    expires_at: str


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ReturnLinkCreated,
    dependencies=[Allow(admin=True, scopes={"return-links:create"})],
    responses=error_responses(400, 422, 503),
)
async def create_return_link(body: ReturnLinkCreate, settings: SettingsDep) -> ReturnLinkCreated:
    """A link for the customer of one order: it lists the order's products and starts a return; it expires."""
    token, expires_at = issue_return_link(secret_key=settings.SECRET_KEY, data=body, now=utcnow())
    return ReturnLinkCreated(
        url=f"{settings.PUBLIC_URL}/returns/{token}", token=token, expires_at=expires_at.isoformat()
    )
