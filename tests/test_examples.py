"""The example apps, each through its framework's own test client, as a browser would use them: real RS256
session tokens signed with a key pair made here (as a Clerk instance holds one; the apps get only its PEM
public key), against the session's private Redis and the Clerk stand-in with its sample users and orgs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient
from redis import Redis

from cache import ConfigError, MembershipCache
from cache.aio import AsyncClerkClient, AsyncMembershipCache
from cache.connections import async_cache_redis
from devstack.clerk_standin import SAMPLE_ORG_IDS, SAMPLE_USER_IDS, ClerkStandIn
from devstack.redis_server import RedisServer
from examples import fastapi_app, flask_app
from examples.clerk_session import SessionVerifier
from tests.support import CLERK_KEY

ORIGIN = "http://localhost:3000"  # the app's own frontend: the only authorized party
ACME = SAMPLE_ORG_IDS["acme"]  # alice admin, bob member, carol org:billing
ALICE, BOB, CAROL = SAMPLE_USER_IDS["alice"], SAMPLE_USER_IDS["bob"], SAMPLE_USER_IDS["carol"]

INSTANCE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = INSTANCE_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def session_token(user_id: str, *, key: rsa.RSAPrivateKey = INSTANCE_KEY, **overrides: Any) -> str:
    """A session token shaped as Clerk mints them (a claim set to None is left out)."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "sid": "sess_2example",
        "iss": "https://example.clerk.accounts.dev",
        "azp": ORIGIN,
        "iat": now,
        "nbf": now - 10,
        "exp": now + 60,
        **overrides,
    }
    payload = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "ins_2example"})


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
        pytest.param("not.a.jwt", id="garbage"),
    ],
)
def test_no_valid_session_is_401_without_a_lookup(get: Get, clerk: ClerkStandIn, token: str | None) -> None:
    answer = get("/orgs/acme/settings", token)

    assert answer == Answer(401, {"error": "unauthenticated", "message": "sign in first"})
    assert clerk.call_count("/v1/users/") == 0


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
    ("value", "problem"),
    [("", "is not set"), ("not a key", "is not a PEM public key")],
)
def test_an_unusable_jwt_key_is_refused_at_start_up(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        SessionVerifier.from_env({"CLERK_JWT_KEY": value})
    assert refused.value.variable == "CLERK_JWT_KEY" and problem in str(refused.value)
