"""The guarantee where the user meets it: at the door of a real app, served by a real server process.

Each example app (examples/, with real RS256 session tokens) runs under a real server: Flask under
gunicorn's sync and gthread workers, each with and without an app context pushed at import, FastAPI
under uvicorn and hypercorn, and the Django project under gunicorn's sync and gthread workers (WSGI) and
uvicorn (ASGI), once per view kind: function views, class-based views, DRF views, and async views (on the
ASGI server, which runs them on its loop). Clerk is the stand-in; the intake is the Procfile's stack (web
and worker) on the same private Redis. Every check runs the same story: the user is allowed; Clerk
changes; the signed webhook gets its 2xx; the very next request to the same server process is refused.
The same story holds for each example's permission-guarded page (``org:invoices:create``), whether the
permission goes with a ``role.updated``, a ``permission.deleted`` or a demotion. Every refusal is the
same JSON, whatever the framework or the view kind.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from redis import Redis

from devstack.clerk_standin import ClerkStandIn
from devstack.clerk_standin.shapes import StandInConflict
from devstack.redis_server import RedisServer, free_port
from devstack.signing import new_message_id, signed_event
from devstack.stack import REPO, LocalStack
from devstack.waiting import wait_until
from tests.door_apps import PID_HEADER
from tests.sessions import ORIGIN, OTHER_KEY, PUBLIC_PEM, session_token
from tests.support import CLERK_KEY, SIGNING_SECRET, make_cache, procfile_command, stack_env, stop_process

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
DJANGO_WSGI, DJANGO_ASGI = "tests.door_apps:django_wsgi_door()", "tests.door_apps:django_asgi_door"
DJANGO_SERVERS = {
    "gunicorn-sync": [*GUNICORN, "--worker-class", "sync", DJANGO_WSGI],
    "gunicorn-gthread": [*GUNICORN, "--worker-class", "gthread", "--threads", "4", DJANGO_WSGI],
    "uvicorn": [sys.executable, "-m", "uvicorn", "--factory", DJANGO_ASGI, "--lifespan", "off", "--port", "{port}"],
}
# each view kind's URL prefix (examples/django_app/urls.py): the sync kinds under WSGI, the async views under
# ASGI (a WSGI server runs each in a one-off event loop)
DJANGO_VIEWS = {"function": "", "cbv": "/cbv", "drf": "/api", "async": "/async"}
PREFIX: dict[str, str] = {}
for _server, _argv in DJANGO_SERVERS.items():
    for _kind, _prefix in DJANGO_VIEWS.items():
        if (_kind == "async") == (_server == "uvicorn"):
            SERVERS[f"django-{_kind}-{_server}"] = (_argv, {})  # the kinds of one server share its process
            PREFIX[f"django-{_kind}-{_server}"] = _prefix


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
        response = self.ask(path, session_token(user))
        return response.status_code, response.json()

    def ask(self, path: str, token: str | None) -> requests.Response:
        """GET ``path`` with ``token`` as the bearer (None: no Authorization header)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = requests.get(self.url + path, headers=headers, timeout=30)
        self.pids.add(response.headers[PID_HEADER])
        return response


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


@pytest.fixture(scope="module")
def serve(intake: str, redis_server: RedisServer, door_clerk: ClerkStandIn) -> Iterator[Callable[[str], str]]:
    """``serve(name)``: the URL of a running server process for ``SERVERS[name]``, started on first use;
    doors with the same command share one process. Every process is stopped at the end of the module."""
    running: dict[tuple[Any, ...], tuple[subprocess.Popen[bytes], str]] = {}

    def serve_(name: str) -> str:
        argv, extra = SERVERS[name]
        key = (*argv, *sorted(extra.items()))
        if key in running:
            server, url = running[key]
            assert server.poll() is None, f"{name}'s server exited with {server.returncode}"
            return url
        port = free_port()
        env = {
            **stack_env(redis_server.url, door_clerk),
            "CLERK_JWT_KEY": PUBLIC_PEM,
            "CLERK_AUTHORIZED_PARTIES": ORIGIN,
            **extra,
        }
        command = [part.format(port=port) for part in argv]
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        running[key] = server, url

        def answers() -> bool:
            assert server.poll() is None, f"{name} exited with {server.returncode}"
            try:
                return requests.get(url + "/up", timeout=1).status_code == 404
            except (requests.ConnectionError, requests.Timeout):  # a worker still booting holds accepted connections
                return False

        wait_until(answers, 30, what=f"{name} to answer")
        return url

    try:
        yield serve_
    finally:
        for server, _ in running.values():
            server.terminate()  # all at once: each takes a moment to shut down
        for server, _ in running.values():
            stop_process(server)


@pytest.fixture(scope="module", params=sorted(SERVERS))
def door(request: pytest.FixtureRequest, serve: Callable[[str], str]) -> Door:
    return Door(request.param, serve(request.param) + PREFIX.get(request.param, ""))


@pytest.fixture
def same_process(door: Door) -> Iterator[Door]:
    """The door, checked after the test: every answer of the test came from one server process."""
    door.pids.clear()
    yield door
    assert len(door.pids) == 1, f"answers came from processes {door.pids}"


def deliver(intake: str, event: dict[str, Any], **signing: Any) -> tuple[int, Any]:
    """Clerk's webhook for ``event``, signed as Svix signs it (``signing``: msg_id, timestamp), posted to the intake."""
    body, headers = signed_event(SIGNING_SECRET, event, **signing)
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
    if door.framework == "fastapi":
        pytest.skip("FastAPI hands the membership to the route as the dependency's value: no current_membership")
    admin = new_admin(door_clerk)
    door.pids.clear()
    assert door.get(f"/orgs/{admin.org}/settings", admin.user)[0] == 200

    assert door.get("/whoami", admin.user) == (200, {"membership": None})
    assert len(door.pids) == 1


UNAUTHENTICATED = (401, {"error": "unauthenticated", "message": "sign in first"})
NOT_FOUND = (404, {"error": "not_found", "message": "no such organization"})
PERMISSION_NOT_ALLOWED = (
    403,
    {"error": "permission_not_allowed", "message": "your permissions in this organization do not allow this"},
)


@pytest.mark.parametrize("page", ["settings", "invoices/new"])
def test_every_refusal_is_the_documented_json_never_a_500(
    same_process: Door, door_clerk: ClerkStandIn, page: str
) -> None:
    """The role-guarded page and the permission-guarded one refuse in the same order, with the same JSON;
    only the last 403 differs. org:member has neither org:admin nor org:invoices:create."""
    door, admin = same_process, new_admin(door_clerk)
    member, outsider = "user_" + secrets.token_hex(12), new_admin(door_clerk).user
    door_clerk.add_membership(member, admin.org, "org:member")
    guarded = f"/orgs/{admin.org}/{page}"

    for token in (None, session_token(admin.user, key=OTHER_KEY)):  # no session; a forged one
        refused = door.ask(guarded, token)
        assert (refused.status_code, refused.json()) == UNAUTHENTICATED
        assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert door.get(f"/orgs/org_bad-chars/{page}", admin.user) == NOT_FOUND
    assert door.get(guarded, outsider) == NOT_A_MEMBER
    if page == "settings":
        assert door.get(guarded, member) == ROLE_NOT_ALLOWED
        assert door.get(guarded, admin.user) == (200, {"org_id": admin.org, "slug": admin.slug})
    else:
        assert door.get(guarded, member) == PERMISSION_NOT_ALLOWED
        assert door.get(guarded, admin.user) == PERMISSION_NOT_ALLOWED  # org:admin has system permissions only
    # 503, when the lookup fails: test_a_failed_lookup_is_not_remembered_by_later_requests


INVOICES_CREATE = "org:invoices:create"  # what the examples' /orgs/<org>/invoices/new requires


@dataclass(frozen=True)
class Invoicer:
    user: str
    org: str
    org_name: str
    role: str


@pytest.fixture
def invoicer(door_clerk: ClerkStandIn) -> Invoicer:
    """A new user holding a new custom role with org:invoices:create (and a system permission) in a new org.

    The permission is created first if a test before deleted it: the stand-in serves the whole module."""
    with contextlib.suppress(StandInConflict):  # there already
        door_clerk.create_permission(INVOICES_CREATE)
    role = "org:inv_" + secrets.token_hex(4)
    door_clerk.create_role(role, "Invoicer", ["org:sys_memberships:read", INVOICES_CREATE])
    user, slug = "user_" + secrets.token_hex(12), "door-" + secrets.token_hex(4)
    org = door_clerk.create_org(f"Door {slug}", slug=slug)["data"]["id"]
    door_clerk.add_membership(user, org, role)
    return Invoicer(user, org, f"Door {slug}", role)


def role_loses_the_permission(clerk: ClerkStandIn, who: Invoicer) -> dict[str, Any]:
    return clerk.update_role(who.role, permissions=["org:sys_memberships:read"])


def permission_is_deleted(clerk: ClerkStandIn, who: Invoicer) -> dict[str, Any]:
    return clerk.delete_permission(INVOICES_CREATE)


def member_is_demoted(clerk: ClerkStandIn, who: Invoicer) -> dict[str, Any]:
    return clerk.update_membership(who.user, who.org, "org:member")


CHANGES = {  # each takes org:invoices:create from the invoicer in Clerk, and returns the event Clerk sends
    "role.updated": role_loses_the_permission,
    "permission.deleted": permission_is_deleted,
    "organizationMembership.updated": member_is_demoted,
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_lost_permission_is_refused_on_the_very_next_request(
    same_process: Door, intake: str, door_clerk: ClerkStandIn, invoicer: Invoicer, change: str
) -> None:
    door, who = same_process, invoicer
    new_invoice = f"/orgs/{who.org}/invoices/new"
    for _ in range(2):  # a miss, then a hit
        assert door.get(new_invoice, who.user) == (200, {"org_id": who.org, "role": who.role})

    event = CHANGES[change](door_clerk, who)
    assert event["type"] == change
    assert deliver(intake, event) == PROCESSED

    assert door.get(new_invoice, who.user) == PERMISSION_NOT_ALLOWED
    role_now = "org:member" if change == "organizationMembership.updated" else who.role
    assert door.get(f"/orgs/{who.org}/dashboard", who.user) == (200, {"org": who.org_name, "role": role_now})


@pytest.mark.parametrize("change", ["role.updated", "permission.deleted"])
def test_a_role_change_is_refused_at_the_door_for_a_thousand_holders_with_the_worker_stopped(
    own_redis: RedisServer, change: str
) -> None:
    """Its own Redis, Clerk, door and intake, and no worker anywhere: the intake's 2xx alone revokes.

    1,000 users hold a custom role with org:invoices:create, are cached, and are each allowed at the door;
    the role loses the permission (role.updated) or the permission is deleted (permission.deleted, which
    names only its id), and the event gets 200; the very next request of every holder, to the same server
    process, is refused."""
    with ClerkStandIn(secret_key=CLERK_KEY) as clerk:
        clerk.create_permission(INVOICES_CREATE)
        clerk.create_role("org:invoicer", "Invoicer", ["org:sys_memberships:read", INVOICES_CREATE])
        org = clerk.create_org("Door Thousand", slug="door-thousand")["data"]["id"]
        holders = [f"user_2holder{i:05d}" for i in range(1000)]
        for user in holders:
            clerk.add_membership(user, org, "org:invoicer")
        env = {
            **stack_env(own_redis.url, clerk),
            "CLERK_JWT_KEY": PUBLIC_PEM,
            "CLERK_AUTHORIZED_PARTIES": ORIGIN,
            # the 1,000 lookups after the 2xx all read Clerk (no worker re-warms): a budget above them, or the
            # fleet's default (under Clerk's 1,000 per 10 s) would refuse the last few with 503 instead of 403
            "CLERK_RATE_LIMIT": "5000",
        }
        port = free_port()
        argv = [part.format(port=port) for part in SERVERS["flask-gunicorn-sync"][0]]
        server = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        web = subprocess.Popen(procfile_command("web"), cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        try:
            door = Door("flask-gunicorn-sync", f"http://127.0.0.1:{port}")
            intake = f"http://127.0.0.1:{env['PORT']}"
            wait_until(
                lambda: _answers(door.url + "/up", 404) and _answers(intake + "/healthz", 200), 60, what="servers"
            )
            cache = make_cache(own_redis.url, clerk.url)  # cached before the change
            for user in holders:
                cache.get_memberships(user)
            page = f"/orgs/{org}/invoices/new"
            answers = [door.get(page, user) for user in holders]
            assert answers == [(200, {"org_id": org, "role": "org:invoicer"})] * 1000, answers[0]

            if change == "role.updated":
                event = clerk.update_role("org:invoicer", permissions=["org:sys_memberships:read"])
            else:
                event = clerk.delete_permission(INVOICES_CREATE)
            assert event["type"] == change
            assert deliver(intake, event) == PROCESSED

            refused = [user for user in holders if door.get(page, user) == PERMISSION_NOT_ALLOWED]
            assert len(refused) == 1000
            assert len(door.pids) == 1
            assert Redis.from_url(own_redis.url).llen("rq:queue:clerk-org-cache") == 1  # no worker ran
        finally:
            for process in (server, web):
                stop_process(process)


def test_late_and_duplicated_role_events_never_give_a_lost_permission_back(
    same_process: Door, intake: str, door_clerk: ClerkStandIn, invoicer: Invoicer
) -> None:
    """The role loses the permission, regains it, loses it again; Svix delivers the last change first, the
    middle one late, the last again (the same message id), and the first last. Events are triggers: each
    only makes the cache read Clerk again, so the door ends where Clerk is, refusing."""
    door, who = same_process, invoicer
    new_invoice = f"/orgs/{who.org}/invoices/new"
    assert door.get(new_invoice, who.user) == (200, {"org_id": who.org, "role": who.role})
    without, regained = ["org:sys_memberships:read"], ["org:sys_memberships:read", INVOICES_CREATE]
    first = door_clerk.update_role(who.role, permissions=without)
    middle = door_clerk.update_role(who.role, permissions=regained)
    last = door_clerk.update_role(who.role, permissions=without)
    last_id = new_message_id()

    assert deliver(intake, last, msg_id=last_id) == PROCESSED
    assert door.get(new_invoice, who.user) == PERMISSION_NOT_ALLOWED
    assert deliver(intake, middle) == PROCESSED  # late: it names the role, not what it had then
    assert door.get(new_invoice, who.user) == PERMISSION_NOT_ALLOWED
    assert deliver(intake, last, msg_id=last_id) == (200, {"status": "duplicate"})
    assert deliver(intake, first) == PROCESSED
    assert door.get(new_invoice, who.user) == PERMISSION_NOT_ALLOWED


def test_a_role_deleted_after_its_holder_was_moved_off_leaves_the_door_refusing(
    same_process: Door, intake: str, door_clerk: ClerkStandIn, invoicer: Invoicer
) -> None:
    """Clerk deletes a role only once no member holds it: the holder is moved off first (its own event),
    then role.deleted, naming only the role's id, is delivered, and so is the move's event again, late."""
    door, who = same_process, invoicer
    new_invoice = f"/orgs/{who.org}/invoices/new"
    assert door.get(new_invoice, who.user) == (200, {"org_id": who.org, "role": who.role})
    moved = door_clerk.update_membership(who.user, who.org, "org:member")
    assert deliver(intake, moved) == PROCESSED
    assert door.get(new_invoice, who.user) == PERMISSION_NOT_ALLOWED

    deleted = door_clerk.delete_role(who.role)
    assert deleted["type"] == "role.deleted" and set(deleted["data"]) == {"object", "id", "slug", "deleted"}
    assert deliver(intake, deleted) == PROCESSED
    assert deliver(intake, moved) == PROCESSED  # a second delivery (a new message id): a re-read, not a delta

    assert door.get(new_invoice, who.user) == PERMISSION_NOT_ALLOWED
    assert door.get(f"/orgs/{who.org}/dashboard", who.user) == (200, {"org": who.org_name, "role": "org:member"})


def _answers(url: str, status: int) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == status
    except (requests.ConnectionError, requests.Timeout):
        return False
