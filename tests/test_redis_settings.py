"""Redis settings that would void the guarantee are reported; a full Redis still applies revocations."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from redis import Redis

from cache.contract import user_orgs_key
from devstack.redis_server import RedisServer
from devstack.signing import new_message_id
from service.redis_checks import risky_settings
from tests.support import ALICE, intake_client, post_event, queued_jobs


@pytest.fixture
def scratch_redis(own_redis: RedisServer) -> Iterator[Redis]:
    """A client on a server of this test's own, whose settings it changes."""
    client = Redis.from_url(own_redis.url, decode_responses=True)
    yield client
    client.close()


def test_safe_settings_give_no_warning(scratch_redis: Redis) -> None:
    assert risky_settings(scratch_redis) == []


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("maxmemory-policy", "allkeys-lru", "noeviction"),
        ("maxmemory-policy", "volatile-ttl", "noeviction"),
        ("save", "3600 1", "snapshots"),
    ],
)
def test_risky_settings_are_named(scratch_redis: Redis, setting: str, value: str, words: str) -> None:
    scratch_redis.config_set(setting, value)
    warnings = risky_settings(scratch_redis)
    assert len(warnings) == 1 and words in warnings[0]


def test_aof_without_fsync_always_is_named(scratch_redis: Redis) -> None:
    scratch_redis.config_set("appendonly", "yes")
    scratch_redis.config_set("appendfsync", "everysec")
    assert any("appendfsync is everysec" in w for w in risky_settings(scratch_redis))
    scratch_redis.config_set("appendfsync", "always")
    assert risky_settings(scratch_redis) == []


def test_a_full_redis_still_accepts_a_revocation(own_redis: RedisServer, scratch_redis: Redis) -> None:
    client: FlaskClient = intake_client(own_redis.url)
    scratch_redis.set(user_orgs_key(ALICE), json.dumps([{"organizationId": "org_2acme"}]))
    used = int(scratch_redis.info("memory")["used_memory"])
    scratch_redis.config_set("maxmemory", str(used + 200_000))
    with pytest.raises(Exception, match="maxmemory"):
        for i in range(100_000):
            scratch_redis.set(f"ballast:{i}", "x" * 1000)
    event = {
        "type": "organizationMembership.deleted",
        "data": {"organization": {"id": "org_2acme"}, "public_user_data": {"user_id": ALICE}},
    }
    msg_id = new_message_id()

    response = post_event(client, event, msg_id=msg_id)

    # The revocation is in force at once; the refresh job could not be queued, so the answer is 503
    # and Svix's retry queues it once Redis has room again.
    assert scratch_redis.exists(user_orgs_key(ALICE)) == 0
    assert response.status_code == 503, response.json
    scratch_redis.config_set("maxmemory", "0")
    assert post_event(client, event, msg_id=msg_id).status_code == 200
    assert queued_jobs(scratch_redis) == 1
