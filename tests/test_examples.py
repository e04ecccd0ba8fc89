"""The example apps, each through its framework's own test client, as a browser would use them: real RS256
session tokens (tests/sessions.py), against the session's private Redis and the Clerk stand-in with its
sample users and orgs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from cache import ConfigError, MembershipCache
from cache.aio import AsyncClerkClient, AsyncMembershipCache
from cache.connections import async_cache_redis
from devstack.clerk_standin import SAMPLE_ORG_IDS, SAMPLE_USER_IDS, ClerkStandIn
from devstack.redis_server import RedisServer
from examples import fastapi_app, flask_app
from examples.clerk_session import SessionVerifier
from tests.sessions import ORIGIN, OTHER_KEY, PUBLIC_PEM, session_token
from tests.support import CLERK_KEY

ACME = SAMPLE_ORG_IDS["acme"]  # alice admin, bob member, carol org:billing
ALICE, BOB, CAROL = SAMPLE_USER_IDS["alice"], SAMPLE_USER_IDS["bob"], SAMPLE_USER_IDS["carol"]


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


Get = Callable[..., Answer]  # get(path, token=None, cookie=None) -> Answer
Build = Callable[..., Any]  # the example's create_app


def client_for(framework: str, app: Any) -> Iterator[Get]:
    """``get`` through the framework's own test client, the token as a bearer header or a ``__session`` cookie."""

    def headers(token: str | None, cookie: str | None) -> dict[str, str]:
        sent = {"Authorization": f"Bearer {token}"} if token else {}
        return sent | ({"Cookie": f"__session={cookie}"} if cookie else {})

    if framework == "flask":
        flask_client = app.test_client(use_cookies=False)  # its own cookie jar would replace our Cookie header

        def flask_get(path: str, token: str | None = None, cookie: str | None = None) -> Answer:
            response = flask_client.get(path, headers=headers(token, cookie))
            return Answer(response.status_code, response.get_json(silent=True))

        yield flask_get
        return
    with TestClient(app) as client:

        def fastapi_get(path: str, token: str | None = None, cookie: str | None = None) -> Answer:
            response = client.get(path, headers=headers(token, cookie))
            return Answer(response.status_code, response.json())

        yield fastapi_get


EXAMPLES: dict[str, Build] = {"flask": flask_app.create_app, "fastapi": fastapi_app.create_app}


@pytest.fixture(params=sorted(EXAMPLES))
def get(
    request: pytest.FixtureRequest, cache: MembershipCache, redis_server: RedisServer, clerk: ClerkStandIn
) -> Iterator[Get]:
    """The example app on the cache under test (`cache.aio`'s for FastAPI), verifying tokens with the
    instance's public key."""
    clerk.seed_sample()
    verifier = SessionVerifier.from_env({"CLERK_JWT_KEY": PUBLIC_PEM, "CLERK_AUTHORIZED_PARTIES": ORIGIN})
    backing: Any = cache
    if request.param == "fastapi":
        backing = AsyncMembershipCache(async_cache_redis(redis_server.url), AsyncClerkClient(CLERK_KEY, clerk.url))
    yield from client_for(request.param, EXAMPLES[request.param](cache=backing, verifier=verifier))


def test_admin_gets_the_settings_by_slug_or_id(get: Get, clerk: ClerkStandIn) -> None:
    token = session_token(ALICE)

    for ref in ("acme", ACME):
        assert get(f"/orgs/{ref}/settings", token) == Answer(200, {"org_id": ACME, "slug": "acme"})
    assert clerk.call_count("/v1/users/") == 1  # the second request was served from Redis


def test_member_is_refused_the_settings_but_sees_the_dashboard(get: Get) -> None:
    token = session_token(BOB)

    assert get("/orgs/acme/settings", token) == Answer(
        403, {"error": "role_not_allowed", "message": "your role in this organization does not allow this"}
    )
    assert get("/orgs/acme/dashboard", token) == Answer(200, {"org": "Acme Inc", "role": "org:member"})


def test_non_member_is_refused(get: Get) -> None:
    answer = get("/orgs/initech/dashboard", session_token(CAROL))
    assert (answer.status, answer.body["error"]) == (403, "not_a_member")


def test_the_session_cookie_works_as_the_header_does(get: Get) -> None:
    assert get("/orgs/acme/settings", cookie=session_token(ALICE)).status == 200


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="missing"),
        pytest.param(session_token(ALICE, exp=int(time.time()) - 60), id="expired"),
        pytest.param(session_token(ALICE, nbf=int(time.time()) + 600), id="not-yet-valid"),
        pytest.param(session_token(ALICE, exp=None), id="without-exp"),
        pytest.param(session_token(ALICE, key=OTHER_KEY), id="signed-by-another-key"),
        pytest.param(session_token(ALICE, azp="https://evil.example"), id="minted-for-another-origin"),
        pytest.param(session_token(ALICE, azp=None), id="no-azp-while-authorized-parties-are-set"),
        pytest.param(session_token(ALICE, azp=[ORIGIN]), id="azp-not-a-string"),
        pytest.param(session_token(ALICE, typ="at+jwt"), id="an-oauth-access-token"),
        pytest.param(session_token(ALICE, typ="jwt"), id="typ-not-exactly-JWT"),
        pytest.param(session_token(ALICE, sid=None), id="without-sid"),
        pytest.param(session_token(ALICE, sid=""), id="empty-sid"),
        pytest.param(session_token(ALICE, sts="pending"), id="a-pending-session"),
        pytest.param(session_token(ALICE, sub=None), id="without-sub"),
        pytest.param("not.a.jwt", id="garbage"),
    ],
)
def test_no_valid_session_is_401_without_a_lookup(get: Get, clerk: ClerkStandIn, token: str | None) -> None:
    answer = get("/orgs/acme/settings", token)

    assert answer == Answer(401, {"error": "unauthenticated", "message": "sign in first"})
    assert clerk.call_count("/v1/users/") == 0


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param({"typ": None}, id="no-typ-in-the-header"),
        pytest.param({"sts": "active"}, id="an-active-session"),
    ],
)
def test_what_clerk_s_sdks_accept_is_accepted(get: Get, shape: dict[str, Any]) -> None:
    token = session_token(ALICE, **shape)  # made here: a token made at collection may have expired by now
    assert get("/orgs/acme/settings", token).status == 200


def test_a_pending_session_is_signed_out_unless_the_app_lets_it_in() -> None:
    pending = session_token(ALICE, sts="pending")
    by_default = SessionVerifier.from_env({"CLERK_JWT_KEY": PUBLIC_PEM})
    let_in = SessionVerifier.from_env({"CLERK_JWT_KEY": PUBLIC_PEM, "CLERK_TREAT_PENDING_AS_SIGNED_OUT": "false"})

    assert by_default.user_id(f"Bearer {pending}", None) is None
    assert let_in.user_id(f"Bearer {pending}", None) == ALICE
    assert let_in.user_id(f"Bearer {session_token(ALICE, sid=None, sts='pending')}", None) is None


def test_without_authorized_parties_a_token_without_azp_is_accepted() -> None:
    """Clerk documents the azp check as optional: it is made only when the app names its origins."""
    verifier = SessionVerifier.from_env({"CLERK_JWT_KEY": PUBLIC_PEM})

    assert verifier.user_id(f"Bearer {session_token(ALICE, azp=None)}", None) == ALICE
    assert verifier.user_id(f"Bearer {session_token(ALICE, azp='https://any.example')}", None) == ALICE


@pytest.mark.parametrize("framework", sorted(EXAMPLES))
def test_built_from_the_environment(
    framework: str, monkeypatch: pytest.MonkeyPatch, redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn
) -> None:
    """What ``python -m examples.…`` does: every setting from the usual variables (the PEM with \\n escapes,
    as one-line env files hold it)."""
    clerk.seed_sample()
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("CLERK_SECRET_KEY", CLERK_KEY)
    monkeypatch.setenv("CLERK_API_URL", clerk.url)
    monkeypatch.setenv("CLERK_JWT_KEY", PUBLIC_PEM.replace("\n", "\\n"))
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", f"https://app.example, {ORIGIN}")

    for get in client_for(framework, EXAMPLES[framework]()):
        assert get("/orgs/acme/settings", session_token(ALICE)).status == 200
        assert get("/orgs/acme/settings", session_token(BOB)).status == 403


@pytest.mark.parametrize(
    ("environ", "variable", "problem"),
    [
        ({"CLERK_JWT_KEY": ""}, "CLERK_JWT_KEY", "is not set"),
        ({"CLERK_JWT_KEY": "not a key"}, "CLERK_JWT_KEY", "is not a PEM public key"),
        (
            {"CLERK_JWT_KEY": PUBLIC_PEM, "CLERK_TREAT_PENDING_AS_SIGNED_OUT": "maybe"},
            "CLERK_TREAT_PENDING_AS_SIGNED_OUT",
            "must be true or false",
        ),
    ],
)
def test_an_unusable_setting_is_refused_at_start_up(environ: dict[str, str], variable: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        SessionVerifier.from_env(environ)
    assert refused.value.variable == variable and problem in str(refused.value)
