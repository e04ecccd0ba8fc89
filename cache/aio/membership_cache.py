"""The read-through membership cache on asyncio: the twin of `cache.membership_cache`.

The decisions are `cache.read_path`'s programs, carried out by one `cache.aio.io.AsyncIO`
over ``redis.asyncio`` and the Clerk client's ``httpx.AsyncClient``; nothing here blocks
the event loop.

One thing only the async cache does: lookups of one user that arrive before that user's
lookup has sent anything share it (1,000 concurrent cold lookups cost one GET, one lease
and one Clerk read). A lookup never joins one whose Redis read is already on its way, so
each answer still comes from reads issued after its own call began: freshness is the
same as the sync API's.
"""

from __future__ import annotations

import asyncio
from typing import Unpack

from redis.asyncio import Redis

from cache.aio.clerk import AsyncClerkClient
from cache.aio.io import AsyncIO
from cache.contract import Membership, check_org_id, check_user_id
from cache.read_path import MembershipCacheBase, ReadPathOptions, membership_in


class AsyncMembershipCache(MembershipCacheBase):
    """Answers "which orgs is this user in, with which role?" from Redis, else Clerk, on asyncio.

    Build one per event loop with injected clients; ``redis`` should be a fail-fast
    client such as `cache.connections.async_cache_redis`. Options as `cache.MembershipCache`'s,
    and as there one runner, over ``redis`` and the Clerk client's ``http``, carries out every
    effect of a lookup (the budget's scripts included).
    """

    def __init__(self, redis: Redis, clerk: AsyncClerkClient, **options: Unpack[ReadPathOptions]) -> None:
        super().__init__(clerk, **options)
        self.redis = redis
        self.clerk = clerk
        self._io = AsyncIO(redis, http=clerk.http)
        self._forming: dict[str, _Flight] = {}  # lookups not yet sent, by user

    async def get_memberships(self, user_id: str) -> list[Membership]:
        """The user's memberships; raises ClerkError subclasses only if Clerk is needed and fails."""
        near = self.read_path.near
        if near is not None:
            hit = near.get(user_id)  # a dict read: no await, no I/O
            if hit is not None:
                return hit
        check_user_id(user_id)
        loop = asyncio.get_running_loop()
        flight = self._forming.get(user_id)
        if flight is not None and flight.loop is loop:
            return await self._join(flight, user_id)
        flight = _Flight(loop)
        self._forming[user_id] = flight
        try:
            try:
                await asyncio.sleep(0)  # one loop turn: lookups of this user begun in it join before anything is sent
            finally:
                if self._forming.get(user_id) is flight:
                    del self._forming[user_id]  # from here on the reads go out: a later caller starts its own
            answer = await self._io.run(self.read_path.memberships_program(user_id))
        except asyncio.CancelledError:
            flight.settle(error=_LeaderGaveUp())  # the program gave its lease back; the joiners look up anew
            raise
        except BaseException as exc:
            flight.settle(error=exc)  # a Clerk error is their answer too: they joined before any read
            raise
        flight.settle(answer=list(answer))  # a copy: the leader's caller may change its own list
        return answer

    async def _join(self, flight: _Flight, user_id: str) -> list[Membership]:
        self.stats.add("coalesced")
        flight.joiners += 1
        try:
            return list(await asyncio.shield(flight.future))  # one joiner giving up leaves the others' answer
        except asyncio.CancelledError:
            flight.joiners -= 1
            raise
        except _LeaderGaveUp:
            return await self.get_memberships(user_id)  # reads issued now, after this call began: as fresh

    async def get_membership(self, user_id: str, organization_id: str) -> Membership | None:
        """The user's membership in one org, or None: the question most auth checks ask."""
        check_org_id(organization_id)
        return membership_in(await self.get_memberships(user_id), organization_id)

    async def invalidate(self, user_id: str) -> None:
        """Drop the user's cached value and void any fill in flight.

        Raises CacheUnavailable if Redis cannot confirm it, or NotReplicated (a
        CacheUnavailable) if too few replicas acknowledged it: the caller must know.
        """
        await self._io.run(self.read_path.invalidate_program(user_id))

    async def aclose(self) -> None:
        """Close both clients (the cache is unusable afterwards)."""
        await self.clerk.aclose()
        await self.redis.aclose()


class _LeaderGaveUp(Exception):
    """The lookup others joined was cancelled by its own caller: each joiner looks up itself."""


class _Flight:
    """A lookup of one user that others may join until it sends its first read."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[Membership]] = loop.create_future()
        self.joiners = 0

    def settle(self, *, answer: list[Membership] | None = None, error: BaseException | None = None) -> None:
        if not self.joiners:
            return  # nobody to tell (and no "exception never retrieved" warning)
        if error is not None:
            self.future.set_exception(error)
        else:
            assert answer is not None
            self.future.set_result(answer)
