"""Django: ``@require_org_role("org:admin", user=...)`` or ``@require_org_permission("org:invoices:create",
user=...)`` on views whose URL names the org.

Importing this module needs Django, which is not a dependency of this package (the
``django`` extra: ``pip install 'clerk-org-cache[django]'``). The rest of ``cache``
does not import it. DRF's permission classes are `cache.authz.drf.OrgRolePermission` and
`cache.authz.drf.OrgPermission`.

The decorators work on function views, on class-based views through Django's
``method_decorator``, and on async views (``async def``; detected and marked as Django
detects and marks its own decorators, with asgiref's ``iscoroutinefunction`` and
``markcoroutinefunction``). The org comes from the URL kwarg ``org_kwarg`` (an org id
or a slug), the user id from a callable the app provides, given the request: verifying
Clerk's session token stays the app's job (``examples/django_app/`` shows it). A
refusal is answered as JSON ``{"error": <code>, "message": <text>}`` with the status
`cache.authz` documents (401 with ``WWW-Authenticate: Bearer``, 404, 403, or 503 when
the lookup fails); the view then does not run.

``memberships`` looks a user's memberships up. For a sync view it is a sync lookup (by
default the process-wide `cache.get_cached_user_org_memberships`); for an async view an
async one (by default `cache.aio.get_cached_user_org_memberships`, this event loop's
cache), awaited so the loop is never blocked. Under an ASGI server async views run on
the server's loop; under WSGI Django runs each in a one-off loop, which then builds its
own async clients: serve async views with an ASGI server.

Lookups are remembered for the request, so stacked decorators, DRF permissions and
`check_org_role` or `check_org_permission` calls in one request cost one lookup. The view reads the membership
the check resolved with `current_membership` (use its ``organization_id``, not the
URL's value, which may be a slug).

Both live on the request's ``HttpRequest`` object, which Django makes for every request
(WSGI and ASGI alike) and drops with it; never in thread-locals, a module or anything
else that outlives the request: such a memo would answer a demoted admin's later
requests from before the 2xx.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin

from cache import get_cached_user_org_memberships
from cache.authz import (
    AsyncLookup,
    Denied,
    Lookup,
    RequestMemo,
    Roles,
    allowed_roles,
    authorize,
    authorize_async,
    authorize_permission,
    authorize_permission_async,
    permission_key,
)
from cache.contract import Membership

__all__ = [
    "DeniedMiddleware",
    "acheck_org_permission",
    "acheck_org_role",
    "check_org_permission",
    "check_org_role",
    "current_membership",
    "denied_response",
    "require_org_permission",
    "require_org_role",
]

V = TypeVar("V", bound=Callable[..., Any])
UserCallable = Callable[[HttpRequest], Any]  # -> str | None (or an awaitable of it, in async views)

# attributes of the HttpRequest (names no Django or DRF attribute has, and no app would pick)
_MEMO = "_clerk_org_cache.authz.memo"
_MEMBERSHIP = "_clerk_org_cache.authz.membership"


def require_org_role(
    *roles: str,
    org_kwarg: str = "org_id",
    user: UserCallable,
    memberships: Lookup | AsyncLookup | None = None,
) -> Callable[[V], V]:
    """Run the view only for a member of the URL's org with one of ``roles`` (none: any member).

    ``user`` is given the ``HttpRequest`` and returns the signed-in user's id or None.
    ``memberships`` defaults to the process-wide cache (`cache.aio`'s for async views).
    On a class-based view, use ``method_decorator(require_org_role(...), name="dispatch")``
    (on an async one, name its async handler, e.g. ``name="get"``).
    """
    allowed = allowed_roles(roles)  # the frozenset: checked once, here, not on every request
    # partials (called from C), not closures: the request path is one Python frame shorter
    return _guard(
        org_kwarg,
        memberships,
        functools.partial(_check_role, allowed, user),
        functools.partial(_acheck_role, allowed, user),
    )


def require_org_permission(
    permission: str,
    *,
    org_kwarg: str = "org_id",
    user: UserCallable,
    memberships: Lookup | AsyncLookup | None = None,
) -> Callable[[V], V]:
    """Run the view only for a member of the URL's org whose permissions include ``permission``.

    ``permission`` is Clerk's key, ``org:<feature>:<action>`` (``org:`` may be left out, as
    Clerk's ``has()`` allows); a malformed one raises ValueError here, at start-up. A system
    permission (``org:sys_*``) is checked like any other. The rest is as for `require_org_role`:
    function views, class-based views through ``method_decorator``, async views.
    """
    key = permission_key(permission)
    return _guard(
        org_kwarg,
        memberships,
        functools.partial(_check_permission, key, user),
        functools.partial(_acheck_permission, key, user),
    )


def _guard(
    org_kwarg: str,
    memberships: Lookup | AsyncLookup | None,
    sync_check: Callable[[HttpRequest, object, Lookup], Membership],
    async_check: Callable[[HttpRequest, object, AsyncLookup], Awaitable[Membership]],
) -> Callable[[V], V]:
    """The decorator: the check before the view, the sync or the async one as the view is; a refusal
    is answered instead of the view."""

    def decorate(view: V) -> V:
        if iscoroutinefunction(view):
            alookup = cast(AsyncLookup, memberships or _default_async_lookup)

            @functools.wraps(view)
            async def checked_async(request: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    await async_check(_http_request(request), _url_org(kwargs, org_kwarg), alookup)
                except Denied as denied:
                    return denied_response(denied)
                return await view(request, *args, **kwargs)

            return cast(V, markcoroutinefunction(checked_async))

        lookup = cast(Lookup, memberships or get_cached_user_org_memberships)
        # said at the request, not here: method_decorator also decorates a sync stand-in for an async method
        misfit = iscoroutinefunction(lookup)

        @functools.wraps(view)
        def checked(request: Any, *args: Any, **kwargs: Any) -> Any:
            if misfit:
                raise TypeError(f"{view!r} is a sync view: give it a sync lookup, not {lookup!r}")
            try:
                sync_check(_http_request(request), _url_org(kwargs, org_kwarg), lookup)
            except Denied as denied:
                return denied_response(denied)
            return view(request, *args, **kwargs)

        return cast(V, checked)

    return decorate


def check_org_role(
    request: HttpRequest,
    org_ref: object,
    *roles: str,
    user: UserCallable,
    memberships: Lookup = get_cached_user_org_memberships,
) -> Membership:
    """The same check inside a view (e.g. for a second org); raises Denied.

    Add `DeniedMiddleware` to ``MIDDLEWARE`` to answer an uncaught Denied as the
    decorator does (else Django answers it with a 500).
    """
    return _check_role(roles, user, _http_request(request), org_ref, memberships)


def _check_role(roles: Roles, user: UserCallable, http: HttpRequest, org_ref: object, lookup: Lookup) -> Membership:
    user_id = user(http)
    if _awaitable(user_id):
        _refuse_in_sync_view(user_id, "acheck_org_role")
    return _resolved(http, authorize(_memo(http), user_id, org_ref, roles, lookup))


async def _acheck_role(
    roles: Roles, user: UserCallable, http: HttpRequest, org_ref: object, lookup: AsyncLookup
) -> Membership:
    user_id = user(http)
    if _awaitable(user_id):
        user_id = await user_id
    return _resolved(http, await authorize_async(_memo(http), user_id, org_ref, roles, lookup))


def _check_permission(key: str, user: UserCallable, http: HttpRequest, org_ref: object, lookup: Lookup) -> Membership:
    user_id = user(http)
    if _awaitable(user_id):
        _refuse_in_sync_view(user_id, "acheck_org_permission")
    return _resolved(http, authorize_permission(_memo(http), user_id, org_ref, key, lookup))


async def _acheck_permission(
    key: str, user: UserCallable, http: HttpRequest, org_ref: object, lookup: AsyncLookup
) -> Membership:
    user_id = user(http)
    if _awaitable(user_id):
        user_id = await user_id
    return _resolved(http, await authorize_permission_async(_memo(http), user_id, org_ref, key, lookup))


def _refuse_in_sync_view(pending: object, instead: str) -> NoReturn:
    close = getattr(pending, "close", None)
    if callable(close):
        close()  # a coroutine never awaited: closed, so Python does not warn of it later, elsewhere
    raise TypeError(f"the user callable returned an awaitable: use {instead} in an async view")


def _awaitable(user_id: object) -> bool:
    """Whether the user callable gave an awaitable; a str or None (what it gives) skips the ABC check."""
    return user_id is not None and type(user_id) is not str and inspect.isawaitable(user_id)


def _resolved(http: HttpRequest, membership: Membership) -> Membership:
    """The check passed: the membership is the request's, for `current_membership`."""
    setattr(http, _MEMBERSHIP, membership)
    return membership


async def acheck_org_role(
    request: HttpRequest,
    org_ref: object,
    *roles: str,
    user: UserCallable,
    memberships: AsyncLookup | None = None,
) -> Membership:
    """`check_org_role` for async views: awaits an async lookup (and ``user``, if it returns an awaitable)."""
    return await _acheck_role(roles, user, _http_request(request), org_ref, memberships or _default_async_lookup)


def check_org_permission(
    request: HttpRequest,
    org_ref: object,
    permission: str,
    *,
    user: UserCallable,
    memberships: Lookup = get_cached_user_org_memberships,
) -> Membership:
    """`check_org_role`'s twin for a permission; raises Denied (403 ``permission_not_allowed`` for a
    member without it), or ValueError for a malformed key."""
    return _check_permission(permission, user, _http_request(request), org_ref, memberships)


async def acheck_org_permission(
    request: HttpRequest,
    org_ref: object,
    permission: str,
    *,
    user: UserCallable,
    memberships: AsyncLookup | None = None,
) -> Membership:
    """`check_org_permission` for async views: awaits an async lookup (and ``user``, if it returns an awaitable)."""
    return await _acheck_permission(
        permission, user, _http_request(request), org_ref, memberships or _default_async_lookup
    )


def current_membership(request: HttpRequest) -> Membership:
    """The membership the last passed check of this request resolved.

    Raises RuntimeError when no check has passed in this request (an unguarded view):
    never another request's membership.
    """
    membership = getattr(_http_request(request), _MEMBERSHIP, None)
    if not isinstance(membership, Membership):
        raise RuntimeError("no org check has passed in this request (use @require_org_role or @require_org_permission)")
    return membership


def denied_response(denied: Denied) -> JsonResponse:
    """The JSON answer to a refusal, with its headers (`Denied.headers`)."""
    return JsonResponse(denied.body(), status=denied.status, headers=denied.headers())


class DeniedMiddleware(MiddlewareMixin):
    """Answers a Denied a view let through (from `check_org_role`) as `denied_response`, sync or async."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return denied_response(exception) if isinstance(exception, Denied) else None


def _memo(http: HttpRequest) -> RequestMemo:
    memo = getattr(http, _MEMO, None)
    if not isinstance(memo, RequestMemo):
        memo = RequestMemo()
        setattr(http, _MEMO, memo)
    return memo


def _http_request(request: object) -> HttpRequest:
    """The ``HttpRequest`` itself, also when given DRF's Request (which wraps it as ``_request``)."""
    inner = getattr(request, "_request", None)
    if isinstance(inner, HttpRequest):
        return inner
    if isinstance(request, HttpRequest):
        return request
    raise TypeError(
        f"expected the view's request, got {request!r}: on a class-based view, "
        "use django.utils.decorators.method_decorator(require_org_role(...), name=...)"
    )


def _url_org(kwargs: dict[str, Any], org_kwarg: str) -> object:
    if org_kwarg not in kwargs:
        raise LookupError(f"the URL pattern has no <{org_kwarg}> (the org check's org_kwarg)")
    return kwargs[org_kwarg]


async def _default_async_lookup(user_id: str) -> list[Membership]:
    from cache.aio import get_cached_user_org_memberships as lookup  # needs httpx: only when no lookup was given

    return await lookup(user_id)
