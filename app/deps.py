"""Dependencies of the routes, as `Annotated[..., Depends()]` aliases in one place.

Routes declare what they need (`service: ServiceDep`, `_: AdminAuth`) and never reach into
app.state themselves. Every dependency here is `async def` although none awaits anything:
FastAPI runs a plain `def` dependency in the thread pool, and those hops (four per search)
were most of the event loop's time per request (docs/benchmarks.md, "Service latency and
throughput").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import check_admin, check_api
from app.settings import Settings
from app.state import ServiceHolder

if TYPE_CHECKING:
    from bridge.service import BridgeService
else:  # resolved lazily so that importing app/ does not import torch or faiss
    BridgeService = Any

_admin_bearer = HTTPBearer(
    scheme_name="AdminKey",
    description="`Authorization: Bearer <BRIDGE_ADMIN_KEY>`",
    auto_error=False,
)
api_bearer = HTTPBearer(
    scheme_name="APIKey",
    description="`Authorization: Bearer <BRIDGE_API_KEY>`; only when BRIDGE_API_KEY is set",
    auto_error=False,
)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_holder(request: Request) -> ServiceHolder:
    holder: ServiceHolder = request.app.state.holder
    return holder


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[ServiceHolder, Depends(get_holder)]


async def get_service(holder: HolderDep) -> BridgeService:
    """The loaded engine, or 503 while it loads."""
    return holder.require()


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> None:
    check_admin(credentials, settings.admin_key)


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(api_bearer)],
) -> None:
    check_api(credentials, settings.api_key)


ServiceDep = Annotated[BridgeService, Depends(get_service)]
AdminAuth = Depends(require_admin)
APIAuth = Depends(require_api_key)
