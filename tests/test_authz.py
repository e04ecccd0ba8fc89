"""cache.authz through both adapters: the same small app in Flask and in FastAPI, on the session's
private Redis and the Clerk stand-in, asked what a browser would ask. Each case runs against both.

The test apps take the user id from an ``X-User`` header: verifying Clerk's session token is the
app's job, and the examples (tests/test_examples.py) do it with real signed tokens.

No ``from __future__ import annotations`` here: FastAPI reads the routes' ``Annotated[..., Depends(x)]``
at run time, and ``x`` is local to the app factory."""

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, Request
from fastapi.testclient import TestClient
from flask import Flask
from flask import request as flask_request
from flask.testing import FlaskClient
from redis import Redis

from cache import Membership, MembershipCache
from cache.aio import AsyncClerkClient, AsyncMembershipCache
from cache.authz import (
    Denied,
    RequestMemo,
    authorize,
    authorize_async,
    authorize_permission,
    check_org_ref,
    decide_permission,
    permission_allows,
    permission_key,
    resolve_org,
    role_allows,
)
from cache.authz import fastapi as fastapi_authz
from cache.authz import flask as flask_authz
from cache.connections import async_cache_redis
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from tests.support import ALICE, BOB, CLERK_KEY, make_cache, orgs_with_member, post_event


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]  # names in lower case


def lowered(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


Get = Callable[..., Answer]  # get(path, user=None) -> Answer


# -- the app, once per framework ------------------------------------------------------------------


def flask_app(cache: MembershipCache) -> Flask:
    def user() -> str | None:
        return flask_request.headers.get("X-User")

    lookup = cache.get_memberships
    admin = flask_authz.require_org_role("org:admin", user=user, memberships=lookup)
    member = flask_authz.require_org_role(user=user, memberships=lookup)
    app = Flask(__name__)
    app.register_error_handler(Denied, flask_authz.denied_response)

    def shown(**route: str) -> dict[str, Any]:
        membership = flask_authz.current_membership()
        return {"org": membership.organization_id, "role": membership.role}

    app.add_url_rule("/orgs/<org_id>/settings", "settings", admin(shown))
    app.add_url_rule("/orgs/<org_id>/dashboard", "dashboard", member(shown))
    billing = flask_authz.require_org_role("org:admin", "org:billing", user=user, memberships=lookup)
    app.add_url_rule("/orgs/<org_id>/billing", "billing", billing(shown))

    def ten_checks(org_id: str) -> dict[str, Any]:
        return {"checks": 10}

    view = ten_checks
    for _ in range(10):
        view = member(view)
    app.add_url_rule("/orgs/<org_id>/ten", "ten", view)

    @app.get("/orgs/<org_id>/and/<other>")
    @member
    def two_orgs(org_id: str, other: str) -> dict[str, Any]:
        second = flask_authz.check_org_role(other, user=user, memberships=lookup)
        return {"orgs": [org_id, second.organization_id]}

    # permissions: unprefixed as Clerk's has() allows; a system one; with a role check and a check inside
    invoices = flask_authz.require_org_permission("billing:manage", user=user, memberships=lookup)
    app.add_url_rule("/orgs/<org_id>/invoices", "invoices", invoices(shown))
    manage = flask_authz.require_org_permission("org:sys_memberships:manage", user=user, memberships=lookup)
    app.add_url_rule("/orgs/<org_id>/members", "members", manage(shown))

    @app.get("/orgs/<org_id>/billing-and/<other>")
    @billing
    @invoices
    def billing_and(org_id: str, other: str) -> dict[str, Any]:
        second = flask_authz.check_org_permission(other, "org:billing:read", user=user, memberships=lookup)
        return {"orgs": [org_id, second.organization_id]}

    return app


def fastapi_app(cache: AsyncMembershipCache, *, handler: bool = True) -> FastAPI:
    lookup = cache.get_memberships

    def user(x_user: Annotated[str | None, Header()] = None) -> str | None:
        return x_user

    admin = fastapi_authz.OrgRole("org:admin", user=user, memberships=lookup)
    member = fastapi_authz.OrgRole(user=user, memberships=lookup)
    billing = fastapi_authz.OrgRole("org:admin", "org:billing", user=user, memberships=lookup)
    app = FastAPI()
    if handler:
        fastapi_authz.add_denied_handler(app)

    def shown(membership: Membership) -> dict[str, Any]:
        return {"org": membership.organization_id, "role": membership.role}

    @app.get("/orgs/{org_id}/settings")
    async def settings(membership: Annotated[Membership, Depends(admin)]) -> dict[str, Any]:
        return shown(membership)

    @app.get("/orgs/{org_id}/dashboard")
    async def dashboard(membership: Annotated[Membership, Depends(member)]) -> dict[str, Any]:
        return shown(membership)

    @app.get("/orgs/{org_id}/billing")
    async def billing_page(membership: Annotated[Membership, Depends(billing)]) -> dict[str, Any]:
        return shown(membership)

    ten = [Depends(fastapi_authz.OrgRole(user=user, memberships=lookup)) for _ in range(10)]

    @app.get("/orgs/{org_id}/ten", dependencies=ten)
    async def ten_checks() -> dict[str, Any]:
        return {"checks": 10}

    @app.get("/orgs/{org_id}/and/{other}")
    async def two_orgs(
        other: str,
        request: Request,
        first: Annotated[Membership, Depends(member)],
        user_id: Annotated[str | None, Depends(user)],
    ) -> dict[str, Any]:
        second = await fastapi_authz.check_org_role(request, other, user_id=user_id, memberships=lookup)
        return {"orgs": [first.organization_id, second.organization_id]}

    invoices = fastapi_authz.OrgPermission("billing:manage", user=user, memberships=lookup)
    manage = fastapi_authz.OrgPermission("org:sys_memberships:manage", user=user, memberships=lookup)

    @app.get("/orgs/{org_id}/invoices")
    async def invoices_page(membership: Annotated[Membership, Depends(invoices)]) -> dict[str, Any]:
        return shown(membership)

    @app.get("/orgs/{org_id}/members")
    async def members_page(membership: Annotated[Membership, Depends(manage)]) -> dict[str, Any]:
        return shown(membership)

    @app.get("/orgs/{org_id}/billing-and/{other}", dependencies=[Depends(billing)])
    async def billing_and(
        other: str,
        request: Request,
        first: Annotated[Membership, Depends(invoices)],
        user_id: Annotated[str | None, Depends(user)],
    ) -> dict[str, Any]:
        second = await fastapi_authz.check_org_permission(
            request, other, "org:billing:read", user_id=user_id, memberships=lookup
        )
        return {"orgs": [first.organization_id, second.organization_id]}

    return app


@pytest.fixture(params=["flask", "fastapi"])
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backing(framework: str, cache: MembershipCache, redis_server: RedisServer, clerk: ClerkStandIn) -> Any:
    """The cache the app asks: the sync one for Flask, `cache.aio`'s for FastAPI (same Redis, same Clerk)."""
    if framework == "flask":
        return cache
    return AsyncMembershipCache(async_cache_redis(redis_server.url), AsyncClerkClient(CLERK_KEY, clerk.url))


@pytest.fixture
def get(framework: str, backing: Any) -> Iterator[Get]:
    """The framework's test app on the cache under test; ``get(path, user)`` answers status, JSON body, headers."""
    if framework == "flask":
        flask_client = flask_app(backing).test_client()

        def flask_get(path: str, user: str | None = None) -> Answer:
            response = flask_client.get(path, headers={"X-User": user} if user else {})
            return Answer(response.status_code, response.get_json(silent=True), lowered(response.headers.items()))

        yield flask_get
        return
    with TestClient(fastapi_app(backing)) as client:

        def fastapi_get(path: str, user: str | None = None) -> Answer:
            response = client.get(path, headers={"X-User": user} if user else {})
            return Answer(response.status_code, response.json(), lowered(response.headers.items()))

        yield fastapi_get
        client.portal.call(backing.aclose)  # its clients belong to the test client's event loop


def user_reads(clerk: ClerkStandIn) -> int:
    """Reads of a user's memberships the Clerk stand-in received."""
    return clerk.call_count("/v1/users/")


# -- who may: ids, slugs, roles ----------------------------------------------------------------------


def test_admin_by_id_and_by_slug(get: Get, clerk: ClerkStandIn) -> None:
    org = clerk.create_org("Acme", slug="acme")["data"]["id"]
    clerk.add_membership(ALICE, org, "org:admin")

    for ref in (org, "acme"):
        answer = get(f"/orgs/{ref}/settings", ALICE)
        assert (answer.status, answer.body) == (200, {"org": org, "role": "org:admin"})


def test_member_is_refused_an_admin_route_but_sees_the_dashboard(get: Get, clerk: ClerkStandIn) -> None:
    (org,) = orgs_with_member(clerk, BOB, "Acme", role="org:member")

    refused = get(f"/orgs/{org}/settings", BOB)
    assert (refused.status, refused.body["error"]) == (403, "role_not_allowed")
    assert get(f"/orgs/{org}/dashboard", BOB).body == {"org": org, "role": "org:member"}


def test_any_of_several_roles_including_a_custom_one(get: Get, clerk: ClerkStandIn) -> None:
    (org,) = orgs_with_member(clerk, BOB, "Acme", role="org:billing")

    assert get(f"/orgs/{org}/billing", BOB).status == 200
    assert get(f"/orgs/{org}/settings", BOB).status == 403


def test_not_a_member_whether_named_by_id_or_slug(get: Get, clerk: ClerkStandIn) -> None:
    orgs_with_member(clerk, ALICE, "Acme", role="org:admin")
    (other,) = orgs_with_member(clerk, BOB, "Globex")
    clerk.create_org("Initech", slug="initech")

    for ref in (other, "globex", "initech", "no-such-org", "org_2doesnotexist"):
        answer = get(f"/orgs/{ref}/dashboard", ALICE)
        assert (answer.status, answer.body["error"]) == (403, "not_a_member"), ref


def test_no_user_is_401_before_anything_else(get: Get, clerk: ClerkStandIn, backing: Any) -> None:
    (org,) = orgs_with_member(clerk, ALICE, "Acme")

    for path in (f"/orgs/{org}/dashboard", "/orgs/org_bad-id/dashboard"):
        answer = get(path)
        assert (answer.status, answer.body["error"]) == (401, "unauthenticated")
        assert answer.headers["www-authenticate"] == "Bearer"
    assert get(f"/orgs/{org}/dashboard", "bob").status == 401  # a user id that is not a Clerk id
    assert user_reads(clerk) == 0 and lookups(backing) == 0


@pytest.mark.parametrize(
    "ref",
    [
        "org_bad-chars",  # org_ and then not base62
        "org_",
        "org_abc%21",  # org_abc!
        "a%20b",  # a space
        "%C3%A9cole",  # école
        "-acme",
        "x" * 129,
    ],
)
def test_malformed_org_ref_is_404_without_a_lookup(get: Get, clerk: ClerkStandIn, backing: Any, ref: str) -> None:
    orgs_with_member(clerk, ALICE, "Acme", role="org:admin")

    answer = get(f"/orgs/{ref}/settings", ALICE)

    assert answer.status == 404
    assert answer.body == {"error": "not_found", "message": "no such organization"}
    assert user_reads(clerk) == 0 and lookups(backing) == 0


def test_a_slug_two_cached_orgs_carry_is_404_not_the_first_match(
    get: Get, client: FlaskClient, clerk: ClerkStandIn, cache: MembershipCache, run_worker: Callable[[], int]
) -> None:
    """Globex takes the slug Acme gave up, and only Globex's rename has been delivered: the cached
    value has two orgs called ``acme``, and the URL does not say which one it means."""
    acme = clerk.create_org("Acme", slug="acme")["data"]["id"]
    globex = clerk.create_org("Globex", slug="globex")["data"]["id"]
    clerk.add_membership(ALICE, acme, "org:admin")
    clerk.add_membership(ALICE, globex, "org:member")
    cache.get_memberships(ALICE)
    clerk.update_org(acme, slug="acme-old")  # its webhook is still on its way
    assert post_event(client, clerk.update_org(globex, slug="acme")).status_code == 200
    assert run_worker() == 1  # patches Globex in the cached value
    assert sorted(m.organization_slug for m in cache.get_memberships(ALICE)) == ["acme", "acme"]

    for path in ("/orgs/acme/settings", "/orgs/acme/dashboard"):
        answer = get(path, ALICE)
        assert (answer.status, answer.body["error"]) == (404, "not_found"), path
    assert get(f"/orgs/{acme}/settings", ALICE).status == 200  # the id still names it


# -- what it costs ------------------------------------------------------------------------------------


def test_ten_checks_in_one_request_cost_one_lookup(get: Get, clerk: ClerkStandIn, backing: Any) -> None:
    (org,) = orgs_with_member(clerk, ALICE, "Acme")

    assert get(f"/orgs/{org}/ten", ALICE).body == {"checks": 10}  # cold cache
    assert user_reads(clerk) == 1
    assert backing.stats.snapshot()["misses"] == 1 and backing.stats.snapshot()["hits"] == 0

    assert get(f"/orgs/{org}/ten", ALICE).body == {"checks": 10}  # warm
    assert user_reads(clerk) == 1
    assert backing.stats.snapshot()["hits"] == 1  # one Redis read for the ten checks


def test_a_second_org_checked_in_the_view_shares_the_lookup(get: Get, clerk: ClerkStandIn, backing: Any) -> None:
    acme, globex = orgs_with_member(clerk, ALICE, "Acme", "Globex")

    assert get(f"/orgs/{acme}/and/{globex}", ALICE).body == {"orgs": [acme, globex]}
    assert user_reads(clerk) == 1 and lookups(backing) == 1
    refused = get(f"/orgs/{acme}/and/initech", ALICE)
    assert (refused.status, refused.body["error"]) == (403, "not_a_member")


def test_slug_resolution_costs_no_clerk_call_when_cached(get: Get, clerk: ClerkStandIn, cache: MembershipCache) -> None:
    org = clerk.create_org("Acme", slug="acme")["data"]["id"]
    clerk.add_membership(ALICE, org, "org:admin")
    cache.get_memberships(ALICE)  # cached (by the sync API: the same Redis)
    clerk.reset_counts()

    assert get("/orgs/acme/settings", ALICE).body == {"org": org, "role": "org:admin"}
    assert clerk.call_count() == 0


# -- when it cannot decide ---------------------------------------------------------------------------


def test_clerk_unreachable_and_nothing_cached_is_503(get: Get, clerk: ClerkStandIn) -> None:
    (org,) = orgs_with_member(clerk, ALICE, "Acme")
    clerk.stop()

    answer = get(f"/orgs/{org}/dashboard", ALICE)

    assert answer.status == 503
    assert answer.body == {
        "error": "authorization_unavailable",
        "message": "authorization cannot be decided now; try again",
    }


def test_cached_memberships_still_answer_while_clerk_is_down(
    get: Get, clerk: ClerkStandIn, cache: MembershipCache
) -> None:
    (org,) = orgs_with_member(clerk, ALICE, "Acme", role="org:admin")
    cache.get_memberships(ALICE)  # cached (by the sync API: the same Redis)
    clerk.stop()

    assert get(f"/orgs/{org}/settings", ALICE).status == 200
    assert get(f"/orgs/{org}/settings", BOB).status == 503  # nothing cached for Bob


def test_a_failed_lookup_is_not_repeated_by_the_request_s_other_checks(
    redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn
) -> None:
    """A view may catch Denied and go on checking (a page listing several orgs): it must not wait
    out Clerk's retries once per check."""
    cache = make_cache(redis_server.url, clerk.url, max_attempts=1)
    (org,) = orgs_with_member(clerk, ALICE, "Acme")
    clerk.fail_next(100, status=503)
    memo = RequestMemo()

    for _ in range(10):
        with pytest.raises(Denied) as refused:
            authorize(memo, ALICE, org, (), cache.get_memberships)
        assert refused.value.status == 503
    assert user_reads(clerk) == 1


# -- adapter details ---------------------------------------------------------------------------------


def test_flask_decorator_uses_the_process_wide_cache_by_default(cache: MembershipCache, clerk: ClerkStandIn) -> None:
    """The ``cache`` fixture installed ``cache`` as the default: no ``memberships=`` needed."""
    (org,) = orgs_with_member(clerk, ALICE, "Acme")
    app = Flask(__name__)

    @app.get("/orgs/<org_id>")
    @flask_authz.require_org_role(user=lambda: ALICE)
    def page(org_id: str) -> dict[str, str]:
        return {"name": flask_authz.current_membership().organization_name}

    assert app.test_client().get(f"/orgs/{org}").json == {"name": "Acme"}
    assert cache.stats.snapshot()["misses"] == 1


def test_fastapi_dependency_uses_the_async_process_wide_cache_by_default(
    redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn
) -> None:
    import cache.aio

    (org,) = orgs_with_member(clerk, ALICE, "Acme")
    default = AsyncMembershipCache(async_cache_redis(redis_server.url), AsyncClerkClient(CLERK_KEY, clerk.url))
    cache.aio.set_default_cache(default)
    app = FastAPI()

    @app.get("/orgs/{org_id}")
    async def page(membership: Annotated[Membership, Depends(fastapi_authz.OrgRole(user=lambda: ALICE))]) -> Any:
        return {"name": membership.organization_name}

    try:
        with TestClient(app) as client:
            assert client.get(f"/orgs/{org}").json() == {"name": "Acme"}
            client.portal.call(default.aclose)
    finally:
        cache.aio.set_default_cache(None)
    assert default.stats.snapshot()["misses"] == 1


def test_fastapi_without_the_handler_answers_its_own_shape_with_the_same_status(
    redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn
) -> None:
    (org,) = orgs_with_member(clerk, BOB, "Acme")
    cache = AsyncMembershipCache(async_cache_redis(redis_server.url), AsyncClerkClient(CLERK_KEY, clerk.url))
    with TestClient(fastapi_app(cache, handler=False)) as client:
        response = client.get(f"/orgs/{org}/settings", headers={"X-User": BOB})
        client.portal.call(cache.aclose)

    assert response.status_code == 403
    assert response.json() == {"detail": "your role in this organization does not allow this"}


@pytest.mark.asyncio
async def test_concurrent_async_checks_share_one_lookup(
    redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn
) -> None:
    (org,) = orgs_with_member(clerk, ALICE, "Acme")
    cache = AsyncMembershipCache(async_cache_redis(redis_server.url), AsyncClerkClient(CLERK_KEY, clerk.url))

    memo = RequestMemo()
    answers = await asyncio.gather(*(authorize_async(memo, ALICE, org, (), cache.get_memberships) for _ in range(10)))
    await cache.aclose()

    assert {a.organization_id for a in answers} == {org}
    assert cache.stats.snapshot()["misses"] == 1
    assert cache.stats.snapshot()["waits"] == 0  # no second lookup ever waited on the first one's lease


@pytest.mark.asyncio
async def test_a_check_whose_first_check_was_cancelled_looks_up_anew_and_is_answered(
    redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn
) -> None:
    """The first check of a request looks up inline; cancelling it must not cancel a joined check's answer."""
    (org,) = orgs_with_member(clerk, ALICE, "Acme")
    cache = AsyncMembershipCache(async_cache_redis(redis_server.url), AsyncClerkClient(CLERK_KEY, clerk.url))
    memo = RequestMemo()
    gate = clerk.hold(ALICE)
    try:
        first = asyncio.ensure_future(authorize_async(memo, ALICE, org, (), cache.get_memberships))
        assert await asyncio.to_thread(gate.wait_arrived, 5.0)  # its Clerk read is held
        joined = asyncio.ensure_future(authorize_async(memo, ALICE, org, ("org:member",), cache.get_memberships))
        for _ in range(5):
            await asyncio.sleep(0)  # the second check is waiting on the first one's answer
        assert not joined.done()
        first.cancel()
        assert await asyncio.to_thread(gate.wait_arrived, 5.0, 2)  # the second looked up anew...
    finally:
        gate.release()
    membership = await asyncio.wait_for(joined, 10)  # ...and got its answer
    await cache.aclose()
    assert membership.organization_id == org
    with pytest.raises(asyncio.CancelledError):
        await first
    assert clerk.call_count() == 2


@pytest.mark.asyncio
async def test_a_sync_lookup_given_to_the_async_check_says_how_to_wrap_it(cache: MembershipCache) -> None:
    with pytest.raises(TypeError, match=r"asyncio\.to_thread"):
        await authorize_async(RequestMemo(), ALICE, "acme", (), cache.get_memberships)  # type: ignore[arg-type]


# -- the decisions themselves --------------------------------------------------------------------------


def test_an_id_shaped_ref_never_matches_a_slug() -> None:
    """An org whose slug is another org's id must not stand in for it (the view may act on the URL's id)."""
    impostor = Membership("org_2impostor", "org_2victim", "Impostor", None, "org:admin")

    assert resolve_org([impostor], "org_2victim") is None
    assert resolve_org([impostor], "org_2impostor") == impostor


def test_roles_are_opaque_and_exact() -> None:
    legacy = Membership("org_2a", "a", "A", None, "admin")

    assert not role_allows(legacy, "org:admin")
    assert role_allows(legacy, ("org:admin", "admin"))
    assert role_allows(legacy, ())  # any member
    with pytest.raises(ValueError):
        role_allows(legacy, ["org:admin", ""])


def test_check_org_ref_refuses_non_strings() -> None:
    with pytest.raises(Denied) as refused:
        check_org_ref(42)
    assert refused.value.status == 404


# -- permissions -------------------------------------------------------------------------------------------

PERMISSION_NOT_ALLOWED = {
    "error": "permission_not_allowed",
    "message": "your permissions in this organization do not allow this",
}


def test_a_permission_is_granted_by_the_cached_membership_s_permissions(get: Get, clerk: ClerkStandIn) -> None:
    """org:billing (the stand-in gives it org:billing:read and org:billing:manage) may; org:admin, whose
    permissions are the system ones, may not: a permission check never falls back to the role."""
    org = clerk.create_org("Acme", slug="acme")["data"]["id"]
    clerk.add_membership(ALICE, org, "org:admin")
    clerk.add_membership(BOB, org, "org:billing")

    for ref in (org, "acme"):
        assert get(f"/orgs/{ref}/invoices", BOB).body == {"org": org, "role": "org:billing"}
    refused = get(f"/orgs/{org}/invoices", ALICE)
    assert (refused.status, refused.body) == (403, PERMISSION_NOT_ALLOWED)


def test_a_system_permission_is_checked_from_the_cache_like_any_other(
    get: Get, clerk: ClerkStandIn, cache: MembershipCache
) -> None:
    """Clerk's server-side has() cannot check org:sys_*; the cached membership carries them. Clerk is
    stopped once both are cached, so the answers come from the cache."""
    org = clerk.create_org("Acme", slug="acme")["data"]["id"]
    clerk.add_membership(ALICE, org, "org:admin")
    clerk.add_membership(BOB, org, "org:member")
    for who in (ALICE, BOB):
        cache.get_memberships(who)
    clerk.stop()

    assert get(f"/orgs/{org}/members", ALICE).body == {"org": org, "role": "org:admin"}
    refused = get(f"/orgs/{org}/members", BOB)
    assert (refused.status, refused.body) == (403, PERMISSION_NOT_ALLOWED)


def test_a_permission_check_refuses_in_the_role_checks_order(get: Get, clerk: ClerkStandIn, backing: Any) -> None:
    """401 before 404 before any lookup; then not_a_member; then the permission; 503 when undecidable."""
    (org,) = orgs_with_member(clerk, ALICE, "Acme", role="org:member")
    (other,) = orgs_with_member(clerk, BOB, "Globex", role="org:billing")

    for path in (f"/orgs/{org}/invoices", "/orgs/org_bad-id/invoices"):
        answer = get(path)
        assert (answer.status, answer.body["error"], answer.headers["www-authenticate"]) == (
            401,
            "unauthenticated",
            "Bearer",
        )
    assert get("/orgs/org_bad-id/invoices", ALICE).body == {"error": "not_found", "message": "no such organization"}
    assert user_reads(clerk) == 0 and lookups(backing) == 0
    refused = get(f"/orgs/{other}/invoices", ALICE)  # Globex's billing member is Bob, not Alice
    assert (refused.status, refused.body["error"]) == (403, "not_a_member")
    refused = get(f"/orgs/{org}/invoices", ALICE)
    assert (refused.status, refused.body) == (403, PERMISSION_NOT_ALLOWED)
    clerk.stop()  # nothing is cached for Bob
    refused = get(f"/orgs/{other}/invoices", BOB)
    assert (refused.status, refused.body["error"]) == (503, "authorization_unavailable")


def test_a_permission_check_and_a_role_check_in_one_request_share_one_lookup(
    get: Get, clerk: ClerkStandIn, backing: Any
) -> None:
    """/billing-and/<other>: a role check, a permission check, and a permission check of a second org inside."""
    acme, globex = orgs_with_member(clerk, BOB, "Acme", "Globex", role="org:billing")

    assert get(f"/orgs/{acme}/billing-and/{globex}", BOB).body == {"orgs": [acme, globex]}
    assert user_reads(clerk) == 1 and lookups(backing) == 1
    refused = get(f"/orgs/{acme}/billing-and/initech", BOB)
    assert (refused.status, refused.body["error"]) == (403, "not_a_member")


def test_permission_keys_are_normalised_as_clerk_s_has_normalises_them_and_matched_exactly() -> None:
    billing = Membership("org_2a", "a", "A", None, "org:billing", ("org:billing:manage", "org:sys_memberships:read"))

    for spelled in ("org:billing:manage", "billing:manage", "org:org:billing:manage"):  # prefixWithOrg
        assert permission_key(spelled) == "org:billing:manage"
        assert permission_allows(billing, spelled)
    assert permission_allows(billing, "sys_memberships:read")
    assert not permission_allows(billing, "org:billing:read")  # no hierarchy: manage does not imply read
    assert not permission_allows(billing, "org:sys_memberships:manage")
    assert decide_permission([billing], "a", "billing:manage") == billing
    with pytest.raises(Denied) as refused:
        decide_permission([billing], "a", "org:billing:read")
    assert (refused.value.status, refused.value.code) == (403, "permission_not_allowed")
    with pytest.raises(Denied) as refused:
        decide_permission([billing], "org_2b", "org:billing:manage")
    assert (refused.value.status, refused.value.code) == (403, "not_a_member")


BAD_KEYS = ["", "org:", "org:admin", "invoices", "org:invoices:*", "org:Invoices:create", "org:a:b:c", " org:a:b"]


@pytest.mark.parametrize("key", [*BAD_KEYS, None, 42])
def test_a_malformed_permission_key_fails_where_the_check_is_built(key: Any) -> None:
    def nobody() -> None:
        return None

    with pytest.raises(ValueError):
        permission_key(key)
    with pytest.raises(ValueError):
        flask_authz.require_org_permission(key, user=nobody)
    with pytest.raises(ValueError):
        fastapi_authz.OrgPermission(key, user=nobody)
    with pytest.raises(ValueError):
        authorize_permission(RequestMemo(), ALICE, "acme", key, lambda user_id: [])  # before the user or a lookup


# -- helpers ------------------------------------------------------------------------------------------


def lookups(cache: Any) -> int:
    """Lookups the cache answered (hits and misses)."""
    stats = cache.stats.snapshot()
    return stats["hits"] + stats["misses"] + stats["redis_fallbacks"]
