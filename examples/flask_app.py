"""A Flask app whose pages are guarded by the user's role, or a permission, in the org the URL names.

    GET /orgs/<org>/dashboard      any member of the org (<org>: its id, org_..., or its slug)
    GET /orgs/<org>/settings       org:admin only
    GET /orgs/<org>/invoices/new   a member whose role has the permission org:invoices:create

Run it (from the repository root) with the usual REDIS_URL, CLERK_SECRET_KEY, CLERK_API_URL, and
CLERK_JWT_KEY (optionally CLERK_AUTHORIZED_PARTIES, PORT):

    CLERK_SECRET_KEY=sk_... CLERK_JWT_KEY="$(cat clerk-public.pem)" python -m examples.flask_app

Requests carry Clerk's session token (``__session`` cookie or ``Authorization: Bearer``), verified
by examples/clerk_session.py; refusals are JSON ``{"error", "message"}`` (cache.authz lists them).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request

from cache import MembershipCache, build_cache
from cache.authz.flask import current_membership, require_org_permission, require_org_role
from cache.config import Settings
from examples.clerk_session import SessionVerifier


def create_app(*, cache: MembershipCache | None = None, verifier: SessionVerifier | None = None) -> Flask:
    """The app; ``cache`` and ``verifier`` are built from the environment unless given (tests give them)."""
    lookups = cache or build_cache(Settings.from_env())
    sessions = verifier or SessionVerifier.from_env()

    def signed_in_user() -> str | None:
        return sessions.user_id(request.headers.get("Authorization"), request.cookies.get("__session"))

    member = require_org_role(user=signed_in_user, memberships=lookups.get_memberships)
    admin = require_org_role("org:admin", user=signed_in_user, memberships=lookups.get_memberships)
    invoicer = require_org_permission("org:invoices:create", user=signed_in_user, memberships=lookups.get_memberships)
    app = Flask(__name__)

    @app.get("/orgs/<org_id>/dashboard")
    @member
    def dashboard(org_id: str) -> dict[str, Any]:
        membership = current_membership()
        return {"org": membership.organization_name, "role": membership.role}

    @app.get("/orgs/<org_id>/settings")
    @admin
    def settings(org_id: str) -> dict[str, Any]:
        membership = current_membership()  # act on its id: <org_id> may be a slug
        return {"org_id": membership.organization_id, "slug": membership.organization_slug}

    @app.get("/orgs/<org_id>/invoices/new")
    @invoicer
    def new_invoice(org_id: str) -> dict[str, Any]:
        membership = current_membership()
        return {"org_id": membership.organization_id, "role": membership.role}

    return app


if __name__ == "__main__":
    create_app().run(port=int(os.environ.get("PORT", "5000")))
