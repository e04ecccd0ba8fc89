"""The guarantee where the user meets it: at the door of a real app, served by a real server process.

Each example app (examples/, with real RS256 session tokens) runs under a real server: Flask under
gunicorn's sync and gthread workers, each with and without an app context pushed at import, and
FastAPI under uvicorn and hypercorn. Clerk is the stand-in; the intake is the Procfile's stack (web and
worker) on the same private Redis. Every check runs the same story: the user is allowed; Clerk
changes; the signed webhook gets its 2xx; the very next request to the same server process is refused.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from redis import Redis

from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer, free_port
from devstack.signing import signed_event
from devstack.stack import REPO, LocalStack
from devstack.waiting import wait_until
from tests.door_apps import PID_HEADER
from tests.sessions import ORIGIN, PUBLIC_PEM, session_token
from tests.support import CLERK_KEY, SIGNING_SECRET, stack_env, stop_process

FLASK, FASTAPI = "tests.door_apps:flask_door()", "tests.door_apps:fastapi_door()"
GUNICORN = [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", "127.0.0.1:{port}"]
SERVERS: dict[str, tuple[list[str], dict[str, str]]] = {
    "flask-gunicorn-sync": ([*GUNICORN, "--worker-class", "sync", FLASK], {}),
    "flask-gunicorn-sync-app-context-pushed": (
        [*GUNICORN, "--worker-class", "sync", FLASK],
        {"DOOR_PUSH_APP_CONTEXT": "1"},
    ),
    "flask-gunicorn-gthread": ([*GUNICORN, "--worker-class", "gthread", "--threads", "4", FLASK], {}),
    "flask-gunicorn-gthread-app-context-pushed": (
        [*GUNICORN, "--worker-class", "gthread", "--threads", "4", FLASK],
        {"DOOR_PUSH_APP_CONTEXT": "1"},
    ),
    "fastapi-uvicorn": (
        [sys.executable, "-m", "uvicorn", "--factory", FASTAPI.removesuffix("()"), "--port", "{port}"],
        {},
    ),
    "fastapi-hypercorn": ([sys.executable, "-m", "hypercorn", "--bind", "127.0.0.1:{port}", FASTAPI], {}),
}


@dataclass
class Door:
    """One server process running an example app; ``get`` asks it as a signed-in browser would."""

    name: str
    url: str
    pids: set[str] = field(default_factory=set)

    @property
    def framework(self) -> str:
        return self.name.split("-")[0]

    def get(self, path: str, user: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {session_token(user)}"}
        response = requests.get(self.url + path, headers=headers, timeout=30)
        self.pids.add(response.headers[PID_HEADER])
        return response.status_code, response.json()


@pytest.fixture(scope="module")
def door_clerk() -> Iterator[ClerkStandIn]:
    """One Clerk stand-in for the module's servers (each test makes its own users and orgs)."""
    with ClerkStandIn(secret_key=CLERK_KEY) as standin:
        yield standin


@pytest.fixture(scope="module")
def intake(redis_server: RedisServer, door_clerk: ClerkStandIn) -> Iterator[str]:
    """The Procfile's web and worker processes on the session's Redis: where Clerk's webhooks land."""
    if not redis_server.running:  # a test may have stopped it
        redis_server.start()
    Redis.from_url(redis_server.url).flushall()
    with LocalStack(stack_env(redis_server.url, door_clerk), log=subprocess.DEVNULL) as stack:  # type: ignore[arg-type]
        yield stack.url


@pytest.fixture(scope="module", params=sorted(SERVERS))
def door(
    request: pytest.FixtureRequest, intake: str, redis_server: RedisServer, door_clerk: ClerkStandIn
) -> Iterator[Door]:
    argv, extra = SERVERS[request.param]
    port = free_port()
    env = {
        **stack_env(redis_server.url, door_clerk),
        "CLERK_JWT_KEY": PUBLIC_PEM,
        "CLERK_AUTHORIZED_PARTIES": ORIGIN,
        **extra,
    }
    command = [part.format(port=port) for part in argv]
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    door = Door(request.param, f"http://127.0.0.1:{port}")

    def answers() -> bool:
        assert server.poll() is None, f"{request.param} exited with {server.returncode}"
        try:
            return requests.get(door.url + "/up", timeout=1).status_code == 404
        except (requests.ConnectionError, requests.Timeout):  # a worker still booting holds accepted connections
            return False

    try:
        wait_until(answers, 30, what=f"{request.param} to answer")
        yield door
    finally:
        stop_process(server)


@pytest.fixture
def same_process(door: Door) -> Iterator[Door]:
    """The door, checked after the test: every answer of the test came from one server process."""
    door.pids.clear()
    yield door
    assert len(door.pids) == 1, f"answers came from processes {door.pids}"


def deliver(intake: str, event: dict[str, Any]) -> tuple[int, Any]:
    """Clerk's webhook for ``event``, signed as Svix signs it, posted to the intake."""
    body, headers = signed_event(SIGNING_SECRET, event)
    response = requests.post(intake + "/webhooks/clerk", data=body, headers=headers, timeout=30)
    return response.status_code, response.json()


@dataclass(frozen=True)
class Admin:
    user: str
    org: str
    slug: str
    name: str

    def ref(self, by: str) -> str:
        return self.org if by == "id" else self.slug


def new_admin(clerk: ClerkStandIn) -> Admin:
    """A new user, admin of a new org, in Clerk (nothing cached yet)."""
    user = "user_" + secrets.token_hex(12)
    slug = "door-" + secrets.token_hex(4)
    name = f"Door {slug}"
    org = clerk.create_org(name, slug=slug)["data"]["id"]
    clerk.add_membership(user, org, "org:admin")
    return Admin(user, org, slug, name)


PROCESSED = (200, {"status": "processed"})
ROLE_NOT_ALLOWED = (403, {"error": "role_not_allowed", "message": "your role in this organization does not allow this"})
NOT_A_MEMBER = (403, {"error": "not_a_member", "message": "you are not a member of this organization"})
UNAVAILABLE = (503, {"error": "authorization_unavailable", "message": "authorization cannot be decided now; try again"})


@pytest.mark.parametrize("by", ["id", "slug"])
def test_a_demoted_admin_is_refused_on_the_very_next_request(
    same_process: Door, intake: str, door_clerk: ClerkStandIn, by: str
) -> None:
    door, admin = same_process, new_admin(door_clerk)
    settings = f"/orgs/{admin.ref(by)}/settings"
    for _ in range(2):  # a miss, then a hit
        assert door.get(settings, admin.user) == (200, {"org_id": admin.org, "slug": admin.slug})

    assert deliver(intake, door_clerk.update_membership(admin.user, admin.org, "org:member")) == PROCESSED

    assert door.get(settings, admin.user) == ROLE_NOT_ALLOWED
    assert door.get(f"/orgs/{admin.ref(by)}/dashboard", admin.user) == (200, {"org": admin.name, "role": "org:member"})


@pytest.mark.parametrize("by", ["id", "slug"])
def test_a_removed_member_is_refused_on_the_very_next_request(
    same_process: Door, intake: str, door_clerk: ClerkStandIn, by: str
) -> None:
    door, admin = same_process, new_admin(door_clerk)
    dashboard = f"/orgs/{admin.ref(by)}/dashboard"
    assert door.get(dashboard, admin.user) == (200, {"org": admin.name, "role": "org:admin"})

    assert deliver(intake, door_clerk.remove_membership(admin.user, admin.org)) == PROCESSED

    assert door.get(dashboard, admin.user) == NOT_A_MEMBER


def test_a_failed_lookup_is_not_remembered_by_later_requests(
    same_process: Door, intake: str, door_clerk: ClerkStandIn
) -> None:
    door, admin = same_process, new_admin(door_clerk)
    settings = f"/orgs/{admin.org}/settings"
    assert door.get(settings, admin.user)[0] == 200
    door_clerk.fail_next(100_000, status=500)
    try:
        assert deliver(intake, door_clerk.update_membership(admin.user, admin.org, "org:admin")) == PROCESSED
        assert door.get(settings, admin.user) == UNAVAILABLE  # revoked, and Clerk cannot be read
    finally:
        door_clerk.clear_failures()

    assert door.get(settings, admin.user) == (200, {"org_id": admin.org, "slug": admin.slug})


def test_current_membership_outside_a_guarded_view_is_no_one_s(door: Door, door_clerk: ClerkStandIn) -> None:
    if door.framework != "flask":
        pytest.skip("FastAPI hands the membership to the route as the dependency's value: no current_membership")
    admin = new_admin(door_clerk)
    door.pids.clear()
    assert door.get(f"/orgs/{admin.org}/settings", admin.user)[0] == 200

    assert door.get("/whoami", admin.user) == (200, {"membership": None})
    assert len(door.pids) == 1
