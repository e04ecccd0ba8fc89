"""Carries out `cache.effects` on asyncio: ``redis.asyncio`` and an ``httpx.AsyncClient``.

The blocking runner, `cache.io`, is generated from this file by ``python -m devstack.unasync``
(as httpcore generates its sync code; a test fails when the two differ), so they cannot drift:
the same effects, the same results, the same errors thrown back into the program (redis-py's
exception classes; `HttpFailed` for a transport failure). Here waits never block the event
loop, and a cancelled caller's ``CancelledError`` is thrown into the program too, so a lookup
holding a lease gives it back before it ends.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import httpx
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from cache.effects import (
    HttpFailed,
    HttpGet,
    HttpResponse,
    Program,
    RedisCommand,
    RedisGet,
    RedisPipeline,
    RunScript,
    SentinelNodes,
    SentinelView,
    SentinelViews,
    Sleep,
)
from cache.scripts import LoadedScripts

T = TypeVar("T")


class AsyncIO:
    """One program runner over the clients it is given (each effect needs only its own client)."""

    def __init__(
        self,
        redis: Redis | None = None,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.redis = redis
        self._http = http
        self._scripts: LoadedScripts[AsyncScript] | None = None

    async def run(self, program: Program[T]) -> T:
        """Drive ``program`` to its end and return its answer (or raise what it raises)."""
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = program.send(send) if error is None else program.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            send, error = None, None
            try:
                send = await self.do(effect)
            except BaseException as exc:
                error = exc

    async def do(self, effect: Any) -> Any:
        """One effect's result."""
        if isinstance(effect, RedisGet):
            return await self._redis().get(effect.key)
        if isinstance(effect, RunScript):
            return await self._script(effect)(keys=effect.keys, args=effect.args)
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, HttpGet):
            return await self._http_get(effect)
        if isinstance(effect, RedisCommand):
            return await self._redis().execute_command(*effect.args)  # type: ignore[no-untyped-call]
        if isinstance(effect, RedisPipeline):
            return await self.pipeline(effect)
        if isinstance(effect, SentinelView):
            return await self._sentinel_view()
        raise TypeError(f"not an effect: {effect!r}")

    async def pipeline(self, effect: RedisPipeline) -> list[Any]:
        async with self._redis().pipeline(transaction=False) as pipe:
            for step in effect.steps:
                if isinstance(step, RunScript):
                    await self._script(step)(keys=step.keys, args=step.args, client=pipe)
                else:
                    pipe.execute_command(*step.args)
            return await pipe.execute()

    async def _sentinel_view(self) -> SentinelViews | None:
        """`SentinelView`: ``SENTINEL MASTER`` and ``SENTINEL REPLICAS`` from every sentinel, in one round trip
        each; one that does not answer is left out (the check decides whether enough did)."""
        pool = self._redis().connection_pool
        manager = getattr(pool, "sentinel_manager", None)
        if manager is None:
            return None
        views = []
        for sentinel in manager.sentinels:
            try:
                async with sentinel.pipeline(transaction=False) as pipe:
                    pipe.execute_command("SENTINEL MASTER", pool.service_name)  # type: ignore[attr-defined]
                    pipe.execute_command("SENTINEL SLAVES", pool.service_name)  # type: ignore[attr-defined]
                    master, replicas = await pipe.execute()
            except RedisError:
                continue
            views.append(SentinelNodes.from_replies(master, replicas))
        return SentinelViews(len(manager.sentinels), tuple(views))

    def _redis(self) -> Redis:
        assert self.redis is not None, "this runner has no Redis client"
        return self.redis

    def _script(self, effect: RunScript) -> AsyncScript:
        if self._scripts is None:
            self._scripts = LoadedScripts(self._redis().register_script)
        return self._scripts.get(effect.name, effect.unflagged)

    async def _http_get(self, effect: HttpGet) -> HttpResponse:
        assert self._http is not None, "this runner has no HTTP client"
        try:
            response = await self._http.get(
                effect.url,
                params=list(effect.params),
                headers=dict(effect.headers),
                timeout=httpx.Timeout(effect.read_timeout_s, connect=effect.connect_timeout_s),
            )
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError, ExceptionGroup) as exc:
            # everything the call itself can fail with (anyio may group a socket error), as requests'
            # RequestException covers it in the sync runner
            raise HttpFailed(type(exc).__name__) from exc
        return HttpResponse(response.status_code, response.content, response.headers.get("Retry-After"))
