"""cache.authz.django and cache.authz.drf in-process, through Django's own test clients, on the session's
private Redis and the Clerk stand-in: what the door tests (tests/test_door.py, real servers, every view
kind, every refusal) do not show one by one: DRF's operators, one lookup for all of a request's checks,
a check inside a view, async views on the event loop, and misuse refused with a clear error.

The user id comes from an ``X-User`` header: verifying Clerk's session token is the app's job (the
example does it, at the door). Django is configured here once, for the session: no other test module
runs Django in-process.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
import types
from collections.abc import Callable, Iterator
from typing import Any

import django
import pytest
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django.utils.decorators import method_decorator
from django.views import View
from redis import Redis

import cache.aio
from cache import MembershipCache
from cache.aio import AsyncClerkClient, AsyncMembershipCache
from cache.authz import django as django_authz
from cache.authz.drf import OrgPermission, OrgRolePermission
from cache.connections import async_cache_redis
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from tests.support import ALICE, BOB, CLERK_KEY, make_cache, orgs_with_member

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=["cache.authz.django.DeniedMiddleware"],
        DATABASES={},
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": [],
            "UNAUTHENTICATED_USER": None,
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        },
    )
    django.setup()
urlpatterns: list[Any] = []  # each test serves its own (`serving`)

CAROL = "user_2carolbilling000000001"
DAVE = "user_2davenomember00000001"
DRF_DEFAULT_403 = {"detail": "You do not have permission to perform this action."}
UNAUTHENTICATED = {"error": "unauthenticated", "message": "sign in first"}
UNAVAILABLE = {"error": "authorization_unavailable", "message": "authorization cannot be decided now; try again"}


def user(request: HttpRequest) -> str | None:
    return request.headers.get("X-User")


def shown(request: HttpRequest, **route: str) -> JsonResponse:
    membership = django_authz.current_membership(request)
    return JsonResponse({"org": membership.organization_id, "role": membership.role})


async def shown_async(request: HttpRequest, **route: str) -> JsonResponse:
    return shown(request)


def drf_view(*permissions: Any, around: Callable[[Any], Any] | None = None) -> Callable[..., Any]:
    """A DRF APIView showing the membership, with these permission classes (and ``around`` on its get)."""
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class Shown(APIView):
        permission_classes = permissions

        def get(self, request: Any, **route: str) -> Response:
            try:
                membership = django_authz.current_membership(request)
            except RuntimeError:  # allowed by ~: no check passed
                return Response({"org": None})
            return Response({"org": membership.organization_id, "role": membership.role})

    if around is not None:
        Shown.get = method_decorator(around)(Shown.get)  # type: ignore[method-assign]
    return Shown.as_view()


@pytest.fixture
def serving() -> Iterator[Callable[..., None]]:
    """``serving(*patterns)``: the URLs the test clients answer for the rest of the test."""
    overrides: list[override_settings] = []

    def serve(*patterns: Any) -> None:
        module = types.ModuleType(f"urls_{secrets.token_hex(4)}")
        module.urlpatterns = list(patterns)  # type: ignore[attr-defined]
        overrides.append(override_settings(ROOT_URLCONF=module))
        overrides[-1].enable()

    yield serve
    for override in reversed(overrides):
        override.disable()


def answer(response: Any) -> tuple[int, Any]:
    return response.status_code, response.json()


def get(path_: str, who: str | None) -> tuple[int, Any]:
    return answer(Client().get(path_, headers={"X-User": who} if who else {}))


@pytest.fixture
def acme(clerk: ClerkStandIn) -> str:
    """Acme: Alice admin, Bob member, Carol org:billing; Dave is in another org."""
    org = clerk.create_org("Acme", slug="acme")["data"]["id"]
    for who, role in ((ALICE, "org:admin"), (BOB, "org:member"), (CAROL, "org:billing")):
        clerk.add_membership(who, org, role)
    orgs_with_member(clerk, DAVE, "Globex")
    return org


def lookups(backing: Any) -> int:
    stats = backing.stats.snapshot()
    return int(stats["hits"] + stats["misses"] + stats["redis_fallbacks"])


# -- DRF's operators -----------------------------------------------------------------------------------


def permissions(lookup: Callable[[str], Any]) -> tuple[type[Any], type[Any], type[Any]]:
    def make(*roles: str) -> type[Any]:
        return OrgRolePermission.with_roles(*roles, user=user, memberships=lookup)

    return make("org:admin"), make("org:billing"), make()


def test_drf_operators_combine_the_decisions(serving: Callable[..., None], cache: MembershipCache, acme: str) -> None:
    admin, billing, member = permissions(cache.get_memberships)
    serving(
        path("or/<str:org_id>", drf_view(admin | billing)),
        path("and-not/<str:org_id>", drf_view(member & ~admin)),
        path("not/<str:org_id>", drf_view(~admin)),
    )

    def ok(role: str) -> tuple[int, Any]:
        return 200, {"org": acme, "role": role}

    assert get(f"/or/{acme}", ALICE) == ok("org:admin")
    assert get(f"/or/{acme}", CAROL) == ok("org:billing")
    assert get(f"/or/{acme}", BOB) == (403, DRF_DEFAULT_403)  # under an operator: DRF's own body
    assert get(f"/or/{acme}", DAVE) == (403, DRF_DEFAULT_403)
    assert get(f"/and-not/{acme}", BOB) == ok("org:member")
    assert get(f"/and-not/{acme}", CAROL) == ok("org:billing")
    assert get(f"/and-not/{acme}", ALICE)[0] == 403
    assert get(f"/and-not/{acme}", DAVE)[0] == 403
    assert get(f"/not/{acme}", BOB) == (200, {"org": None})  # no check passed, so no current membership
    assert get(f"/not/{acme}", ALICE) == (403, DRF_DEFAULT_403)
    assert get("/not/acme", DAVE) == (200, {"org": None})  # "not an admin of it": non-members too, as documented


def test_no_operator_turns_an_undecided_check_into_access(
    serving: Callable[..., None], redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn, acme: str
) -> None:
    cache = make_cache(redis_server.url, clerk.url, max_attempts=1)  # a failed read is final at once
    admin, billing, _ = permissions(cache.get_memberships)
    serving(path("not/<str:org_id>", drf_view(~admin)), path("or/<str:org_id>", drf_view(admin | billing)))

    for view in ("not", "or"):
        response = Client().get(f"/{view}/{acme}")  # no user
        assert (answer(response), response.headers["WWW-Authenticate"]) == ((401, UNAUTHENTICATED), "Bearer")
        assert get(f"/{view}/org_bad-chars", BOB) == (404, {"error": "not_found", "message": "no such organization"})
    clerk.fail_next(100_000, status=500)  # nothing is cached for Bob yet, and Clerk cannot be read
    try:
        assert get(f"/not/{acme}", BOB) == (503, UNAVAILABLE)
        assert get(f"/or/{acme}", BOB) == (503, UNAVAILABLE)
    finally:
        clerk.clear_failures()
    assert get(f"/not/{acme}", BOB) == (200, {"org": None})


# -- one lookup per request --------------------------------------------------------------------------------


def test_all_of_a_request_s_checks_cost_one_lookup(
    serving: Callable[..., None], cache: MembershipCache, clerk: ClerkStandIn, acme: str
) -> None:
    """Ten stacked decorators; or three DRF permissions, a decorator on the handler and a check inside it."""
    lookup = cache.get_memberships
    admin, _, member = permissions(lookup)
    decorator = django_authz.require_org_role(user=user, memberships=lookup)
    ten: Callable[..., Any] = shown
    for _ in range(10):
        ten = decorator(ten)

    def checks_inside(view: Callable[..., Any]) -> Callable[..., Any]:
        def checked(request: Any, *args: Any, **kwargs: Any) -> Any:
            django_authz.check_org_role(request, kwargs["org_id"], "org:admin", user=user, memberships=lookup)
            return view(request, *args, **kwargs)

        return decorator(checked)

    serving(
        path("ten/<str:org_id>", ten),
        path("drf/<str:org_id>", drf_view(member, admin, member & admin, around=checks_inside)),
    )

    for page in ("ten", "drf"):
        cache.invalidate(ALICE)
        before = cache.stats.snapshot()
        assert get(f"/{page}/{acme}", ALICE) == (200, {"org": acme, "role": "org:admin"})  # cold
        assert get(f"/{page}/acme", ALICE) == (200, {"org": acme, "role": "org:admin"})  # warm
        after = cache.stats.snapshot()
        assert (after["misses"] - before["misses"], after["hits"] - before["hits"]) == (1, 1), page
    assert clerk.call_count("/v1/users/") == 2  # one read per cold request


def test_a_check_inside_a_view_and_a_refusal_it_lets_through(
    serving: Callable[..., None], cache: MembershipCache, clerk: ClerkStandIn, acme: str
) -> None:
    lookup = cache.get_memberships
    (globex,) = orgs_with_member(clerk, ALICE, "Globex")

    @django_authz.require_org_role(user=user, memberships=lookup)
    def two_orgs(request: HttpRequest, org_id: str, other: str) -> JsonResponse:
        second = django_authz.check_org_role(request, other, user=user, memberships=lookup)
        return JsonResponse(
            {"orgs": [django_authz.current_membership(request).organization_id, org_id, second.organization_id]}
        )

    serving(path("orgs/<str:org_id>/and/<str:other>", two_orgs))

    assert get(f"/orgs/{acme}/and/{globex}", ALICE) == (200, {"orgs": [globex, acme, globex]})
    assert lookups(cache) == 1
    refused = get(f"/orgs/{acme}/and/initech", ALICE)  # Denied from the view: DeniedMiddleware answers it
    assert refused == (403, {"error": "not_a_member", "message": "you are not a member of this organization"})


def test_the_decorator_uses_the_process_wide_cache_by_default(
    serving: Callable[..., None], cache: MembershipCache, acme: str
) -> None:
    """The ``cache`` fixture installed ``cache`` as the default: no ``memberships=`` needed."""
    serving(path("orgs/<str:org_id>", django_authz.require_org_role("org:admin", user=user)(shown)))

    assert get(f"/orgs/{acme}", ALICE) == (200, {"org": acme, "role": "org:admin"})
    assert cache.stats.snapshot()["misses"] == 1


# -- permissions -----------------------------------------------------------------------------------------

PERMISSION_NOT_ALLOWED = {
    "error": "permission_not_allowed",
    "message": "your permissions in this organization do not allow this",
}


def test_permission_checks_in_function_and_class_based_views_and_drf(
    serving: Callable[..., None], cache: MembershipCache, acme: str
) -> None:
    """Carol's org:billing has org:billing:manage (the stand-in's custom role); Alice's org:admin has the
    system permissions only, and Bob's org:member org:sys_memberships:read; Dave is in no such org."""
    lookup = cache.get_memberships
    invoices = django_authz.require_org_permission("billing:manage", user=user, memberships=lookup)

    @method_decorator(invoices, name="dispatch")
    class Invoices(View):
        def get(self, request: HttpRequest, org_id: str) -> JsonResponse:
            return shown(request)

    drf_invoices = OrgPermission.with_permission("org:billing:manage", user=user, memberships=lookup)
    serving(
        path("fn/<str:org_id>", invoices(shown)),
        path("cbv/<str:org_id>", Invoices.as_view()),
        path("drf/<str:org_id>", drf_view(drf_invoices)),
        path(
            "members/<str:org_id>",
            django_authz.require_org_permission("org:sys_memberships:manage", user=user, memberships=lookup)(shown),
        ),
    )

    for page in ("fn", "cbv", "drf"):
        assert get(f"/{page}/acme", CAROL) == (200, {"org": acme, "role": "org:billing"}), page
        assert get(f"/{page}/{acme}", ALICE) == (403, PERMISSION_NOT_ALLOWED), page
        assert get(f"/{page}/{acme}", DAVE)[1]["error"] == "not_a_member", page
        assert get(f"/{page}/{acme}", None) == (401, UNAUTHENTICATED), page
    assert get(f"/members/{acme}", ALICE) == (200, {"org": acme, "role": "org:admin"})  # a system permission
    assert get(f"/members/{acme}", BOB) == (403, PERMISSION_NOT_ALLOWED)


def test_drf_permission_classes_compose_and_share_the_request_s_lookup(
    serving: Callable[..., None], cache: MembershipCache, acme: str
) -> None:
    lookup = cache.get_memberships
    admin = OrgRolePermission.with_roles("org:admin", user=user, memberships=lookup)
    invoices = OrgPermission.with_permission("org:billing:manage", user=user, memberships=lookup)
    read = OrgPermission.with_permission("billing:read", user=user, memberships=lookup)
    serving(
        path("or/<str:org_id>", drf_view(admin | invoices)),
        path("and/<str:org_id>", drf_view(invoices & read, admin | read)),
    )

    assert get(f"/or/{acme}", ALICE) == (200, {"org": acme, "role": "org:admin"})
    assert get(f"/or/{acme}", CAROL) == (200, {"org": acme, "role": "org:billing"})
    assert get(f"/or/{acme}", BOB) == (403, DRF_DEFAULT_403)
    before = lookups(cache)
    assert get(f"/and/{acme}", CAROL) == (200, {"org": acme, "role": "org:billing"})
    assert lookups(cache) - before == 1  # four checks (a role, three permissions), one lookup
    assert get(f"/and/{acme}", ALICE) == (403, DRF_DEFAULT_403)
    assert OrgPermission.with_permission("billing:read", user=user).__name__ == "OrgPermission[org:billing:read]"


def test_permission_checks_inside_views_share_the_decorator_s_lookup(
    serving: Callable[..., None], cache: MembershipCache, clerk: ClerkStandIn, acme: str
) -> None:
    (globex,) = orgs_with_member(clerk, CAROL, "Globex", role="org:member")
    lookup = cache.get_memberships

    @django_authz.require_org_role("org:billing", user=user, memberships=lookup)
    def two_orgs(request: HttpRequest, org_id: str, other: str) -> JsonResponse:
        django_authz.check_org_permission(request, org_id, "org:billing:manage", user=user, memberships=lookup)
        second = django_authz.check_org_permission(request, other, "org:billing:read", user=user, memberships=lookup)
        return JsonResponse({"orgs": [org_id, second.organization_id]})

    serving(path("orgs/<str:org_id>/and/<str:other>", two_orgs))

    assert get(f"/orgs/{acme}/and/{acme}", CAROL) == (200, {"orgs": [acme, acme]})
    assert lookups(cache) == 1
    assert get(f"/orgs/{acme}/and/{globex}", CAROL) == (403, PERMISSION_NOT_ALLOWED)  # DeniedMiddleware


@pytest.mark.asyncio
async def test_async_permission_checks_await_cache_aio(
    serving: Callable[..., None], aio: AsyncMembershipCache, acme: str
) -> None:
    lookup = aio.get_memberships
    invoices = django_authz.require_org_permission("org:billing:manage", user=user, memberships=lookup)
    role = django_authz.require_org_role("org:billing", user=user, memberships=lookup)

    @method_decorator(invoices, name="get")
    class Invoices(View):
        async def get(self, request: HttpRequest, org_id: str) -> JsonResponse:
            return shown(request)

    async def inside(request: HttpRequest, org_id: str) -> JsonResponse:
        await django_authz.acheck_org_permission(request, org_id, "billing:read", user=user, memberships=lookup)
        return shown(request)

    assert iscoroutinefunction(invoices(shown_async)) and Invoices.view_is_async
    serving(
        path("fn/<str:org_id>", invoices(shown_async)),
        path("cbv/<str:org_id>", Invoices.as_view()),
        path("inside/<str:org_id>", role(inside)),
    )

    try:
        for page in ("fn", "cbv", "inside"):
            assert await aget(f"/{page}/acme", CAROL) == (200, {"org": acme, "role": "org:billing"}), page
        for page in ("fn", "cbv"):
            assert await aget(f"/{page}/{acme}", BOB) == (403, PERMISSION_NOT_ALLOWED), page
        before = lookups(aio)
        assert await aget(f"/inside/{acme}", CAROL) == (200, {"org": acme, "role": "org:billing"})
        assert lookups(aio) - before == 1  # the role check and the permission check inside
    finally:
        await aio.aclose()


@pytest.mark.parametrize("key", ["", "org:billing", "billing", "org:billing:*", "org:Billing:read", None])
def test_a_malformed_permission_key_fails_when_the_decorator_or_class_is_made(key: Any) -> None:
    with pytest.raises(ValueError):
        django_authz.require_org_permission(key, user=user)
    with pytest.raises(ValueError):
        OrgPermission.with_permission(key, user=user)


# -- misuse ----------------------------------------------------------------------------------------------


def test_misuse_is_refused_with_a_clear_error(serving: Callable[..., None], cache: MembershipCache, acme: str) -> None:
    decorator = django_authz.require_org_role(user=user, memberships=cache.get_memberships)

    class Undecorated(View):  # the decorator on a method, without method_decorator: it is given self
        @decorator
        def get(self, request: HttpRequest, org_id: str) -> JsonResponse:
            return shown(request)

    async def async_lookup(user_id: str) -> list[Any]:
        return []

    serving(
        path("async-lookup/<str:org_id>", django_authz.require_org_role(user=user, memberships=async_lookup)(shown)),
        path("cbv/<str:org_id>", Undecorated.as_view()),
        path("other-kwarg/<str:org>", decorator(shown)),
        path("drf/<str:org_id>", drf_view(OrgRolePermission)),
        path("drf-permission/<str:org_id>", drf_view(OrgPermission)),
    )
    with pytest.raises(TypeError, match="method_decorator"):
        Client().get(f"/cbv/{acme}", headers={"X-User": ALICE})
    with pytest.raises(LookupError, match="org_kwarg"):
        Client().get(f"/other-kwarg/{acme}", headers={"X-User": ALICE})
    with pytest.raises(TypeError, match="with_roles"):
        Client().get(f"/drf/{acme}", headers={"X-User": ALICE})
    with pytest.raises(TypeError, match="with_permission"):
        Client().get(f"/drf-permission/{acme}", headers={"X-User": ALICE})
    with pytest.raises(TypeError, match="sync view"):
        Client().get(f"/async-lookup/{acme}", headers={"X-User": ALICE})


# -- async views ------------------------------------------------------------------------------------------


@pytest.fixture
def aio(redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn) -> AsyncMembershipCache:
    """`cache.aio`'s cache on the session's Redis and the stand-in (its clients belong to the test's loop)."""
    return AsyncMembershipCache(async_cache_redis(redis_server.url), AsyncClerkClient(CLERK_KEY, clerk.url))


async def aget(path_: str, who: str | None) -> tuple[int, Any]:
    return answer(await AsyncClient().get(path_, headers={"X-User": who} if who else {}))


@pytest.mark.asyncio
async def test_async_views_are_marked_as_django_marks_them_and_checked(
    serving: Callable[..., None], aio: AsyncMembershipCache, acme: str
) -> None:
    admin = django_authz.require_org_role("org:admin", user=user, memberships=aio.get_memberships)
    member = django_authz.require_org_role(user=user, memberships=aio.get_memberships)
    ten: Callable[..., Any] = shown_async
    for _ in range(10):
        ten = member(ten)

    @method_decorator(admin, name="get")
    class Settings(View):
        async def get(self, request: HttpRequest, org_id: str) -> JsonResponse:
            return shown(request)

    sync_lookup = django_authz.require_org_role(user=user, memberships=lambda user_id: [])
    assert iscoroutinefunction(admin(shown_async)) and inspect.iscoroutinefunction(admin(shown_async))
    assert Settings.view_is_async
    serving(
        path("settings/<str:org_id>", admin(shown_async)),
        path("cbv/<str:org_id>", Settings.as_view()),
        path("ten/<str:org_id>", ten),
        path("sync-lookup/<str:org_id>", sync_lookup(shown_async)),
    )

    try:
        for page in ("settings", "cbv"):
            assert await aget(f"/{page}/acme", ALICE) == (200, {"org": acme, "role": "org:admin"})
            refused = await aget(f"/{page}/{acme}", BOB)
            assert refused == (
                403,
                {"error": "role_not_allowed", "message": "your role in this organization does not allow this"},
            )
        before = lookups(aio)
        assert await aget(f"/ten/{acme}", CAROL) == (200, {"org": acme, "role": "org:billing"})
        assert lookups(aio) - before == 1  # ten checks, one lookup
        with pytest.raises(TypeError, match=r"asyncio\.to_thread"):  # a sync lookup given to an async view
            await AsyncClient().get(f"/sync-lookup/{acme}", headers={"X-User": ALICE})
    finally:
        await aio.aclose()


@pytest.mark.asyncio
async def test_an_async_check_waiting_on_clerk_never_blocks_the_loop(
    serving: Callable[..., None], aio: AsyncMembershipCache, clerk: ClerkStandIn, acme: str
) -> None:
    """Alice's check waits on Clerk (held); Bob's request, on the same loop, is answered meanwhile."""
    serving(
        path(
            "orgs/<str:org_id>", django_authz.require_org_role(user=user, memberships=aio.get_memberships)(shown_async)
        )
    )
    await aio.get_memberships(BOB)  # cached
    gate = clerk.hold(ALICE)
    try:
        alice = asyncio.ensure_future(aget(f"/orgs/{acme}", ALICE))
        assert await asyncio.to_thread(gate.wait_arrived, 10)
        assert await asyncio.wait_for(aget(f"/orgs/{acme}", BOB), 10) == (200, {"org": acme, "role": "org:member"})
        assert not alice.done()
        gate.release()
        assert await alice == (200, {"org": acme, "role": "org:admin"})
    finally:
        gate.release()
        await aio.aclose()


@pytest.mark.asyncio
async def test_the_async_decorator_uses_cache_aio_s_default_cache(
    serving: Callable[..., None], aio: AsyncMembershipCache, acme: str
) -> None:
    serving(path("orgs/<str:org_id>", django_authz.require_org_role(user=user)(shown_async)))
    cache.aio.set_default_cache(aio)
    try:
        assert await aget(f"/orgs/{acme}", ALICE) == (200, {"org": acme, "role": "org:admin"})
    finally:
        cache.aio.set_default_cache(None)
        await aio.aclose()
    assert aio.stats.snapshot()["misses"] == 1


@pytest.mark.asyncio
async def test_a_user_callable_s_awaitable_is_awaited_in_async_views_and_refused_in_sync_ones(
    serving: Callable[..., None], aio: AsyncMembershipCache, cache: MembershipCache, acme: str
) -> None:
    """An app may verify the session asynchronously: an async view awaits the id; a sync one cannot."""

    async def async_user(request: HttpRequest) -> str | None:
        await asyncio.sleep(0)
        return user(request)

    admin = django_authz.require_org_role("org:admin", user=async_user, memberships=aio.get_memberships)
    billing = django_authz.require_org_permission(
        "org:billing:manage", user=async_user, memberships=aio.get_memberships
    )
    sync_admin = django_authz.require_org_role("org:admin", user=async_user, memberships=cache.get_memberships)
    sync_billing = django_authz.require_org_permission(
        "org:billing:manage", user=async_user, memberships=cache.get_memberships
    )
    serving(
        path("admin/<str:org_id>", admin(shown_async)),
        path("billing/<str:org_id>", billing(shown_async)),
        path("sync-admin/<str:org_id>", sync_admin(shown)),
        path("sync-billing/<str:org_id>", sync_billing(shown)),
    )
    try:
        assert await aget(f"/admin/{acme}", ALICE) == (200, {"org": acme, "role": "org:admin"})
        assert (await aget(f"/admin/{acme}", BOB))[1]["error"] == "role_not_allowed"
        assert await aget(f"/admin/{acme}", None) == (401, UNAUTHENTICATED)
        assert await aget(f"/billing/{acme}", CAROL) == (200, {"org": acme, "role": "org:billing"})
        assert (await aget(f"/billing/{acme}", ALICE))[1]["error"] == "permission_not_allowed"
    finally:
        await aio.aclose()
    for page, instead in (("sync-admin", "acheck_org_role"), ("sync-billing", "acheck_org_permission")):
        with pytest.raises(TypeError, match=f"use {instead} in an async view"):
            await asyncio.to_thread(Client().get, f"/{page}/{acme}", headers={"X-User": ALICE})
