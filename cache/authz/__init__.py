"""Authorization decisions on cached memberships, free of any web framework.

"May this user act on this org with one of these roles?" is asked on nearly every
request, so it is answered from the cached memberships alone. The adapters
(`cache.authz.flask`, `cache.authz.fastapi`, `cache.authz.django`, `cache.authz.drf`) only
turn a `Denied` into an HTTP answer (its `Denied.body` and `Denied.headers`); every
decision is made here, in this order:

- 401 ``unauthenticated``: no signed-in user (the app's user callable gave None), or a
  user id that is not a Clerk id.
- 404 ``not_found``: the URL's org is neither an org id nor a possible slug. It names no
  org anyone could belong to, so it is a wrong URL; it is decided before any lookup
  (no Redis read, no Clerk call) and is the same for every user, so it reveals nothing.
- 503 ``authorization_unavailable``: the lookup failed (Clerk unreachable, rate-limited
  or refusing our key, with nothing cached). We fail closed: no access, no 500 with a
  traceback, and the client may retry.
- 403 ``not_a_member``: no membership in that org (also when no such org exists, so a
  non-member cannot tell the two apart).
- 403 ``role_not_allowed``: a member whose role is not one of those required.
- 403 ``permission_not_allowed``: a member whose cached ``Membership.permissions`` lack the
  permission required (a permission check instead of a role check; the order before it is the same).

One 404 comes after the lookup: a slug that two of the user's cached orgs carry (an
org renamed onto a slug another of theirs gave up, before the rename's event is in).
It names no org for sure, so it is refused rather than matched to the first one.

An org reference is an org id or a slug. A reference shaped like an id (``org_`` +
letters and digits) is matched against ids only, never slugs, so an org whose slug
looks like another org's id cannot stand in for it; one that starts with ``org_`` but
is not an id is malformed. Slugs are matched against the cached ``organization_slug``,
so naming an org by slug costs no Clerk call.

Roles are opaque strings compared exactly (``org:admin``, ``org:member``,
``org:<custom>``); instances still on the legacy ``admin``/``basic_member`` list both
spellings. No role at all means any member.

Permissions are checked as Clerk's ``has({permission})`` checks them: the key is
normalised with Clerk's ``prefixWithOrg`` (``invoices:create`` is ``org:invoices:create``)
and must then be one of the membership's ``permissions``, exactly (no wildcards, no
hierarchy). System permissions (``org:sys_*``) are in the cached membership like any
other, so they are checked the same way, for any of the user's orgs. A key that is not
``org:<feature>:<action>`` is a ValueError when the check is built, so a typo fails at
start-up instead of refusing everyone.

`RequestMemo` remembers one request's lookups (answers and failures), so ten checks
in one request cost one lookup.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from types import CoroutineType

from cache.contract import Membership, check_permission_key, check_user_id, is_org_id
from cache.errors import CacheUnavailable, ClerkCacheError, ClerkError, Denied, InvalidId

__all__ = [
    "AsyncLookup",
    "Denied",
    "Lookup",
    "RequestMemo",
    "allowed_roles",
    "authorize",
    "authorize_async",
    "authorize_permission",
    "authorize_permission_async",
    "check_org_ref",
    "decide",
    "decide_permission",
    "permission_allows",
    "permission_key",
    "require_user",
    "resolve_org",
    "role_allows",
]

log = logging.getLogger(__name__)

Lookup = Callable[[str], list[Membership]]
AsyncLookup = Callable[[str], Awaitable[list[Membership]]]
Roles = str | Iterable[str]

_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_ORG_PREFIXES = re.compile(r"^(org:)*")  # Clerk's prefixWithOrg: s.replace(/^(org:)*/, 'org:')


def allowed_roles(roles: Roles) -> frozenset[str]:
    """The roles as a set (one string or several); empty means any member.

    Raises ValueError for an empty or non-string role, so a typo fails at start-up.
    """
    items = (roles,) if isinstance(roles, str) else tuple(roles)
    for role in items:
        if not isinstance(role, str) or not role:
            raise ValueError(f"a role must be a non-empty string, not {role!r}")
    return frozenset(items)


def role_allows(membership: Membership, roles: Roles) -> bool:
    """Whether the membership's role is one of ``roles`` (no roles: any member)."""
    allowed = roles if isinstance(roles, frozenset) else allowed_roles(roles)  # a frozenset: checked when built
    return not allowed or membership.role in allowed


def permission_key(permission: object) -> str:
    """The permission key as Clerk's ``has()`` compares it: ``org:`` prefixed once (``prefixWithOrg``).

    Raises ValueError for anything that is not then ``org:<feature>:<action>`` (an empty
    string, a role key, a typo), so a check built with it fails at start-up.
    """
    if not isinstance(permission, str) or not permission:
        raise ValueError(f"a permission must be a non-empty string, not {permission!r}")
    return _permission_key(permission)


@functools.lru_cache(maxsize=256)
def _permission_key(permission: str) -> str:
    """Memoized: an app checks a handful of keys, on every request (a ValueError is not cached)."""
    try:
        return check_permission_key(_ORG_PREFIXES.sub("org:", permission, count=1))
    except InvalidId:
        raise ValueError(f"not a Clerk permission key (expected org:<feature>:<action>): {permission!r}") from None


def permission_allows(membership: Membership, permission: str) -> bool:
    """Whether the membership's permissions include ``permission`` (normalised), exactly."""
    return permission_key(permission) in membership.permissions


def check_org_ref(org_ref: object) -> str:
    """Return ``org_ref`` if it is an org id or a possible slug, else raise Denied (404)."""
    if isinstance(org_ref, str):
        if org_ref.startswith("org_"):
            if is_org_id(org_ref):
                return org_ref
        elif _SLUG.fullmatch(org_ref):
            return org_ref
    raise Denied(404, "not_found", "no such organization")


def resolve_org(memberships: Iterable[Membership], org_ref: str) -> Membership | None:
    """The membership ``org_ref`` names, by id (``org_…``) or else by slug; None if none does.

    Only the given (cached) memberships are searched: no Clerk call. A malformed
    reference resolves to nothing. A slug that two of them carry raises Denied (404):
    the URL does not say which org it means.
    """
    if is_org_id(org_ref):
        for membership in memberships:  # a loop, not next() of a generator: half the cost, on every request
            if membership.organization_id == org_ref:
                return membership
        return None
    if org_ref.startswith("org_") or not _SLUG.fullmatch(org_ref):
        return None
    named = [m for m in memberships if m.organization_slug == org_ref]
    if len(named) > 1:
        # two of the user's orgs carry the slug (a rename whose event is not in yet): which one the URL
        # means cannot be known, and the first match may be the wrong org, so it names none
        raise Denied(404, "not_found", "more than one of your organizations has this slug; use its id")
    return named[0] if named else None


def require_user(user_id: object) -> str:
    """Return the signed-in user's Clerk id, else raise Denied (401)."""
    if user_id is None:
        raise Denied(401, "unauthenticated", "sign in first")
    try:
        return check_user_id(user_id)
    except InvalidId:
        log.warning("the app's user callable returned something that is not a Clerk user id")
        raise Denied(401, "unauthenticated", "the session does not name a Clerk user") from None


def _member(memberships: Iterable[Membership], org_ref: str) -> Membership:
    membership = resolve_org(memberships, org_ref)
    if membership is None:
        raise Denied(403, "not_a_member", "you are not a member of this organization")
    return membership


def decide(memberships: Iterable[Membership], org_ref: str, roles: Roles) -> Membership:
    """The user's membership in the org ``org_ref`` names, if its role is allowed; else raise Denied (403)."""
    membership = _member(memberships, org_ref)
    if not role_allows(membership, roles):
        raise Denied(403, "role_not_allowed", "your role in this organization does not allow this")
    return membership


def decide_permission(memberships: Iterable[Membership], org_ref: str, permission: str) -> Membership:
    """The user's membership in the org ``org_ref`` names, if it has ``permission``; else raise Denied (403)."""
    key = permission_key(permission)  # before the membership: a bad key is the app's bug, for every user
    membership = _member(memberships, org_ref)
    if key not in membership.permissions:
        raise Denied(403, "permission_not_allowed", "your permissions in this organization do not allow this")
    return membership


def _undecided(exc: ClerkCacheError) -> Denied:
    """A failed lookup: fail closed with 503 (logged, since an operator may have to act)."""
    log.warning("authorization undecided, the lookup failed: %s: %s", type(exc).__name__, exc)
    return Denied(503, "authorization_unavailable", "authorization cannot be decided now; try again")


class RequestMemo:
    """One request's membership lookups, so ten checks in one request cost one lookup.

    A failure is remembered too: the request's other checks answer 503 at once
    instead of waiting out Clerk's retries again. Keep exactly one per request, in
    state that dies with it (the adapters use the WSGI environ and the ASGI scope;
    never ``flask.g``, which an app context pushed at import shares between
    requests): a memo that outlives its request answers from before a revocation.
    """

    __slots__ = ("_answers", "_flights")  # one per request: no __dict__ to build

    def __init__(self) -> None:
        self._answers: dict[tuple[object, str], list[Membership] | Denied] = {}
        self._flights: dict[tuple[object, str], asyncio.Future[list[Membership]]] = {}

    def memberships(self, lookup: Lookup, user_id: str) -> list[Membership]:
        """``lookup(user_id)``, once per request; raises Denied (503) if it failed."""
        key = (lookup, user_id)
        if key not in self._answers:
            try:
                self._answers[key] = lookup(user_id)
            except (ClerkError, CacheUnavailable) as exc:
                self._answers[key] = _undecided(exc)
        answer = self._answers[key]
        if isinstance(answer, Denied):
            raise answer
        return answer

    async def memberships_async(self, lookup: AsyncLookup, user_id: str) -> list[Membership]:
        """``await lookup(user_id)``, once per request even when checks run concurrently.

        The first check looks up inline (no task, no extra loop turn: the usual request has one
        check) and publishes its answer to the checks that join it meanwhile. If that first check
        is cancelled, its lookup ends with it and a joiner still waiting looks up anew: a cancelled
        check never cancels another's answer.
        """
        key = (lookup, user_id)
        while (flight := self._flights.get(key)) is not None:
            try:
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not flight.cancelled() or (current is not None and current.cancelling()):
                    raise  # this check itself was cancelled
                # the check it joined was cancelled before it had the answer: look up anew
        # no lookup in flight: this check looks up, awaiting it here (not in a helper coroutine: the usual
        # request's path is one coroutine shorter)
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            pending = lookup(user_id)
            if type(pending) is not CoroutineType and not inspect.isawaitable(pending):  # a coroutine: no ABC check
                raise TypeError("memberships must be an async callable (wrap a sync one: asyncio.to_thread)")
            try:
                answer = await pending
            except (ClerkError, CacheUnavailable) as exc:
                raise _undecided(exc) from exc
        except asyncio.CancelledError:
            del self._flights[key]  # the next check looks up anew
            flight.cancel()
            raise
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: a flight nobody joined must not log "never retrieved"
            raise
        flight.set_result(answer)
        return answer


def authorize(memo: RequestMemo, user_id: object, org_ref: object, roles: Roles, lookup: Lookup) -> Membership:
    """The whole check, in the documented order; the membership, or raise Denied."""
    user = require_user(user_id)
    ref = check_org_ref(org_ref)
    return decide(memo.memberships(lookup, user), ref, roles)


async def authorize_async(
    memo: RequestMemo, user_id: object, org_ref: object, roles: Roles, lookup: AsyncLookup
) -> Membership:
    """`authorize` with an async lookup (``await cache.aio.get_cached_user_org_memberships``)."""
    user = require_user(user_id)
    ref = check_org_ref(org_ref)
    return decide(await memo.memberships_async(lookup, user), ref, roles)


def authorize_permission(
    memo: RequestMemo, user_id: object, org_ref: object, permission: str, lookup: Lookup
) -> Membership:
    """`authorize` for a permission: the same order, then 403 ``permission_not_allowed``."""
    key = permission_key(permission)
    user = require_user(user_id)
    ref = check_org_ref(org_ref)
    return decide_permission(memo.memberships(lookup, user), ref, key)


async def authorize_permission_async(
    memo: RequestMemo, user_id: object, org_ref: object, permission: str, lookup: AsyncLookup
) -> Membership:
    """`authorize_permission` with an async lookup."""
    key = permission_key(permission)
    user = require_user(user_id)
    ref = check_org_ref(org_ref)
    return decide_permission(await memo.memberships_async(lookup, user), ref, key)
