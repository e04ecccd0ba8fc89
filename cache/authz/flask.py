"""Flask: ``@require_org_role("org:admin", user=...)`` or ``@require_org_permission("org:invoices:create",
user=...)`` on views whose route names the org.

The org comes from the route (``org_param``, an org id or a slug), the user id from
a callable the app provides: verifying Clerk's session token stays the app's job
(``examples/flask_app.py`` shows it). A refusal is answered as JSON
``{"error": <code>, "message": <text>}`` with the status `cache.authz` documents
(401, 404, 403, or 503 when the lookup fails); the view then does not run.

Lookups are remembered for the request, so stacked decorators and `check_org_role` or
`check_org_permission` calls in one request cost one lookup. The view reads the membership the check
resolved with `current_membership` (use its ``organization_id``, not the URL's value,
which may be a slug).

Both live in the request's WSGI environ, never in ``flask.g``: ``g`` belongs to the
app context, and an app that pushes one at import (``app.app_context().push()``
before ``db.create_all()``) has Flask reuse it for every request of the thread, so a
memo there would answer a demoted admin's later requests from before the 2xx. The
environ is a new dict for each request (PEP 3333), whatever the server or the
contexts, so nothing here outlives the request.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import Response, has_request_context, jsonify, request

from cache import get_cached_user_org_memberships
from cache.authz import (
    Denied,
    Lookup,
    RequestMemo,
    allowed_roles,
    authorize,
    authorize_permission,
    permission_key,
)
from cache.contract import Membership

__all__ = [
    "check_org_permission",
    "check_org_role",
    "current_membership",
    "denied_response",
    "require_org_permission",
    "require_org_role",
]

P = ParamSpec("P")
R = TypeVar("R")
UserCallable = Callable[[], str | None]

# keys of the request's WSGI environ (a server's own keys have a dotted prefix too, as PEP 3333 asks)
_MEMO = "clerk_org_cache.authz.memo"
_MEMBERSHIP = "clerk_org_cache.authz.membership"


def require_org_role(
    *roles: str,
    org_param: str = "org_id",
    user: UserCallable,
    memberships: Lookup = get_cached_user_org_memberships,
) -> Callable[[Callable[P, R]], Callable[P, R | tuple[Response, int]]]:
    """Run the view only for a member of the route's org with one of ``roles`` (none: any member).

    ``user`` returns the signed-in user's id or None; ``memberships`` looks a user's
    memberships up (default: the process-wide cache).
    """
    allowed = allowed_roles(roles)
    return _guard(org_param, lambda org_ref: check_org_role(org_ref, *allowed, user=user, memberships=memberships))


def require_org_permission(
    permission: str,
    *,
    org_param: str = "org_id",
    user: UserCallable,
    memberships: Lookup = get_cached_user_org_memberships,
) -> Callable[[Callable[P, R]], Callable[P, R | tuple[Response, int]]]:
    """Run the view only for a member of the route's org whose permissions include ``permission``.

    ``permission`` is Clerk's key, ``org:<feature>:<action>`` (``org:`` may be left out, as
    Clerk's ``has()`` allows); a malformed one raises ValueError here, at start-up. A system
    permission (``org:sys_*``) is checked like any other. ``user`` and ``memberships`` are
    as for `require_org_role`.
    """
    key = permission_key(permission)
    return _guard(org_param, lambda org_ref: check_org_permission(org_ref, key, user=user, memberships=memberships))


def _guard(
    org_param: str, check: Callable[[object], Membership]
) -> Callable[[Callable[P, R]], Callable[P, R | tuple[Response, int]]]:
    """The decorator: ``check`` the route's org before the view, and answer a refusal instead of it."""

    def decorate(view: Callable[P, R]) -> Callable[P, R | tuple[Response, int]]:
        @functools.wraps(view)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R | tuple[Response, int]:
            try:
                check(_route_org(org_param))
            except Denied as denied:
                return denied_response(denied)
            return view(*args, **kwargs)

        return checked

    return decorate


def check_org_role(
    org_ref: object,
    *roles: str,
    user: UserCallable,
    memberships: Lookup = get_cached_user_org_memberships,
) -> Membership:
    """The same check inside a view (e.g. for a second org); raises Denied.

    Register `denied_response` for Denied (``app.register_error_handler``) to answer
    it as the decorator does.
    """
    environ = _request_environ()
    membership = authorize(_memo(environ), user(), org_ref, roles, memberships)
    environ[_MEMBERSHIP] = membership
    return membership


def check_org_permission(
    org_ref: object,
    permission: str,
    *,
    user: UserCallable,
    memberships: Lookup = get_cached_user_org_memberships,
) -> Membership:
    """`check_org_role`'s twin for a permission; raises Denied (403 ``permission_not_allowed``
    for a member without it), or ValueError for a malformed key."""
    environ = _request_environ()
    membership = authorize_permission(_memo(environ), user(), org_ref, permission, memberships)
    environ[_MEMBERSHIP] = membership
    return membership


def current_membership() -> Membership:
    """The membership the last passed check of this request resolved.

    Raises RuntimeError when no check has passed in this request (an unguarded view),
    or outside a request: never another request's membership.
    """
    membership = _request_environ().get(_MEMBERSHIP)
    if not isinstance(membership, Membership):
        raise RuntimeError("no org check has passed in this request (use @require_org_role or @require_org_permission)")
    return membership


def denied_response(denied: Denied) -> tuple[Response, int]:
    """The JSON answer to a refusal, with its headers (`Denied.headers`)."""
    response = jsonify(denied.body())
    response.headers.update(denied.headers())
    return response, denied.status


def _route_org(org_param: str) -> object:
    values = request.view_args or {}
    if org_param not in values:
        raise LookupError(f"the route has no <{org_param}> (the org check's org_param)")
    return values[org_param]


def _request_environ() -> dict[str, object]:
    """The WSGI environ of the request being handled: state that lives exactly as long as it."""
    if not has_request_context():
        raise RuntimeError("cache.authz.flask works inside a request only (no request is being handled)")
    environ: dict[str, object] = request.environ
    return environ


def _memo(environ: dict[str, object]) -> RequestMemo:
    memo = environ.get(_MEMO)
    if not isinstance(memo, RequestMemo):
        memo = environ[_MEMO] = RequestMemo()
    return memo
