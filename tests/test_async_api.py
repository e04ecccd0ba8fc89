"""What only the async API does: lookups of one user share a flight that has not sent anything
yet (and only such a flight), a cancelled lookup gives its lease back, and the module-level
functions build a cache per event loop from the environment. The read path itself runs
against both APIs in test_cache_read_path.py and test_races.py."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
import requests
from flask.testing import FlaskClient
from redis import Redis

import cache.aio as cache_aio
from cache import Membership, contract
from cache.effects import RunScript
from cache.io import SyncIO
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from tests.read_apis import AsyncApi, Kind, ReadApi
from tests.support import ALICE, CLERK_KEY, cached_users, held_leases, orgs_with_member, post_event


@pytest.fixture
def async_api(open_api: Callable[..., ReadApi], redis_server: RedisServer, clerk: ClerkStandIn) -> ReadApi:
    return open_api(redis_server.url, clerk.url)


@pytest.fixture
def api_kind() -> Kind:
    return "async"  # this module is about the async API alone


def test_a_thousand_concurrent_cold_lookups_cost_one_read_of_everything(
    async_api: ReadApi, redis: Redis, clerk: ClerkStandIn
) -> None:
    orgs_with_member(clerk, ALICE, "Acme", "Globex")
    clerk.latency_s = 0.05
    clerk.reset_counts()
    answers = async_api.concurrent_lookups(ALICE, 1000)
    assert [len(answer) for answer in answers] == [2] * 1000
    assert clerk.call_count() == 1
    stats = async_api.stats.snapshot()
    assert (stats["misses"], stats["coalesced"], stats["fills"]) == (1, 999, 1)
    assert cached_users(redis) == [ALICE]


def test_a_lookup_begun_after_an_acknowledged_event_never_shares_an_older_flight(
    async_api: ReadApi, client: FlaskClient, redis: Redis, clerk: ClerkStandIn
) -> None:
    """Flight A has read Clerk (held there); the member is removed and the intake answers 2xx;
    lookup B starts only then. A answers as it read; B must not be handed A's answer."""
    (acme,) = orgs_with_member(clerk, ALICE, "Acme")
    answers: dict[str, list[str]] = {}

    def look(name: str) -> None:
        answers[name] = [m.organization_id for m in async_api.get_memberships(ALICE)]

    with clerk.hold(ALICE) as gate:
        first = threading.Thread(target=look, args=("A",))
        first.start()
        assert gate.wait_arrived()
        assert post_event(client, clerk.remove_membership(ALICE, acme)).status_code == 200
        second = threading.Thread(target=look, args=("B",))
        second.start()
        assert gate.wait_arrived(count=2)  # B read Clerk itself (after the removal)
    first.join(10)
    second.join(10)
    assert answers == {"A": [acme], "B": []}
    assert async_api.stats.snapshot()["coalesced"] == 0
    assert cached_users(redis) == [ALICE] and async_api.get_memberships(ALICE) == []


def test_a_lookup_every_caller_gave_up_on_gives_its_lease_back(
    async_api: ReadApi, redis: Redis, clerk: ClerkStandIn
) -> None:
    """Two callers share a lookup held in Clerk. The first gives up: its lookup stops and gives its
    lease back, and the other looks up anew, taking a lease of its own (another token: the first one's
    is gone, not merely outlived). Both gave up: no lease is left behind, so no one waits for a dead
    fill. Each caller gives up when the test cancels it, at a point the stand-in's gate shows."""
    assert isinstance(async_api, AsyncApi)
    orgs_with_member(clerk, ALICE, "Acme")
    lease = contract.lease_key(ALICE)
    loop = async_api._loop
    callers: list[asyncio.Task[list[Membership]]] = []

    async def two_callers() -> list[list[Membership] | BaseException]:
        # created in one loop turn: the second joins the first's lookup before it sends anything
        callers.extend(asyncio.create_task(async_api.cache.get_memberships(ALICE)) for _ in range(2))
        return await asyncio.gather(*callers, return_exceptions=True)

    with clerk.hold(ALICE) as gate:
        both = asyncio.run_coroutine_threadsafe(two_callers(), loop)
        assert gate.wait_arrived(timeout=10)
        first_token = redis.get(lease)
        assert first_token is not None  # the shared lookup's lease
        assert async_api.stats.snapshot()["coalesced"] == 1
        loop.call_soon_threadsafe(callers[0].cancel)  # the first caller gives up
        assert gate.wait_arrived(timeout=10, count=2), "the other caller did not look up anew"
        second_token = redis.get(lease)
        assert second_token is not None, "the other caller's new lookup holds no lease"
        assert second_token != first_token, "the lease of the lookup its caller gave up on is still held"
        loop.call_soon_threadsafe(callers[1].cancel)  # and the other gives up too
        outcomes = both.result(timeout=10)
        assert [type(outcome) for outcome in outcomes] == [asyncio.CancelledError] * 2
        assert held_leases(redis) == []  # each lookup gave its lease back before its caller heard
    assert clerk.call_count() == 2
    assert cached_users(redis) == []  # the cancelled reads stored nothing
    assert [m.organization_name for m in async_api.get_memberships(ALICE)] == ["Acme"]


def test_module_functions_build_a_cache_per_event_loop_from_the_environment(
    redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    (acme,) = orgs_with_member(clerk, ALICE, "Acme", role="org:admin")
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("CLERK_SECRET_KEY", CLERK_KEY)
    monkeypatch.setenv("CLERK_API_URL", clerk.url)
    cache_aio.set_default_cache(None)

    async def ask() -> tuple[str | None, int]:
        membership = await cache_aio.get_user_org_membership(ALICE, acme)
        await cache_aio.invalidate_user_org_memberships(ALICE)
        return (membership.role if membership else None), len(await cache_aio.get_cached_user_org_memberships(ALICE))

    try:
        assert asyncio.run(ask()) == ("org:admin", 1)
        assert asyncio.run(ask()) == ("org:admin", 1)  # a second loop gets a cache of its own
    finally:
        cache_aio.set_default_cache(None)
    assert clerk.call_count() == 3  # the first lookup of each loop, and each read after an invalidation


def test_joiners_get_their_own_answer_whatever_the_first_caller_does_with_its_list(
    async_api: ReadApi, redis: Redis, clerk: ClerkStandIn
) -> None:
    """Found in review: the leader's list was handed to the joiners, so a caller that appended to its
    result (say, a synthetic admin membership) changed what the others were told."""
    (acme,) = orgs_with_member(clerk, ALICE, "Acme")
    forged = Membership("org_2forged", "forged", "Forged", None, "org:admin")

    async def two_requests() -> list[str]:
        async def careless() -> None:
            mine = await async_api.cache.get_memberships(ALICE)
            mine.append(forged)

        async def other() -> list[str]:
            return [m.organization_id for m in await async_api.cache.get_memberships(ALICE)]

        _, seen = await asyncio.gather(careless(), other())
        return seen

    assert async_api._run(two_requests()) == [acme]  # type: ignore[attr-defined]
    assert async_api.stats.snapshot()["coalesced"] == 1


@pytest.mark.parametrize("step", ["acquire", "fill"])
def test_a_lookup_abandoned_while_a_reply_is_on_its_way_leaves_no_lease(
    async_api: ReadApi, redis: Redis, clerk: ClerkStandIn, step: str
) -> None:
    """Found in review: a caller cancelled while ACQUIRE's (or FILL's) reply was on its way left the lease
    the script had granted (or a FILL that never ran left the lease), and every lookup of the user
    waited 2 s for 15 s. Driven here a step at a time, as a runner does, on the real Redis: the
    caller's cancellation arrives instead of the reply."""
    orgs_with_member(clerk, ALICE, "Acme")
    io = SyncIO(redis, http=requests.Session())  # the Clerk read goes to the stand-in, as the cache's would
    program = async_api.cache.read_path.memberships_program(ALICE)
    effect = next(program)
    while not (isinstance(effect, RunScript) and effect.name == step):
        effect = program.send(io.do(effect))
    if step == "acquire":
        io.do(effect)  # the script ran and granted the lease ...
    # ... (or, for the FILL, never ran: the lease still stands) but the caller gave up before the reply
    assert held_leases(redis) == [ALICE]
    effect = program.throw(asyncio.CancelledError())
    assert isinstance(effect, RunScript) and effect.name == "release"
    io.do(effect)
    with pytest.raises(asyncio.CancelledError):
        program.send(None)
    assert held_leases(redis) == []
