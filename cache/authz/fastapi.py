"""FastAPI: ``Depends(OrgRole("org:admin", user=..., memberships=...))`` gives the route the membership;
``Depends(OrgPermission("org:invoices:create", user=..., memberships=...))`` does so for a permission.

Importing this module needs FastAPI, which is not a dependency of this package
(install it with your app; the project's dev extra has it). The rest of ``cache``
does not import it.

The org comes from the path parameter ``org_param`` (an org id or a slug), the user id
from the dependency ``user`` the app provides: verifying Clerk's session token stays
the app's job (``examples/fastapi_app.py`` shows it). ``memberships`` is an async
lookup: by default ``cache.aio.get_cached_user_org_memberships``, or an
``AsyncMembershipCache``'s ``get_memberships``. A sync one is refused (it would block
the event loop); wrap it with ``asyncio.to_thread`` if you must.

A refusal raises `OrgAccessDenied`, an ``HTTPException`` with the status
`cache.authz` documents (401, 404, 403, or 503 when the lookup fails). FastAPI
answers it as ``{"detail": <message>}``; `add_denied_handler` makes it the project's
``{"error": <code>, "message": <text>}``, as the Flask adapter answers.

Lookups are remembered for the request, so several dependencies and `check_org_role` or
`check_org_permission` calls in one request cost one lookup. The memo lives in the request's ASGI scope,
which the ASGI spec makes new for every HTTP request. Not in ``request.state``: that
is ``scope["state"]``, which servers fill with a shallow copy of the lifespan's state,
so whether it is per request depends on the server and on what the lifespan yields.
Nothing here outlives the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from cache.authz import (
    AsyncLookup,
    Denied,
    RequestMemo,
    allowed_roles,
    authorize_async,
    authorize_permission_async,
    permission_key,
)
from cache.contract import Membership

__all__ = [
    "OrgAccessDenied",
    "OrgPermission",
    "OrgRole",
    "add_denied_handler",
    "check_org_permission",
    "check_org_role",
]

_MEMO = "clerk_org_cache.authz.memo"  # a key of the request's ASGI scope


class OrgAccessDenied(HTTPException):
    """A refusal, as FastAPI's HTTPException; ``code`` is the stable ``error`` string."""

    def __init__(self, denied: Denied) -> None:
        super().__init__(denied.status, detail=str(denied), headers=denied.headers() or None)
        self.code = denied.code


def OrgRole(
    *roles: str,
    org_param: str = "org_id",
    user: Callable[..., Any],
    memberships: AsyncLookup | None = None,
) -> Callable[..., Awaitable[Membership]]:
    """A dependency: the user's membership in the path's org if its role is one of ``roles``
    (none: any member), else `OrgAccessDenied`.

    ``user`` is a dependency (any callable FastAPI can resolve) giving the signed-in
    user's id or None. ``memberships`` defaults to `cache.aio`'s process-wide cache
    (built from the environment on the server's event loop).
    """
    allowed = allowed_roles(roles)
    lookup = memberships or _default_lookup

    async def org_role(request: Request, user_id: str | None = Depends(user)) -> Membership:
        return await check_org_role(
            request, _path_org(request, org_param), *allowed, user_id=user_id, memberships=lookup
        )

    return org_role


def OrgPermission(
    permission: str,
    *,
    org_param: str = "org_id",
    user: Callable[..., Any],
    memberships: AsyncLookup | None = None,
) -> Callable[..., Awaitable[Membership]]:
    """A dependency: the user's membership in the path's org if its permissions include
    ``permission``, else `OrgAccessDenied` (403 ``permission_not_allowed`` for a member without it).

    ``permission`` is Clerk's key, ``org:<feature>:<action>`` (``org:`` may be left out, as
    Clerk's ``has()`` allows); a malformed one raises ValueError here, at start-up. A system
    permission (``org:sys_*``) is checked like any other. ``user`` and ``memberships`` are
    as for `OrgRole`.
    """
    key = permission_key(permission)
    lookup = memberships or _default_lookup

    async def org_permission(request: Request, user_id: str | None = Depends(user)) -> Membership:
        return await check_org_permission(
            request, _path_org(request, org_param), key, user_id=user_id, memberships=lookup
        )

    return org_permission


async def check_org_role(
    request: Request, org_ref: object, *roles: str, user_id: str | None, memberships: AsyncLookup
) -> Membership:
    """The same check inside a route (e.g. for a second org); raises `OrgAccessDenied`."""
    try:
        return await authorize_async(_memo(request), user_id, org_ref, roles, memberships)
    except Denied as denied:
        raise OrgAccessDenied(denied) from denied


async def check_org_permission(
    request: Request, org_ref: object, permission: str, *, user_id: str | None, memberships: AsyncLookup
) -> Membership:
    """`check_org_role`'s twin for a permission; raises `OrgAccessDenied`, or ValueError for a malformed key."""
    try:
        return await authorize_permission_async(_memo(request), user_id, org_ref, permission, memberships)
    except Denied as denied:
        raise OrgAccessDenied(denied) from denied


def add_denied_handler(app: FastAPI) -> None:
    """Answer `OrgAccessDenied` as ``{"error": <code>, "message": <text>}``."""

    async def denied(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OrgAccessDenied)
        return JSONResponse({"error": exc.code, "message": exc.detail}, exc.status_code, headers=exc.headers)

    app.add_exception_handler(OrgAccessDenied, denied)


async def _default_lookup(user_id: str) -> list[Membership]:
    from cache.aio import get_cached_user_org_memberships  # needs httpx: only when no lookup was given

    return await get_cached_user_org_memberships(user_id)


def _path_org(request: Request, org_param: str) -> object:
    if org_param not in request.path_params:
        raise LookupError(f"the route has no {{{org_param}}} (the org check's org_param)")
    return request.path_params[org_param]


def _memo(request: Request) -> RequestMemo:
    memo = request.scope.get(_MEMO)
    if not isinstance(memo, RequestMemo):
        memo = request.scope[_MEMO] = RequestMemo()
    return memo
