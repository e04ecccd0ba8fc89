"""The example apps as tests/test_door.py serves them from real server processes (gunicorn, uvicorn,
hypercorn): each server builds its app with one of these factories, from the usual variables (the
Django project's settings are examples/django_app/settings.py).

Two things are added to each example, neither of which touches its checks:

- every answer carries ``X-Server-Pid``, so a test can tell that two requests reached the same process;
- Flask gets ``GET /whoami``, an unguarded view that asks `current_membership`, as views outside a
  decorator may, and answers ``{"membership": null}`` when it raises; Django gets one in each view kind,
  under each kind's prefix (``/whoami``, ``/cbv/whoami``, ``/async/whoami``, ``/api/whoami``).

``DOOR_PUSH_APP_CONTEXT=1`` makes the Flask factory push an app context and leave it pushed, as many
apps do at import (``app.app_context().push()`` before ``db.create_all()``): Flask then reuses that
context, and its ``flask.g``, for every request of the thread.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi import Response as AsgiResponse
from flask import Flask
from flask import Response as WsgiResponse

from cache.authz.flask import current_membership
from examples import fastapi_app, flask_app

PID_HEADER = "X-Server-Pid"


def flask_door() -> Flask:
    app = flask_app.create_app()

    @app.get("/whoami")
    def whoami() -> dict[str, str | None]:
        try:
            return {"membership": current_membership().organization_id}
        except RuntimeError:
            return {"membership": None}

    @app.after_request
    def say_pid(response: WsgiResponse) -> WsgiResponse:
        response.headers[PID_HEADER] = str(os.getpid())
        return response

    if os.environ.get("DOOR_PUSH_APP_CONTEXT") == "1":
        app.app_context().push()
    return app


def fastapi_door() -> FastAPI:
    app = fastapi_app.create_app()

    @app.middleware("http")
    async def say_pid(request: Request, call_next: Callable[[Request], Awaitable[AsgiResponse]]) -> AsgiResponse:
        response = await call_next(request)
        response.headers[PID_HEADER] = str(os.getpid())
        return response

    return app


def django_wsgi_door() -> Callable[..., Iterable[bytes]]:
    """The Django project's WSGI application (gunicorn), with the whoami views and ``X-Server-Pid``."""
    from examples.django_app.wsgi import application
    from tests import door_django

    door_django.add_whoami()

    def door(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            return start_response(status, [*headers, (PID_HEADER, str(os.getpid()))], *exc_info)

        return application(environ, start)

    return door


def django_asgi_door() -> Callable[..., Awaitable[None]]:
    """The Django project's ASGI application (uvicorn), with the whoami views and ``X-Server-Pid``."""
    from examples.django_app.asgi import application
    from tests import door_django

    door_django.add_whoami()

    async def door(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        async def say_pid(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                pid = (PID_HEADER.lower().encode(), str(os.getpid()).encode())
                message = {**message, "headers": [*message.get("headers", []), pid]}
            await send(message)

        await application(scope, receive, say_pid)

    return door
