"""The Clerk client over ``httpx.AsyncClient``: the twin of `cache.clerk`, whose programs
(`cache.clerk.ClerkReads`: paging, retries, timeouts, the budget) it runs."""

from __future__ import annotations

from typing import Any, Unpack

import httpx

from cache.aio.budget import AsyncClerkBudget
from cache.aio.io import AsyncIO
from cache.clerk import ClerkOptions, ClerkReads


class AsyncClerkClient(ClerkReads):
    """`ClerkReads` over an ``httpx.AsyncClient`` (injectable: tests, custom transports).

    Its own runner serves direct calls; in a lookup, the cache's runner carries out the same
    programs over this client.
    """

    def __init__(
        self,
        secret_key: str,
        api_url: str = "https://api.clerk.com",
        *,
        http: httpx.AsyncClient | None = None,
        budget: AsyncClerkBudget | None = None,
        **options: Unpack[ClerkOptions],
    ) -> None:
        super().__init__(secret_key, api_url, budget=budget, **options)
        self.http = http or httpx.AsyncClient()
        self._io = AsyncIO(budget.redis if budget else None, http=self.http)

    async def list_user_memberships(self, user_id: str) -> list[dict[str, Any]]:
        """All of a user's organization memberships, every page."""
        return await self._io.run(self.user_memberships_program(user_id))

    async def get_organization(self, org_id: str) -> dict[str, Any]:
        return await self._io.run(self.organization_program(org_id))

    async def list_roles(self) -> list[dict[str, Any]]:
        """Every role of the instance, with its permissions."""
        return await self._io.run(self.roles_program())

    async def aclose(self) -> None:
        await self.http.aclose()
