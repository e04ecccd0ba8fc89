"""The fleet's Clerk budget over a ``redis.asyncio`` client: the twin of `cache.budget`.

The rules are `cache.budget.BudgetRules`' programs; an async cache's runner carries them
out as part of each lookup's Clerk read, so this class only holds the policy and the client.
"""

from __future__ import annotations

from redis.asyncio import Redis

from cache.budget import BudgetPolicy, BudgetRules


class AsyncClerkBudget(BudgetRules):
    """The fleet's Clerk budget (`cache.budget`) over a ``redis.asyncio`` client."""

    def __init__(self, redis: Redis, policy: BudgetPolicy | None = None) -> None:
        super().__init__(policy)
        self.redis = redis
