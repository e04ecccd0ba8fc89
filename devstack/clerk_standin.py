"""A local stand-in for Clerk's Backend API, for tests, benchmarks and the dev stack.

It is a real HTTP server (so the code under test exercises its real HTTP client,
paging, auth header, retries and connection reuse) backed by an in-memory model of
organizations, users and memberships. Every model mutation returns the webhook
event envelope Clerk would send for it, so callers can sign it with svix and post
it to the webhook receiver, exactly as Clerk would.

Paths, paging rules and JSON shapes follow /work/shared/reference/clerk-and-svix.md:

* ``GET /v1/users/{user_id}/organization_memberships?limit=&offset=``
* ``GET /v1/organizations/{org_id}/memberships?limit=&offset=&order_by=&user_id=``
* ``GET /v1/organizations/{org_id_or_slug}``

Admin endpoints under ``/_standin/`` (no auth) let another process drive the model.
Run ``python -m devstack.clerk_standin --help`` for the command-line server.
"""

import argparse
import contextlib
import json
import re
import secrets
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "SAMPLE_ORG_IDS",
    "SAMPLE_USER_IDS",
    "ClerkStandIn",
    "Gate",
    "StandInConflict",
    "StandInError",
    "StandInNotFound",
    "main",
]

JSON = dict[str, Any]

INSTANCE_ID = "ins_standin"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DEFAULT_LIMIT = 10
_MAX_LIMIT = 500

# Ids used by seed_sample(); exported so tests and demos need not repeat literals.
SAMPLE_ORG_IDS: dict[str, str] = {
    "acme": "org_2acme0000000000000000000",
    "globex": "org_2globex00000000000000000",
    "initech": "org_2initech0000000000000000",
}
SAMPLE_USER_IDS: dict[str, str] = {
    "alice": "user_2alice000000000000000000000",
    "bob": "user_2bob00000000000000000000000",
    "carol": "user_2carol000000000000000000000",
}

_ADMIN_PERMISSIONS = [
    "org:sys_profile:manage",
    "org:sys_profile:delete",
    "org:sys_memberships:read",
    "org:sys_memberships:manage",
    "org:sys_domains:read",
    "org:sys_domains:manage",
]
_MEMBER_PERMISSIONS = ["org:sys_memberships:read"]

_DEFAULT_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("bad_request", "Bad request", "The request was malformed."),
    401: (
        "authentication_invalid",
        "Invalid authentication",
        "Unable to authenticate the request, you need to supply an active API key",
    ),
    403: ("authorization_invalid", "Unauthorized request", "You are not authorized."),
    404: ("resource_not_found", "not found", "Resource not found"),
    405: ("method_not_allowed", "Method not allowed", "This method is not supported here."),
    422: ("form_param_value_invalid", "is invalid", "A parameter has an invalid value."),
    429: (
        "too_many_requests",
        "Too Many Requests",
        "Too many requests, please try again later.",
    ),
}


# --------------------------------------------------------------------------- errors


class StandInError(Exception):
    """A model operation Clerk itself would refuse; carries the HTTP status and code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        long_message: str,
        meta: JSON | None = None,
    ) -> None:
        super().__init__(long_message)
        self.status = status
        self.code = code
        self.message = message
        self.long_message = long_message
        self.meta = meta


def _invalid_param(name: str, long_message: str, code: str = "form_param_value_invalid") -> StandInError:
    """A 422 naming the parameter in `meta.param_name`, as Clerk does."""
    message = "missing" if code == "form_param_missing" else "is invalid"
    return StandInError(422, code, message, long_message, {"param_name": name})


class StandInNotFound(StandInError, LookupError):
    """Unknown (or deleted) org, user or membership."""

    def __init__(self, long_message: str) -> None:
        super().__init__(404, "resource_not_found", "not found", long_message)


class StandInConflict(StandInError, ValueError):
    """The mutation clashes with existing state (duplicate id, slug or membership)."""

    def __init__(self, code: str, message: str, long_message: str) -> None:
        super().__init__(400 if code.startswith("already") else 422, code, message, long_message)


# --------------------------------------------------------------------------- helpers


def _now_ms() -> int:
    return int(time.time() * 1000)


def _rand_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(length))


def _trace_id() -> str:
    return secrets.token_hex(16)


def _error_payload(
    status: int,
    code: str | None = None,
    message: str | None = None,
    long_message: str | None = None,
    meta: JSON | None = None,
) -> JSON:
    """Clerk's error JSON; defaults per status so injected failures look real."""
    d_code, d_msg, d_long = _DEFAULT_ERRORS.get(
        status,
        (
            "internal_clerk_error",
            "Oops, an unexpected error occurred",
            "There was an internal error on our servers. We've been notified.",
        ),
    )
    err: JSON = {
        "message": message or d_msg,
        "long_message": long_message or d_long,
        "code": code or d_code,
    }
    if meta is not None:
        err["meta"] = meta
    return {"errors": [err], "clerk_trace_id": _trace_id()}


def _role_name(role: str) -> str:
    if role in ("org:admin", "admin"):
        return "Admin"
    if role in ("org:member", "basic_member"):
        return "Member"
    key = role.split(":", 1)[-1]
    return key.replace("_", " ").title()


def _role_permissions(role: str) -> list[str]:
    if role in ("org:admin", "admin"):
        return list(_ADMIN_PERMISSIONS)
    if role in ("org:member", "basic_member"):
        return list(_MEMBER_PERMISSIONS)
    key = role.split(":", 1)[-1]
    return [*_MEMBER_PERMISSIONS, f"org:{key}:read", f"org:{key}:manage"]


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "org"


def _envelope(event_type: str, data: JSON) -> JSON:
    return {
        "data": data,
        "object": "event",
        "type": event_type,
        "timestamp": _now_ms(),
        "instance_id": INSTANCE_ID,
        "event_attributes": {
            "http_request": {"client_ip": "127.0.0.1", "user_agent": "clerk-standin"},
        },
    }


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- model


@dataclass
class _Org:
    id: str
    name: str
    slug: str
    image_url: str | None
    created_at: int
    updated_at: int


@dataclass
class _User:
    id: str
    identifier: str
    first_name: str | None
    last_name: str | None
    image_url: str | None
    created_at: int
    updated_at: int


@dataclass
class _Membership:
    id: str
    user_id: str
    org_id: str
    role: str
    created_at: int
    updated_at: int
    seq: int  # creation order; breaks created_at ties deterministically


@dataclass
class _Failure:
    status: int
    retry_after: int | None
    body: str | None
    drop: bool = False


@dataclass
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Gate:
    """Holds user-membership reads so a test can make Clerk 'slow' at a chosen moment.

    The held request's answer is computed when it arrives, so it carries the data
    Clerk saw before any change the test makes while it is held.
    """

    def __init__(self, user_id: str, on_release: Callable[["Gate"], None]) -> None:
        self.user_id = user_id
        self._on_release = on_release
        self._cond = threading.Condition()
        self._arrived = 0
        self._released = threading.Event()

    @property
    def arrived_count(self) -> int:
        """How many requests have reached this gate so far."""
        with self._cond:
            return self._arrived

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def wait_arrived(self, timeout: float = 5.0, count: int = 1) -> bool:
        """Wait until at least `count` requests are (or were) held here."""
        with self._cond:
            return self._cond.wait_for(lambda: self._arrived >= count, timeout)

    def release(self) -> None:
        """Let all held and future requests through and detach the gate."""
        self._released.set()
        self._on_release(self)

    def _block(self) -> None:
        with self._cond:
            self._arrived += 1
            self._cond.notify_all()
        self._released.wait()

    def __enter__(self) -> "Gate":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive client connections would otherwise make server_close() wait forever.
    block_on_close = False
    allow_reuse_address = True
    standin: "ClerkStandIn"


class _Handler(BaseHTTPRequestHandler):
    """Translates HTTP to ClerkStandIn calls; keeps connections alive like Clerk."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; avoid 40 ms delayed-ACK stalls
    server_version = "clerk-standin"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    @property
    def standin(self) -> "ClerkStandIn":
        return cast(_Server, self.server).standin

    def setup(self) -> None:
        super().setup()
        self.standin._track_conn(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.standin._track_conn(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks do not want a line per request."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes | None:
        """Read exactly Content-Length bytes so the connection stays usable."""
        raw_len = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            return None
        try:
            length = int(raw_len) if raw_len else 0
        except ValueError:
            self.close_connection = True
            return None
        if length < 0:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        body = self._read_body()
        if body is None:
            self._send(_Response(400, _dumps(_error_payload(400))))
            return
        resp = self.standin._handle(method, self.path, self.headers.get("Authorization"), body)
        if resp is None:  # injected connection drop
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(resp)

    def _send(self, resp: _Response) -> None:
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(resp.body)))
            for name, value in resp.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(resp.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class ClerkStandIn:
    """Plays Clerk's Backend API on 127.0.0.1 with an in-memory, thread-safe model."""

    def __init__(
        self,
        secret_key: str = "sk_test_standin",
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
    ) -> None:
        self.secret_key = secret_key
        self.host = host
        self.latency_s = latency_s
        # Settable: a delay *after* the answer is computed, so a read can race a change (see the soak test).
        self.answer_delay_s = 0.0
        self._port = port
        self._lock = threading.RLock()  # the model
        self._ctl = threading.Lock()  # counters, failures, gates, connections
        self._orgs: dict[str, _Org] = {}
        self._users: dict[str, _User] = {}
        self._deleted_users: set[str] = set()
        self._by_user: dict[str, dict[str, _Membership]] = {}
        self._by_org: dict[str, dict[str, _Membership]] = {}
        self._seq = 0
        self._calls: Counter[str] = Counter()
        self._failures: list[_Failure] = []
        self._gates: dict[str, Gate] = {}
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> "ClerkStandIn":
        """Serve in a daemon thread. After stop(), start() reuses the same port."""
        if self._server is not None:
            raise RuntimeError("clerk stand-in already started")
        server = _Server((self.host, self._port), _Handler)
        server.standin = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"clerk-standin:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open keep-alive connections and release held requests."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        with self._ctl:
            gates = list(self._gates.values())
        for gate in gates:
            gate.release()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._ctl:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> "ClerkStandIn":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("clerk stand-in not started yet (port 0)")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without /v1 (what CLERK_API_URL would hold)."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # ----------------------------------------------------------------- serialisation

    def _org_json(self, org: _Org) -> JSON:
        return {
            "object": "organization",
            "id": org.id,
            "name": org.name,
            "slug": org.slug,
            "image_url": org.image_url or f"https://img.clerk.com/standin/{org.id}",
            "has_image": org.image_url is not None,
            "members_count": len(self._by_org.get(org.id, {})),
            "max_allowed_memberships": 0,
            "admin_delete_enabled": True,
            "public_metadata": {},
            "private_metadata": {},
            "created_at": org.created_at,
            "updated_at": org.updated_at,
        }

    def _user(self, user_id: str) -> _User:
        user = self._users.get(user_id)
        if user is None:
            now = _now_ms()
            user = _User(user_id, f"{user_id.lower()}@example.com", None, None, None, now, now)
            self._users[user_id] = user
        return user

    def _user_json(self, user: _User) -> JSON:
        email_id = "idn_" + user.id.removeprefix("user_")
        return {
            "object": "user",
            "id": user.id,
            "external_id": None,
            "username": None,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "image_url": user.image_url or f"https://img.clerk.com/standin/{user.id}",
            "has_image": user.image_url is not None,
            "primary_email_address_id": email_id,
            "email_addresses": [
                {
                    "object": "email_address",
                    "id": email_id,
                    "email_address": user.identifier,
                    "verification": {"status": "verified", "strategy": "email_code"},
                    "linked_to": [],
                }
            ],
            "public_metadata": {},
            "private_metadata": {},
            "unsafe_metadata": {},
            "created_at": user.created_at,
            "updated_at": user.updated_at,
        }

    def _membership_json(self, m: _Membership) -> JSON:
        user = self._user(m.user_id)
        return {
            "object": "organization_membership",
            "id": m.id,
            "role": m.role,
            "role_name": _role_name(m.role),
            "permissions": _role_permissions(m.role),
            "public_metadata": {},
            "created_at": m.created_at,
            "updated_at": m.updated_at,
            "organization": self._org_json(self._orgs[m.org_id]),
            "public_user_data": {
                "user_id": user.id,
                "identifier": user.identifier,
                "first_name": user.first_name,
                "last_name": user.last_name,
                "image_url": user.image_url or f"https://img.clerk.com/standin/{user.id}",
                "has_image": user.image_url is not None,
            },
        }

    @staticmethod
    def _ordered(ms: list[_Membership], newest_first: bool = True) -> list[_Membership]:
        """Clerk's default `-created_at`; creation order breaks ties."""
        return sorted(ms, key=lambda m: (m.created_at, m.seq), reverse=newest_first)

    # ----------------------------------------------------------------- lookups

    def _get_org(self, org_id: str) -> _Org:
        org = self._orgs.get(org_id)
        if org is None:
            raise StandInNotFound(f"No organization was found with id {org_id}")
        return org

    def _check_user(self, user_id: str) -> None:
        if not user_id.startswith("user_") or user_id in self._deleted_users:
            raise StandInNotFound(f"No user was found with id {user_id}")

    def _get_membership(self, user_id: str, org_id: str) -> _Membership:
        m = self._by_user.get(user_id, {}).get(org_id)
        if m is None:
            raise StandInNotFound(f"No membership was found for {user_id} in {org_id}")
        return m

    def org(self, org_id: str) -> JSON:
        """The current org object (raises StandInNotFound)."""
        with self._lock:
            return self._org_json(self._get_org(org_id))

    def orgs(self) -> list[JSON]:
        """All current orgs, oldest first."""
        with self._lock:
            return [self._org_json(o) for o in self._orgs.values()]

    def memberships_of(self, user_id: str) -> list[JSON]:
        """Current truth for a user, in API order (newest first); the test oracle."""
        with self._lock:
            ms = list(self._by_user.get(user_id, {}).values())
            return [self._membership_json(m) for m in self._ordered(ms)]

    def members_of(self, org_id: str) -> list[JSON]:
        """Current memberships of an org, in API order (raises StandInNotFound)."""
        with self._lock:
            self._get_org(org_id)
            ms = list(self._by_org.get(org_id, {}).values())
            return [self._membership_json(m) for m in self._ordered(ms)]

    # ----------------------------------------------------------------- mutations

    def create_user(
        self,
        user_id: str | None = None,
        *,
        email: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        image_url: str | None = None,
    ) -> JSON:
        """user.created; upserts the profile shown in public_user_data, revives a deleted id.

        Any `user_...` id already exists implicitly; this only matters for names/emails.
        """
        with self._lock:
            uid = user_id or _rand_id("user_", 27)
            if not uid.startswith("user_"):
                raise _invalid_param("user_id", "user ids start with user_")
            now = _now_ms()
            user = _User(
                uid,
                email or f"{uid.lower()}@example.com",
                first_name,
                last_name,
                image_url,
                now,
                now,
            )
            self._users[uid] = user
            self._deleted_users.discard(uid)
            return _envelope("user.created", self._user_json(user))

    def create_org(
        self,
        name: str,
        slug: str | None = None,
        org_id: str | None = None,
        image_url: str | None = None,
    ) -> JSON:
        """organization.created; the slug defaults to one derived from the name."""
        with self._lock:
            oid = org_id or _rand_id("org_", 24)
            if oid in self._orgs:
                raise StandInConflict("form_identifier_exists", "already exists", f"Organization {oid} exists")
            taken = {o.slug for o in self._orgs.values()}
            if slug is None:
                slug = base = _slugify(name)
                while slug in taken:
                    slug = f"{base}-{_rand_id('', 6).lower()}"
            elif slug in taken:
                raise StandInConflict("form_identifier_exists", "is taken", "That slug is taken. Please try another.")
            now = _now_ms()
            org = _Org(oid, name, slug, image_url, now, now)
            self._orgs[oid] = org
            self._by_org[oid] = {}
            return _envelope("organization.created", self._org_json(org))

    def update_org(
        self,
        org_id: str,
        *,
        name: str | None = None,
        slug: str | None = None,
        image_url: str | None = None,
    ) -> JSON:
        """organization.updated with the full org (memberships embed it live, like Clerk)."""
        with self._lock:
            org = self._get_org(org_id)
            if slug is not None and slug != org.slug:
                if any(o.slug == slug for o in self._orgs.values()):
                    raise StandInConflict(
                        "form_identifier_exists",
                        "is taken",
                        "That slug is taken. Please try another.",
                    )
                org.slug = slug
            if name is not None:
                org.name = name
            if image_url is not None:
                org.image_url = image_url
            org.updated_at = max(_now_ms(), org.updated_at + 1)
            return _envelope("organization.updated", self._org_json(org))

    def delete_org(self, org_id: str) -> JSON:
        """organization.deleted; its memberships vanish silently (no membership events)."""
        with self._lock:
            org = self._get_org(org_id)
            for user_id in self._by_org.pop(org_id, {}):
                self._by_user.get(user_id, {}).pop(org_id, None)
            del self._orgs[org_id]
            return _envelope(
                "organization.deleted",
                {"object": "organization", "id": org.id, "deleted": True, "slug": org.slug},
            )

    def add_membership(self, user_id: str, org_id: str, role: str = "org:member") -> JSON:
        """organizationMembership.created (400 already_a_member_in_organization if present)."""
        with self._lock:
            self._get_org(org_id)
            self._check_user(user_id)
            if org_id in self._by_user.get(user_id, {}):
                raise StandInConflict(
                    "already_a_member_in_organization",
                    "already a member",
                    f"{user_id} is already a member of {org_id}",
                )
            self._user(user_id)
            self._seq += 1
            now = _now_ms()
            m = _Membership(_rand_id("orgmem_", 27), user_id, org_id, role, now, now, self._seq)
            self._by_user.setdefault(user_id, {})[org_id] = m
            self._by_org[org_id][user_id] = m
            return _envelope("organizationMembership.created", self._membership_json(m))

    def update_membership(self, user_id: str, org_id: str, role: str) -> JSON:
        """organizationMembership.updated (role change)."""
        with self._lock:
            m = self._get_membership(user_id, org_id)
            m.role = role
            m.updated_at = max(_now_ms(), m.updated_at + 1)
            return _envelope("organizationMembership.updated", self._membership_json(m))

    def remove_membership(self, user_id: str, org_id: str) -> JSON:
        """organizationMembership.deleted; data is the full membership as it was."""
        with self._lock:
            m = self._get_membership(user_id, org_id)
            data = self._membership_json(m)
            del self._by_user[user_id][org_id]
            del self._by_org[org_id][user_id]
            return _envelope("organizationMembership.deleted", data)

    def delete_user(self, user_id: str) -> JSON:
        """user.deleted; the user's memberships vanish and API reads then answer 404."""
        with self._lock:
            self._check_user(user_id)
            for org_id in self._by_user.pop(user_id, {}):
                self._by_org.get(org_id, {}).pop(user_id, None)
            self._deleted_users.add(user_id)
            return _envelope("user.deleted", {"object": "user", "id": user_id, "deleted": True})

    def seed_sample(self) -> None:
        """A small fixed world for demos: 3 orgs, 3 users, mixed roles. Idempotent."""
        profiles = {
            "alice": ("Alice", "Anderson"),
            "bob": ("Bob", "Brown"),
            "carol": ("Carol", "Clark"),
        }
        orgs = {"acme": "Acme Inc", "globex": "Globex", "initech": "Initech"}
        memberships = [
            ("alice", "acme", "org:admin"),
            ("alice", "globex", "org:member"),
            ("bob", "acme", "org:member"),
            ("bob", "initech", "org:admin"),
            ("carol", "acme", "org:billing"),
            ("carol", "globex", "org:admin"),
        ]
        with self._lock:
            for key, (first, last) in profiles.items():
                uid = SAMPLE_USER_IDS[key]
                if uid not in self._users or uid in self._deleted_users:
                    self.create_user(uid, email=f"{key}@example.com", first_name=first, last_name=last)
            for slug, name in orgs.items():
                if SAMPLE_ORG_IDS[slug] not in self._orgs:
                    self.create_org(name, slug=slug, org_id=SAMPLE_ORG_IDS[slug])
            for user, slug, role in memberships:
                uid, oid = SAMPLE_USER_IDS[user], SAMPLE_ORG_IDS[slug]
                if oid not in self._by_user.get(uid, {}):
                    self.add_membership(uid, oid, role)

    # ----------------------------------------------------------------- injection

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        retry_after: int | None = None,
        body: str | None = None,
    ) -> None:
        """The next n API requests answer `status` (queued after earlier injections)."""
        with self._ctl:
            self._failures.extend(_Failure(status, retry_after, body) for _ in range(n))

    def drop_next(self, n: int = 1) -> None:
        """The next n API requests get their connection closed with no response."""
        with self._ctl:
            self._failures.extend(_Failure(0, None, None, drop=True) for _ in range(n))

    def clear_failures(self) -> None:
        with self._ctl:
            self._failures.clear()

    def hold(self, user_id: str) -> Gate:
        """Hold reads of this user's memberships (answer computed at arrival)."""
        with self._ctl:
            gate = self._gates.get(user_id)
            if gate is None:
                gate = Gate(user_id, self._remove_gate)
                self._gates[user_id] = gate
            return gate

    def _remove_gate(self, gate: Gate) -> None:
        with self._ctl:
            if self._gates.get(gate.user_id) is gate:
                del self._gates[gate.user_id]

    # ----------------------------------------------------------------- observation

    def call_count(self, path_prefix: str = "/v1/") -> int:
        """Requests received (any status) whose path starts with the prefix."""
        with self._ctl:
            return sum(n for path, n in self._calls.items() if path.startswith(path_prefix))

    def reset_counts(self) -> None:
        with self._ctl:
            self._calls.clear()

    def _track_conn(self, conn: socket.socket, *, add: bool) -> None:
        with self._ctl:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # ----------------------------------------------------------------- HTTP

    def _handle(self, method: str, target: str, auth: str | None, body: bytes) -> _Response | None:
        """One HTTP request -> response; None means drop the connection."""
        split = urlsplit(target)
        path = split.path
        with self._ctl:
            self._calls[path] += 1
        query = parse_qs(split.query, keep_blank_values=True)
        segs = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        if segs and segs[0] == "_standin":
            return self._handle_admin(method, segs[1:], query, body)

        latency = self.latency_s
        if latency > 0:
            time.sleep(latency)
        with self._ctl:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return self._failure_response(failure)
        if segs and segs[0] == "v1" and not self._authorized(auth):
            return _Response(401, _dumps(_error_payload(401)))
        try:
            response = self._route_api(method, segs, query)
        except StandInError as exc:
            return self._error_from(exc)
        if self.answer_delay_s > 0:
            time.sleep(self.answer_delay_s)  # the answer was read at arrival: it may be stale when it lands
        return response

    def _authorized(self, auth: str | None) -> bool:
        if not auth:
            return False
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), self.secret_key.encode())

    @staticmethod
    def _failure_response(failure: _Failure) -> _Response | None:
        if failure.drop:
            return None
        headers = {}
        if failure.retry_after is not None:
            headers["Retry-After"] = str(failure.retry_after)
        if failure.body is not None:
            return _Response(failure.status, failure.body.encode(), headers)
        return _Response(failure.status, _dumps(_error_payload(failure.status)), headers)

    @staticmethod
    def _error(status: int, code: str, message: str, long_message: str) -> _Response:
        return _Response(status, _dumps(_error_payload(status, code, message, long_message)))

    @staticmethod
    def _error_from(exc: StandInError) -> _Response:
        payload = _error_payload(exc.status, exc.code, exc.message, exc.long_message, exc.meta)
        return _Response(exc.status, _dumps(payload))

    @staticmethod
    def _paging(query: dict[str, list[str]]) -> tuple[int, int]:
        """Clerk's paging rules: limit 1..500 (default 10), offset >= 0, else 422."""

        def param(name: str, default: int, lo: int, hi: int | None) -> int:
            values = query.get(name)
            if not values:
                return default
            try:
                value = int(values[0])
            except ValueError:
                value = lo - 1
            if value < lo or (hi is not None and value > hi):
                bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
                raise _invalid_param(name, f"{name} must be an integer {bound}")
            return value

        return param("limit", _DEFAULT_LIMIT, 1, _MAX_LIMIT), param("offset", 0, 0, None)

    def _page(self, ms: list[_Membership], query: dict[str, list[str]]) -> _Response:
        limit, offset = self._paging(query)
        page = ms[offset : offset + limit]
        payload = {"data": [self._membership_json(m) for m in page], "total_count": len(ms)}
        return _Response(200, _dumps(payload))

    def _route_api(self, method: str, segs: list[str], query: dict[str, list[str]]) -> _Response:
        n = len(segs)
        is_user_ms = n == 4 and segs[:2] == ["v1", "users"] and segs[3] == "organization_memberships"
        is_org_ms = n == 4 and segs[:2] == ["v1", "organizations"] and segs[3] == "memberships"
        is_org = n == 3 and segs[:2] == ["v1", "organizations"]
        if not (is_user_ms or is_org_ms or is_org):
            return self._error(404, "resource_not_found", "not found", "Resource not found")
        if method != "GET":
            resp = self._error(
                405,
                "method_not_allowed",
                "Method not allowed",
                f"The stand-in only implements GET for /{'/'.join(segs)}",
            )
            resp.headers["Allow"] = "GET"
            return resp

        if is_user_ms:
            user_id = segs[2]
            try:
                with self._lock:
                    self._check_user(user_id)
                    ms = self._ordered(list(self._by_user.get(user_id, {}).values()))
                    resp = self._page(ms, query)
            except StandInError as exc:
                resp = self._error_from(exc)
            with self._ctl:
                gate = self._gates.get(user_id)
            if gate is not None:
                gate._block()  # answer already computed: a slow read of old data
            return resp

        with self._lock:
            org = self._orgs.get(segs[2])
            if org is None:  # Clerk also accepts the slug here
                org = next((o for o in self._orgs.values() if o.slug == segs[2]), None)
            if org is None or (is_org_ms and org.id != segs[2]):
                raise StandInNotFound(f"No organization was found with id {segs[2]}")
            if is_org:
                return _Response(200, _dumps(self._org_json(org)))
            order = (query.get("order_by") or ["-created_at"])[0]
            if order.lstrip("+-") != "created_at":
                raise _invalid_param("order_by", "the stand-in only supports order_by=[+|-]created_at")
            ms = list(self._by_org[org.id].values())
            wanted = set(query.get("user_id", []))
            if wanted:
                ms = [m for m in ms if m.user_id in wanted]
            return self._page(self._ordered(ms, newest_first=order.startswith("-")), query)

    # ----------------------------------------------------------------- admin HTTP

    def _handle_admin(self, method: str, segs: list[str], query: dict[str, list[str]], body: bytes) -> _Response:
        """Lets another process drive the model; mutations answer the event envelope."""
        try:
            data = self._admin_body(body, query)
            result = self._route_admin(method, segs, data)
        except StandInError as exc:
            return self._error_from(exc)
        if result is None:
            return self._error(404, "resource_not_found", "not found", "Unknown admin endpoint")
        return _Response(200, _dumps(result))

    @staticmethod
    def _admin_body(body: bytes, query: dict[str, list[str]]) -> JSON:
        """JSON object body; falls back to query parameters (handy with curl)."""
        if not body.strip():
            return {k: v[0] for k, v in query.items()}
        try:
            data = json.loads(body)
        except ValueError:
            raise StandInError(400, "malformed_request", "bad JSON", "Body is not JSON") from None
        if not isinstance(data, dict):
            raise StandInError(400, "malformed_request", "bad JSON", "Body must be an object")
        return data

    @staticmethod
    def _str(data: JSON, key: str, required: bool = True) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                raise _invalid_param(key, f"{key} must be included", "form_param_missing")
            return None
        if not isinstance(value, str):
            raise _invalid_param(key, f"{key} must be a string")
        return value

    def _route_admin(self, method: str, segs: list[str], data: JSON) -> Any:
        s = self._str
        route = (method, segs[0] if segs else "", len(segs))
        if route == ("POST", "orgs", 1):
            return self.create_org(
                cast(str, s(data, "name")),
                slug=s(data, "slug", False),
                org_id=s(data, "org_id", False),
                image_url=s(data, "image_url", False),
            )
        if route == ("PATCH", "orgs", 2):
            return self.update_org(
                segs[1],
                name=s(data, "name", False),
                slug=s(data, "slug", False),
                image_url=s(data, "image_url", False),
            )
        if route == ("DELETE", "orgs", 2):
            return self.delete_org(segs[1])
        if route == ("GET", "orgs", 2):
            return self.org(segs[1])
        if route == ("GET", "orgs", 1):
            return {"data": self.orgs()}
        if segs[:1] == ["memberships"] and len(segs) == 1:
            user_id, org_id = cast(str, s(data, "user_id")), cast(str, s(data, "org_id"))
            if method == "POST":
                return self.add_membership(user_id, org_id, s(data, "role", False) or "org:member")
            if method == "PATCH":
                return self.update_membership(user_id, org_id, cast(str, s(data, "role")))
            if method == "DELETE":
                return self.remove_membership(user_id, org_id)
            return None
        if route == ("POST", "users", 1):
            return self.create_user(
                s(data, "user_id", False),
                email=s(data, "email", False),
                first_name=s(data, "first_name", False),
                last_name=s(data, "last_name", False),
                image_url=s(data, "image_url", False),
            )
        if route == ("DELETE", "users", 2):
            return self.delete_user(segs[1])
        if method == "GET" and segs[:1] == ["users"] and segs[2:] == ["memberships"]:
            return {"data": self.memberships_of(segs[1])}
        if route == ("POST", "latency", 1):
            seconds = data.get("seconds")
            if isinstance(seconds, str):  # from a query string
                with contextlib.suppress(ValueError):
                    seconds = float(seconds)
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
                raise _invalid_param("seconds", "seconds must be a non-negative number")
            self.latency_s = float(seconds)
            return {"latency_s": self.latency_s}
        if route == ("POST", "fail", 1):
            n, status, retry_after = data.get("n", 1), data.get("status", 500), data.get("retry_after")
            body = data.get("body")
            if not (
                isinstance(n, int)
                and isinstance(status, int)
                and (retry_after is None or isinstance(retry_after, int))
                and (body is None or isinstance(body, str))
            ):
                raise StandInError(
                    422,
                    "form_param_value_invalid",
                    "is invalid",
                    "n, status, retry_after must be integers and body a string",
                )
            self.fail_next(n, status, retry_after, body)
            return {"queued": n}
        if route == ("POST", "seed", 1):
            self.seed_sample()
            return {"orgs": SAMPLE_ORG_IDS, "users": SAMPLE_USER_IDS}
        if route == ("POST", "reset_counts", 1):
            self.reset_counts()
            return {"calls": 0}
        if route == ("GET", "stats", 1):
            return {"calls": self.call_count()}
        return None


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.clerk_standin", description="Local Clerk Backend API stand-in"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret-key", default="sk_test_standin")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--seed", action="store_true", help="create the sample world")
    args = parser.parse_args(argv)

    standin = ClerkStandIn(
        secret_key=args.secret_key,
        host=args.host,
        port=args.port,
        latency_s=max(args.latency_ms, 0.0) / 1000.0,
    )
    if args.seed:
        standin.seed_sample()
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    standin.start()
    print(f"clerk-standin listening on {standin.url}", flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
