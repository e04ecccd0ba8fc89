"""Every class of bad input gets a clear 4xx JSON error and changes nothing in Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from cache.contract import ROLES_INDEXED_KEY, org_index_key, role_index_key, user_orgs_key
from devstack.signing import new_signing_secret, sign
from tests.support import ACME, ALICE, SIGNING_SECRET


def membership_event(user_id: Any = ALICE, org_id: str = ACME, kind: str = "deleted") -> dict[str, Any]:
    return {
        "type": f"organizationMembership.{kind}",
        "object": "event",
        "data": {
            "object": "organization_membership",
            "id": "orgmem_2abc",
            "role": "org:member",
            "organization": {"object": "organization", "id": org_id, "name": "Acme", "slug": "acme"},
            "public_user_data": {"user_id": user_id},
        },
    }


def signed(body: str, **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    return body.encode(), sign(SIGNING_SECRET, body, **kwargs)


def with_headers(body: str, **overrides: str | None) -> tuple[bytes, dict[str, str]]:
    data, headers = signed(body)
    for name, value in overrides.items():
        headers.pop(name.replace("_", "-"), None)
        if value is not None:
            headers[name.replace("_", "-")] = value
    return data, headers


VALID = json.dumps(membership_event())
Case = Callable[[], tuple[bytes, dict[str, str]]]

CASES: dict[str, tuple[Case, int, str]] = {
    "no svix headers": (
        lambda: (VALID.encode(), {"content-type": "application/json"}),
        400,
        "missing_signature_headers",
    ),
    "no signature": (lambda: with_headers(VALID, svix_signature=None), 400, "missing_signature_headers"),
    "no id": (lambda: with_headers(VALID, svix_id=None), 400, "missing_signature_headers"),
    "no timestamp": (lambda: with_headers(VALID, svix_timestamp=None), 400, "missing_signature_headers"),
    "signature garbage": (lambda: with_headers(VALID, svix_signature="garbage"), 401, "invalid_signature"),
    "signature not base64": (lambda: with_headers(VALID, svix_signature="v1,not-base64!!"), 401, "invalid_signature"),
    "signature three parts": (lambda: with_headers(VALID, svix_signature="v1,a,b"), 401, "invalid_signature"),
    "signature bad padding": (lambda: with_headers(VALID, svix_signature="v1,abc"), 401, "invalid_signature"),
    "timestamp not a number": (lambda: with_headers(VALID, svix_timestamp="soon"), 401, "invalid_signature"),
    "wrong secret": (
        lambda: (VALID.encode(), sign(new_signing_secret(), VALID)),
        401,
        "invalid_signature",
    ),
    "timestamp 10 minutes old": (
        lambda: signed(VALID, timestamp=datetime.now(UTC) - timedelta(minutes=10)),
        401,
        "invalid_timestamp",
    ),
    "timestamp 10 minutes ahead": (
        lambda: signed(VALID, timestamp=datetime.now(UTC) + timedelta(minutes=10)),
        401,
        "invalid_timestamp",
    ),
    "body altered after signing": (
        lambda: (VALID.replace("deleted", "created").encode(), sign(SIGNING_SECRET, VALID)),
        401,
        "invalid_signature",
    ),
    "invalid utf-8": (lambda: (b"\xff\xfe{}", sign(SIGNING_SECRET, "{}")), 400, "invalid_encoding"),
    "malformed json": (lambda: signed('{"type": '), 400, "invalid_json"),
    "json array": (lambda: signed("[1, 2]"), 400, "invalid_event"),
    "json string": (lambda: signed('"hello"'), 400, "invalid_event"),
    "no type": (lambda: signed(json.dumps({"data": {}})), 400, "invalid_event"),
    "type not a string": (lambda: signed(json.dumps({"type": 3, "data": {}})), 400, "invalid_event"),
    "no data": (lambda: signed(json.dumps({"type": "user.deleted"})), 400, "invalid_event"),
    "data not an object": (lambda: signed(json.dumps({"type": "user.deleted", "data": []})), 400, "invalid_event"),
    "membership without user or org id": (
        lambda: signed(json.dumps({"type": "organizationMembership.deleted", "data": {"public_user_data": {}}})),
        400,
        "invalid_id",
    ),
    "deeply nested json": (lambda: signed("[" * 100_000 + "]" * 100_000), 400, "invalid_json"),
    "user id with a star": (lambda: signed(json.dumps(membership_event(user_id="user_*"))), 400, "invalid_id"),
    "user id with a colon": (lambda: signed(json.dumps(membership_event(user_id="user_a:b"))), 400, "invalid_id"),
    "user id with a newline": (lambda: signed(json.dumps(membership_event(user_id="user_a\nb"))), 400, "invalid_id"),
    "user id 10 KB long": (
        lambda: signed(json.dumps(membership_event(user_id="user_" + "a" * 10_240))),
        400,
        "invalid_id",
    ),
    "user id not a string": (lambda: signed(json.dumps(membership_event(user_id=["user_a"]))), 400, "invalid_id"),
    "org id smuggling a pattern": (
        lambda: signed(json.dumps({"type": "organization.deleted", "data": {"id": "org_*"}})),
        400,
        "invalid_id",
    ),
    "deleted user id not a user id": (
        lambda: signed(json.dumps({"type": "user.deleted", "data": {"id": "org_2abc"}})),
        400,
        "invalid_id",
    ),
    "role key not in Clerk's format": (
        lambda: signed(json.dumps(role_event("role.updated", key="org:Bad Key*"))),
        400,
        "invalid_id",
    ),
    "role key missing": (lambda: signed(json.dumps(role_event("role.updated", key=None))), 400, "invalid_id"),
    "role id not a role id": (
        lambda: signed(json.dumps(role_event("role.updated", role_id="perm_2abc"))),
        400,
        "invalid_id",
    ),
    "deleted role id smuggling a pattern": (
        lambda: signed(json.dumps({"type": "role.deleted", "data": {"object": "role", "id": "role_*"}})),
        400,
        "invalid_id",
    ),
    "deleted permission without an id": (
        lambda: signed(json.dumps({"type": "permission.deleted", "data": {"object": "permission"}})),
        400,
        "invalid_id",
    ),
    "permission key not org:feature:action": (
        lambda: signed(json.dumps(permission_event(key="org:invoices"))),
        400,
        "invalid_id",
    ),
    "permission id not a string": (lambda: signed(json.dumps(permission_event(perm_id=7))), 400, "invalid_id"),
    "svix id with key syntax": (lambda: signed(VALID, msg_id="msg_a:b*"), 400, "invalid_svix_id"),
    "body over 1 MiB": (
        lambda: signed(json.dumps({**membership_event(), "pad": "x" * (1024 * 1024)})),
        413,
        "request_entity_too_large",
    ),
    "wrong content type": (
        lambda: (VALID.encode(), {**sign(SIGNING_SECRET, VALID), "content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    ),
}


def role_event(kind: str, *, key: object = "org:billing", role_id: object = "role_2abc") -> dict[str, object]:
    return {"type": kind, "data": {"object": "role", "id": role_id, "key": key, "permissions": []}}


def permission_event(*, key: object = "org:invoices:create", perm_id: object = "perm_2abc") -> dict[str, object]:
    return {"type": "permission.updated", "data": {"object": "permission", "id": perm_id, "key": key}}


@dataclass(frozen=True)
class Snapshot:
    """Every key's type, DUMP (its value, byte for byte) and PTTL, and when the PTTLs were read."""

    values: dict[str, tuple[str, bytes]]
    pttls: dict[str, int]
    started: float  # time.monotonic() before the first PTTL was asked for
    ended: float  # and after the last one answered


def snapshot(redis: Redis) -> Snapshot:
    keys = sorted(redis.keys("*"))
    started = time.monotonic()
    pttls = {key: redis.pttl(key) for key in keys}
    ended = time.monotonic()
    return Snapshot({key: (redis.type(key), redis.dump(key)) for key in keys}, pttls, started, ended)


def assert_unchanged(redis: Redis, before: Snapshot) -> None:
    """Redis as ``before``: the same keys and values, and no expiry set, cleared or refreshed.

    A PTTL runs down in real time, so a key with one may have lost at most the time between
    the two snapshots (plus 1 ms of rounding), never gained; a key without one keeps -1."""
    after = snapshot(redis)
    assert after.values == before.values
    assert after.pttls.keys() == before.pttls.keys()
    elapsed_ms = (after.ended - before.started) * 1000
    for key, was in before.pttls.items():
        now = after.pttls[key]
        if was < 0:
            assert now == was, f"{key}: an expiry was set (PTTL {was} -> {now})"
        else:
            assert 0 <= was - now <= elapsed_ms + 1, f"{key}: the expiry changed (PTTL {was} -> {now})"


@pytest.fixture
def seeded(redis: Redis) -> Redis:
    """A cached user and org index that bad input must leave alone. The user's TTL is one no write
    of ours sets (the cache stores for 300 s), so a refreshed expiry shows as a PTTL that grew."""
    redis.set(user_orgs_key(ALICE), json.dumps([{"organizationId": ACME}]), px=250_000)
    redis.sadd(org_index_key(ACME), ALICE)  # no expiry
    redis.sadd(role_index_key("org:billing"), ALICE)  # a role event would stash ALICE
    redis.sadd(ROLES_INDEXED_KEY, "org:billing")
    return redis


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_refused_and_changes_nothing(client: FlaskClient, seeded: Redis, case: str) -> None:
    build, status, code = CASES[case]
    data, headers = build()
    before = snapshot(seeded)

    response = client.post("/webhooks/clerk", data=data, headers=headers)

    assert response.status_code == status
    assert response.json is not None and response.json["error"] == code
    assert SIGNING_SECRET not in response.get_data(as_text=True)
    assert_unchanged(seeded, before)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method(client: FlaskClient, seeded: Redis, method: str) -> None:
    before = snapshot(seeded)
    response = client.open("/webhooks/clerk", method=method, data=VALID, headers=signed(VALID)[1])
    assert response.status_code == 405
    assert response.json is not None and response.json["error"] == "method_not_allowed"
    assert_unchanged(seeded, before)


def test_header_names_in_any_case_verify(client: FlaskClient, seeded: Redis) -> None:
    data, headers = signed(VALID)
    odd = {name.upper() if name.startswith("svix") else name: value for name, value in headers.items()}
    assert client.post("/webhooks/clerk", data=data, headers=odd).status_code == 200
    assert seeded.exists(user_orgs_key(ALICE)) == 0


def test_standard_webhooks_header_names_verify(client: FlaskClient, seeded: Redis) -> None:
    data, headers = signed(VALID)
    renamed = {name.replace("svix-", "webhook-"): value for name, value in headers.items()}
    assert client.post("/webhooks/clerk", data=data, headers=renamed).status_code == 200


@pytest.mark.parametrize("good_first", [True, False])
def test_duplicated_signature_headers_are_refused(client: FlaskClient, seeded: Redis, good_first: bool) -> None:
    """Svix never sends a header twice; a proxy or attacker that does gets a 401, not a guess."""
    data, headers = signed(VALID)
    good = headers.pop("svix-signature")
    pair = [("svix-signature", good), ("svix-signature", "v1,Zm9vYmFy")]
    before = snapshot(seeded)
    response = client.post(
        "/webhooks/clerk", data=data, headers=[*headers.items(), *(pair if good_first else pair[::-1])]
    )
    assert response.status_code == 401
    assert_unchanged(seeded, before)


def test_several_signatures_in_one_header_any_match_suffices(client: FlaskClient, seeded: Redis) -> None:
    data, headers = signed(VALID)
    headers["svix-signature"] = "v1,Zm9vYmFy " + headers["svix-signature"]
    assert client.post("/webhooks/clerk", data=data, headers=headers).status_code == 200


def test_health_endpoints(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/nope").status_code == 404
