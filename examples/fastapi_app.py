"""A FastAPI app whose routes are guarded by the user's role, or a permission, in the org the path names.

    GET /orgs/{org}/dashboard      any member of the org ({org}: its id, org_..., or its slug)
    GET /orgs/{org}/settings       org:admin only
    GET /orgs/{org}/invoices/new   a member whose role has the permission org:invoices:create

Run it (from the repository root) with the usual REDIS_URL, CLERK_SECRET_KEY, CLERK_API_URL, and
CLERK_JWT_KEY (optionally CLERK_AUTHORIZED_PARTIES, PORT), under an ASGI server (uvicorn is not a
dependency of this project: ``pip install uvicorn``):

    CLERK_SECRET_KEY=sk_... CLERK_JWT_KEY="$(cat clerk-public.pem)" python -m examples.fastapi_app

Requests carry Clerk's session token (``__session`` cookie or ``Authorization: Bearer``), verified
by examples/clerk_session.py; refusals are JSON ``{"error", "message"}`` (cache.authz lists them).

No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time, and
they name dependencies local to `create_app`.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from cache import Membership
from cache.aio import AsyncMembershipCache, build_cache
from cache.authz.fastapi import OrgPermission, OrgRole, add_denied_handler
from cache.config import Settings
from examples.clerk_session import SessionVerifier


def create_app(*, cache: AsyncMembershipCache | None = None, verifier: SessionVerifier | None = None) -> FastAPI:
    """The app; ``cache`` and ``verifier`` are built from the environment unless given (tests give them)."""
    sessions = verifier or SessionVerifier.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # built on the server's event loop, which its asyncio clients belong to
        app.state.cache = cache or build_cache(Settings.from_env())
        yield
        await app.state.cache.aclose()

    def signed_in_user(request: Request) -> str | None:
        return sessions.user_id(request.headers.get("Authorization"), request.cookies.get("__session"))

    async def memberships(user_id: str) -> list[Membership]:
        lookups: AsyncMembershipCache = app.state.cache
        return await lookups.get_memberships(user_id)  # never blocks the loop: cache.aio

    member = OrgRole(user=signed_in_user, memberships=memberships)
    admin = OrgRole("org:admin", user=signed_in_user, memberships=memberships)
    invoicer = OrgPermission("org:invoices:create", user=signed_in_user, memberships=memberships)
    app = FastAPI(lifespan=lifespan)
    add_denied_handler(app)

    @app.get("/orgs/{org_id}/dashboard")
    async def dashboard(membership: Annotated[Membership, Depends(member)]) -> dict[str, Any]:
        return {"org": membership.organization_name, "role": membership.role}

    @app.get("/orgs/{org_id}/settings")
    async def settings(membership: Annotated[Membership, Depends(admin)]) -> dict[str, Any]:
        # act on membership.organization_id: {org_id} may be a slug
        return {"org_id": membership.organization_id, "slug": membership.organization_slug}

    @app.get("/orgs/{org_id}/invoices/new")
    async def new_invoice(membership: Annotated[Membership, Depends(invoicer)]) -> dict[str, Any]:
        return {"org_id": membership.organization_id, "role": membership.role}

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), port=int(os.environ.get("PORT", "8000")))
