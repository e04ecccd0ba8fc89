"""The HTTP side: a real loopback server answering the Clerk read paths the cache uses.

A real server, so the code under test exercises its real HTTP client, paging, auth
header, retries and connection reuse:

* ``GET /v1/users/{user_id}/organization_memberships?limit=&offset=``
* ``GET /v1/organizations/{org_id}/memberships?limit=&offset=&order_by=&user_id=``
* ``GET /v1/organizations/{org_id_or_slug}``
* ``GET /v1/organization_roles?limit=&offset=``, ``GET /v1/organization_roles/{role_id}``,
  ``GET /v1/organization_permissions?limit=&offset=``
"""

import contextlib
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from devstack.clerk_standin.faults import Faults
from devstack.clerk_standin.model import Model, ordered
from devstack.clerk_standin.records import Membership
from devstack.clerk_standin.shapes import (
    Response,
    StandInError,
    StandInNotFound,
    dumps,
    error_payload,
    invalid_param,
)

ROLE_LIST_GATE = "organization_roles"  # hold(ROLE_LIST_GATE) holds reads of the role list
_DEFAULT_LIMIT = 10
_MAX_LIMIT = 500

Query = dict[str, list[str]]


class Api:
    """One request -> one response, applying faults, auth and Clerk's paging rules; counts calls."""

    def __init__(self, model: Model, faults: Faults, secret_key: str) -> None:
        self._model = model
        self._faults = faults
        self._secret_key = secret_key
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._arrivals: list[tuple[float, str]] = []

    def call_count(self, path_prefix: str) -> int:
        with self._lock:
            return sum(n for path, n in self._calls.items() if path.startswith(path_prefix))

    def arrivals(self, path_prefix: str) -> list[float]:
        with self._lock:
            return [at for at, path in self._arrivals if path.startswith(path_prefix)]

    def reset_counts(self) -> None:
        with self._lock:
            self._calls.clear()
            self._arrivals.clear()

    def answer(self, target: str, auth: str | None) -> Response:
        split = urlsplit(target)
        path = split.path
        with self._lock:
            self._calls[path] += 1
            self._arrivals.append((time.time(), path))
        query = parse_qs(split.query, keep_blank_values=True)
        segs = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        refused = self._faults.rate_limit.admit()  # counted as it arrives, as Clerk does
        if refused is not None:
            return refused
        if self._faults.latency_s > 0:
            time.sleep(self._faults.latency_s)
        failure = self._faults.next_failure()
        if failure is not None:
            return failure
        if segs and segs[0] == "v1" and not self._authorized(auth):
            return Response(401, dumps(error_payload(401)))
        try:
            response = self._route(segs, query)
        except StandInError as exc:
            return exc.response()
        if self._faults.answer_delay_s > 0:
            time.sleep(self._faults.answer_delay_s)  # the answer was read at arrival: it may be stale when it lands
        return response

    def _authorized(self, auth: str | None) -> bool:
        if not auth:
            return False
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), self._secret_key.encode())

    def _route(self, segs: list[str], query: Query) -> Response:
        n = len(segs)
        if n == 4 and segs[:2] == ["v1", "users"] and segs[3] == "organization_memberships":
            return self._user_memberships(segs[2], query)
        if n in (2, 3) and segs[:2] in (["v1", "organization_roles"], ["v1", "organization_permissions"]):
            return self._roles(segs, query)
        is_org_ms = n == 4 and segs[:2] == ["v1", "organizations"] and segs[3] == "memberships"
        if not (is_org_ms or (n == 3 and segs[:2] == ["v1", "organizations"])):
            return StandInNotFound("Resource not found").response()
        with self._model.lock:
            org = self._model.find_org(segs[2])
            if org is None or (is_org_ms and org.id != segs[2]):
                raise StandInNotFound(f"No organization was found with id {segs[2]}")
            if is_org_ms:
                order = (query.get("order_by") or ["-created_at"])[0]
                if order.lstrip("+-") != "created_at":
                    raise invalid_param("order_by", "the stand-in only supports order_by=[+|-]created_at")
                ms = self._model.org_memberships(org.id)
                wanted = set(query.get("user_id", []))
                if wanted:
                    ms = [m for m in ms if m.user_id in wanted]
                return self._page(ordered(ms, newest_first=order.startswith("-")), query)
            response = Response(200, dumps(self._model.org_json(org)))
        gate = self._faults.gate(org.id)
        if gate is not None:
            gate.block()  # answer already computed: a slow read of the old org
        return response

    def _roles(self, segs: list[str], query: Query) -> Response:
        """``GET /organization_roles[/{id}]`` and ``GET /organization_permissions``: the instance's catalogue."""
        with self._model.lock:
            if len(segs) == 3:
                if segs[1] != "organization_roles":
                    raise StandInNotFound("Resource not found")
                return Response(200, dumps(self._model.roles.role_by_id(segs[2])))
            roles = segs[1] == "organization_roles"
            items = self._model.roles.list_roles() if roles else self._model.roles.list_permissions()
        limit = _int_param(query, "limit", _DEFAULT_LIMIT, 1, _MAX_LIMIT)
        offset = _int_param(query, "offset", 0, 0, None)
        response = Response(200, dumps({"data": items[offset : offset + limit], "total_count": len(items)}))
        gate = self._faults.gate(ROLE_LIST_GATE) if roles else None
        if gate is not None:
            gate.block()  # answer already computed: a slow read of the old roles
        return response

    def _user_memberships(self, user_id: str, query: Query) -> Response:
        try:
            with self._model.lock:
                resp = self._page(self._model.user_memberships(user_id), query)
        except StandInError as exc:
            resp = exc.response()
        gate = self._faults.gate(user_id)
        if gate is not None:
            gate.block()  # answer already computed: a slow read of old data
        return resp

    def _page(self, ms: list[Membership], query: Query) -> Response:
        """Clerk's paging: limit 1..500 (default 10), offset >= 0, else 422. Caller holds the model lock."""
        limit = _int_param(query, "limit", _DEFAULT_LIMIT, 1, _MAX_LIMIT)
        offset = _int_param(query, "offset", 0, 0, None)
        page = [self._model.membership_json(m) for m in ms[offset : offset + limit]]
        return Response(200, dumps({"data": page, "total_count": len(ms)}))


def _int_param(query: Query, name: str, default: int, lo: int, hi: int | None) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        value = lo - 1
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise invalid_param(name, f"{name} must be an integer {bound}")
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive client connections would otherwise make server_close() wait forever.
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: Api) -> None:
        super().__init__(address, _Handler)
        self.api = api
        self.conns_lock = threading.Lock()
        self.conns: set[socket.socket] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (killed, or its connection cut) is what a chaos run does on
        purpose: not worth a traceback on stderr. Anything else still gets one."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Translates HTTP to Api.answer; keeps connections alive like Clerk."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; avoid 40 ms delayed-ACK stalls
    server_version = "clerk-standin"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        with self._server.conns_lock:
            self._server.conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self._server.conns_lock:
                self._server.conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks do not want a line per request."""

    def do_GET(self) -> None:
        resp = self._server.api.answer(self.path, self.headers.get("Authorization"))
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


class Listener:
    """A bound port served from a daemon thread until stop()."""

    def __init__(self, api: Api, host: str, port: int) -> None:
        self._server = _Server((host, port), api)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"clerk-standin:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections."""
        self._server.shutdown()
        self._server.server_close()
        with self._server.conns_lock:
            conns = list(self._server.conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
