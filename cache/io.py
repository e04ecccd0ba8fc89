# Generated from cache/aio/io.py by `python -m devstack.unasync`: edit that file, then regenerate.
"""Carries out `cache.effects` with blocking clients: ``redis.Redis`` and a ``requests.Session``.

Generated from `cache.aio.io`, so the two runners cannot drift. Errors are translated at this
boundary: a requests transport failure becomes `HttpFailed`; Redis errors are redis-py's own
(the async client raises the same classes). Either is thrown into the program at the
``yield`` that asked for the I/O.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

import requests
from redis import Redis
from redis.commands.core import Script
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


class SyncIO:
    """One program runner over the clients it is given (each effect needs only its own client)."""

    def __init__(
        self,
        redis: Redis | None = None,
        *,
        http: requests.Session | None = None,
    ) -> None:
        self.redis = redis
        self._http = http
        self._scripts: LoadedScripts[Script] | None = None

    def run(self, program: Program[T]) -> T:
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
                send = self.do(effect)
            except BaseException as exc:
                error = exc

    def do(self, effect: Any) -> Any:
        """One effect's result."""
        if isinstance(effect, RedisGet):
            return self._redis().get(effect.key)
        if isinstance(effect, RunScript):
            return self._script(effect)(keys=effect.keys, args=effect.args)
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        if isinstance(effect, HttpGet):
            return self._http_get(effect)
        if isinstance(effect, RedisCommand):
            return self._redis().execute_command(*effect.args)  # type: ignore[no-untyped-call]
        if isinstance(effect, RedisPipeline):
            return self.pipeline(effect)
        if isinstance(effect, SentinelView):
            return self._sentinel_view()
        raise TypeError(f"not an effect: {effect!r}")

    def pipeline(self, effect: RedisPipeline) -> list[Any]:
        with self._redis().pipeline(transaction=False) as pipe:
            for step in effect.steps:
                if isinstance(step, RunScript):
                    self._script(step)(keys=step.keys, args=step.args, client=pipe)
                else:
                    pipe.execute_command(*step.args)  # type: ignore[no-untyped-call]
            return pipe.execute()

    def _sentinel_view(self) -> SentinelViews | None:
        """`SentinelView`: ``SENTINEL MASTER`` and ``SENTINEL REPLICAS`` from every sentinel, in one round trip
        each; one that does not answer is left out (the check decides whether enough did)."""
        pool = self._redis().connection_pool
        manager = getattr(pool, "sentinel_manager", None)
        if manager is None:
            return None
        views = []
        for sentinel in manager.sentinels:
            try:
                with sentinel.pipeline(transaction=False) as pipe:
                    pipe.execute_command("SENTINEL MASTER", pool.service_name)  # type: ignore[attr-defined]
                    pipe.execute_command("SENTINEL SLAVES", pool.service_name)  # type: ignore[attr-defined]
                    master, replicas = pipe.execute()
            except RedisError:
                continue
            views.append(SentinelNodes.from_replies(master, replicas))
        return SentinelViews(len(manager.sentinels), tuple(views))

    def _redis(self) -> Redis:
        assert self.redis is not None, "this runner has no Redis client"
        return self.redis

    def _script(self, effect: RunScript) -> Script:
        if self._scripts is None:
            self._scripts = LoadedScripts(self._redis().register_script)
        return self._scripts.get(effect.name, effect.unflagged)

    def _http_get(self, effect: HttpGet) -> HttpResponse:
        assert self._http is not None, "this runner has no HTTP client"
        try:
            response = self._http.get(
                effect.url,
                params=list(effect.params),
                headers=dict(effect.headers),
                timeout=(effect.connect_timeout_s, effect.read_timeout_s),
            )
        except requests.RequestException as exc:
            raise HttpFailed(type(exc).__name__) from exc
        return HttpResponse(response.status_code, response.content, response.headers.get("Retry-After"))
