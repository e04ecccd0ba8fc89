"""The worker's batch paths: re-warm many users, and patch the members an org event stashed.

Both take every lease first (taking over a dead holder's), then read Clerk, then write
through the same lease check as a lookup, so a change that lands meanwhile voids the
write. Lookups live in `cache.membership_cache`; this module is what only the worker
(and the operator CLI's ``warm``) needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any, TypeVar

from redis import Redis
from redis.exceptions import RedisError

from cache.budget import BudgetPolicy, ClerkBudget, Priority
from cache.clerk import ClerkClient
from cache.config import Settings
from cache.connections import RedisTarget, cache_redis
from cache.contract import (
    ROLE_PATCH_TAG,
    CorruptValue,
    Membership,
    check_org_id,
    check_user_id,
    decode_memberships,
    role_permissions_from_clerk,
    with_org_details,
    with_role_permissions,
)
from cache.errors import ClerkError, ClerkNotFound
from cache.membership_cache import fetch_memberships, fill_for
from cache.metrics import FILLS
from cache.protocol import Acquired, Fill, PatchAction, PatchOutcome, new_token
from worker.store import RefreshStore

T = TypeVar("T")


class Refresher:
    """Writes Clerk's answers back into Redis for users the intake invalidated.

    ``redis`` should be a fail-fast client (`cache.connections.cache_redis`); RedisError
    propagates, and the drain job's retry handles it.
    """

    def __init__(self, redis: Redis, clerk: ClerkClient, *, ttl_seconds: int = 300, lease_ms: int = 15_000) -> None:
        self.redis = redis
        self.clerk = clerk
        self.ttl_seconds = ttl_seconds
        self.lease_ms = lease_ms
        self.store = RefreshStore(redis)

    @classmethod
    def from_settings(cls, settings: Settings) -> Refresher:
        """As the worker and the CLI's ``warm`` run it: a fail-fast client, Clerk calls drawing from the
        re-warm share of the fleet's budget."""
        redis = cache_redis(RedisTarget.from_settings(settings))
        budget = ClerkBudget(redis, BudgetPolicy.from_settings(settings))
        clerk = ClerkClient(settings.clerk_secret_key, settings.clerk_api_url, budget=budget, priority=Priority.REWARM)
        return cls(redis, clerk, ttl_seconds=settings.user_orgs_ttl_seconds)

    def refresh_many(self, user_ids: Iterable[str], pool: Executor | None = None) -> dict[str, bool | ClerkError]:
        """Leases in one round trip, Clerk reads in parallel on ``pool``, fills in one round trip.

        Per user: True stored; False nothing to do (cached, refused because an
        invalidation won, or unknown to Clerk); or the ClerkError to retry on.
        """
        users = list(dict.fromkeys(check_user_id(u) for u in user_ids))
        tokens, leased = self._take_leases(users)
        outcomes: dict[str, bool | ClerkError] = dict.fromkeys(users, False)
        fills: list[Fill] = []
        try:
            for user_id, result in zip(leased, (pool.map if pool else map)(self._fetch_or_error, leased), strict=True):
                if isinstance(result, ClerkError):
                    if not isinstance(result, ClerkNotFound):
                        outcomes[user_id] = result
                else:
                    fills.append(fill_for(user_id, tokens[user_id], result))
            outcomes.update(self._fill_all(fills))
        finally:
            self._release_unfilled(tokens, leased, fills)
        return outcomes

    def patch_org(self, org_id: str, deleted: bool, user_ids: Sequence[str]) -> list[PatchOutcome]:
        """Rebuild values an org event stashed, from one Clerk read of the org (none for a deletion).

        Returns, per user, the stash read and what to do with the user next (`RefreshStore.finish_patch`).
        """
        check_org_id(org_id)

        def read_org() -> Any:
            if deleted:
                return None
            try:
                return self.clerk.get_organization(org_id)
            except ClerkNotFound:
                return None  # deleted since: drop it, as organization.deleted will

        return self._patch(
            org_id, user_ids, read_org, lambda memberships, org: with_org_details(memberships, org_id, org)
        )

    def patch_roles(self, user_ids: Sequence[str]) -> list[PatchOutcome]:
        """Rebuild values a role or permission event stashed, from one read of Clerk's role list.

        Every membership's permissions become its role's; a user holding a role the list lacks
        (deleted, or a legacy key) is re-read in full instead. fill.lua refuses the fills if a role
        event came after the leases (clerk-org-cache:roles-changed).
        """

        def read_roles() -> dict[str, tuple[str, ...]]:
            return dict(role_permissions_from_clerk(role) for role in self.clerk.list_roles())

        return self._patch(ROLE_PATCH_TAG, user_ids, read_roles, with_role_permissions)

    def _patch(
        self,
        tag: str,
        user_ids: Sequence[str],
        read: Callable[[], T],
        rebuild: Callable[[list[Membership], T], list[Membership]],
    ) -> list[PatchOutcome]:
        """The patch pass both kinds share: leases, one Clerk ``read``, each stash ``rebuild`` and filled back.

        Leases are taken first, then Clerk is read, so any change after that voids the fill. Each
        lease is taken in the same step as the stash is read, so a later event's newer stash is
        never settled unpatched. A patched value keeps its stash's absolute expiry: patching never
        extends how long memberships go unread, however slow the read. A stash of another tag, a
        value ``rebuild`` refuses (CorruptValue) or a failed read sends the user to a full re-read.
        """
        tokens = {check_user_id(u): new_token() for u in user_ids}
        acquired = self.store.acquire_patch_many(list(tokens.items()), self.lease_ms)
        stashes = {u: stash for u, (_, stash) in zip(tokens, acquired, strict=True)}
        leased = [u for u, (state, _) in zip(tokens, acquired, strict=True) if state is Acquired.LEASE]
        actions = dict.fromkeys(user_ids, PatchAction.DONE)  # not leased: a fresh value is already there
        fills: list[Fill] = []
        try:
            if any(stashes[u] is not None for u in leased):
                try:
                    clerk_state = read()
                except (ClerkError, CorruptValue):
                    for user_id in leased:
                        actions[user_id] = PatchAction.REFRESH
                    leased = []
            for user_id in leased:
                stash = stashes[user_id]
                if stash is None:  # dropped by a later change (which queued what it needed) or expired
                    continue
                try:
                    if stash.org_id != tag:
                        raise CorruptValue("stashed for another patch")
                    patched = rebuild(decode_memberships(stash.value), clerk_state)
                except CorruptValue:
                    actions[user_id] = PatchAction.REFRESH
                    continue
                fill = fill_for(user_id, tokens[user_id], patched)
                fills.append(replace(fill, expire_at_ms=stash.expire_at_ms))
            for user_id, stored in self._fill_all(fills).items():
                # refused: an event came in since the leases were taken; patch again
                actions[user_id] = PatchAction.DONE if stored else PatchAction.RETRY
        finally:
            self._release_unfilled(tokens, leased, fills)
        return [PatchOutcome(u, stashes[u], actions[u]) for u in tokens]

    def _take_leases(self, user_ids: Sequence[str]) -> tuple[dict[str, str], list[str]]:
        """Take (over) every user's lease in one round trip: (tokens, users whose value is absent)."""
        tokens = {check_user_id(u): new_token() for u in user_ids}
        states = self.store.acquire_many(list(tokens.items()), self.lease_ms, take_over=True)
        return tokens, [u for u, (state, _) in zip(tokens, states, strict=True) if state is Acquired.LEASE]

    def _fill_all(self, fills: Sequence[Fill]) -> dict[str, bool]:
        """FILL each in one round trip; per user, whether it was stored."""
        if not fills:
            return {}
        stored = dict(zip((f.user_id for f in fills), self.store.fill_many(fills, self.ttl_seconds), strict=True))
        for ok in stored.values():
            FILLS.labels("stored" if ok else "refused").inc()
        return stored

    def _release_unfilled(self, tokens: dict[str, str], leased: Sequence[str], fills: Sequence[Fill]) -> None:
        """Give back every lease no fill consumed (an error, a skip), so lookups need not wait it out."""
        filled = {f.user_id for f in fills}
        for user_id in leased:
            if user_id not in filled:
                try:
                    self.store.release(user_id, tokens[user_id])
                except RedisError:
                    return  # Redis is gone: the leases expire by themselves

    def _fetch_or_error(self, user_id: str) -> list[Membership] | ClerkError:
        try:
            return fetch_memberships(self.clerk, user_id)
        except ClerkError as exc:
            return exc
