"""ClerkStandIn: the one object callers use, tying the model, the faults and the server together."""

from types import TracebackType

from devstack.clerk_standin.faults import Faults, Gate, RateLimit
from devstack.clerk_standin.model import Model
from devstack.clerk_standin.server import Api, Listener
from devstack.clerk_standin.shapes import JSON


class ClerkStandIn:
    """Plays Clerk's Backend API on 127.0.0.1 with an in-memory, thread-safe model."""

    def __init__(
        self,
        secret_key: str = "sk_test_standin",
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
    ) -> None:
        self.host = host
        self._port = port
        self._model = Model()
        self._faults = Faults(latency_s)
        self._api = Api(self._model, self._faults, secret_key)
        self._listener: Listener | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> "ClerkStandIn":
        """Serve in a daemon thread. After stop(), start() reuses the same port."""
        if self._listener is not None:
            raise RuntimeError("clerk stand-in already started")
        self._listener = Listener(self._api, self.host, self._port)
        self._port = self._listener.port
        return self

    def stop(self) -> None:
        """Stop serving, cut open keep-alive connections and release held requests."""
        listener, self._listener = self._listener, None
        self._faults.release_all()
        if listener is not None:
            listener.stop()

    def __enter__(self) -> "ClerkStandIn":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
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

    # ----------------------------------------------------------------- the model (see Model)

    def org(self, org_id: str) -> JSON:
        return self._model.org(org_id)

    def memberships_of(self, user_id: str) -> list[JSON]:
        return self._model.memberships_of(user_id)

    def role_permissions(self, role_key: str) -> list[str]:
        """What a holder of the role reads as its ``permissions`` now, held or not (an oracle's truth)."""
        return self._model.role_permissions(role_key)

    def create_org(
        self, name: str, slug: str | None = None, org_id: str | None = None, image_url: str | None = None
    ) -> JSON:
        return self._model.create_org(name, slug, org_id, image_url)

    def update_org(self, org_id: str, *, name: str | None = None, slug: str | None = None) -> JSON:
        return self._model.update_org(org_id, name=name, slug=slug)

    def delete_org(self, org_id: str) -> JSON:
        return self._model.delete_org(org_id)

    def add_membership(self, user_id: str, org_id: str, role: str = "org:member") -> JSON:
        return self._model.add_membership(user_id, org_id, role)

    def update_membership(self, user_id: str, org_id: str, role: str) -> JSON:
        return self._model.update_membership(user_id, org_id, role)

    def remove_membership(self, user_id: str, org_id: str) -> JSON:
        return self._model.remove_membership(user_id, org_id)

    def delete_user(self, user_id: str) -> JSON:
        return self._model.delete_user(user_id)

    def create_role(self, key: str, name: str, permissions: list[str]) -> JSON:
        return self._model.create_role(key, name, permissions)

    def update_role(self, key: str, *, permissions: list[str] | None = None, name: str | None = None) -> JSON:
        return self._model.update_role(key, permissions=permissions, name=name)

    def delete_role(self, key: str) -> JSON:
        return self._model.delete_role(key)

    def create_permission(self, key: str, name: str | None = None) -> JSON:
        return self._model.create_permission(key, name)

    def update_permission(self, key: str, *, new_key: str | None = None, name: str | None = None) -> JSON:
        return self._model.update_permission(key, new_key=new_key, name=name)

    def delete_permission(self, key: str) -> JSON:
        return self._model.delete_permission(key)

    def seed_sample(self) -> None:
        self._model.seed_sample()

    # ----------------------------------------------------------------- faults (see Faults)

    @property
    def latency_s(self) -> float:
        """Sleep before answering every request."""
        return self._faults.latency_s

    @latency_s.setter
    def latency_s(self, seconds: float) -> None:
        self._faults.latency_s = seconds

    @property
    def answer_delay_s(self) -> float:
        """Sleep after an answer is computed, so a read can race a change (see the soak test)."""
        return self._faults.answer_delay_s

    @answer_delay_s.setter
    def answer_delay_s(self, seconds: float) -> None:
        self._faults.answer_delay_s = seconds

    @property
    def rate_limit(self) -> RateLimit:
        """Clerk's rate limit, off by default: ``standin.rate_limit.set("production")`` (1,000 / 10 s)."""
        return self._faults.rate_limit

    def fail_next(self, n: int = 1, status: int = 500, retry_after: int | None = None, body: str | None = None) -> None:
        """The next n API requests answer `status` (queued after earlier injections)."""
        self._faults.fail_next(n, status, retry_after, body)

    def clear_failures(self) -> None:
        self._faults.clear_failures()

    def hold(self, user_id: str) -> Gate:
        """Hold reads of this user's memberships, or given an org id, reads of that org
        (``GET /v1/organizations/{id}``), or given ``"organization_roles"``, reads of the role list;
        the answer is computed at arrival."""
        return self._faults.hold(user_id)

    # ----------------------------------------------------------------- observation

    def call_count(self, path_prefix: str = "/v1/") -> int:
        """Requests received (any status) whose path starts with the prefix."""
        return self._api.call_count(path_prefix)

    def arrivals(self, path_prefix: str = "/v1/") -> list[float]:
        """When each request whose path starts with the prefix arrived (Unix seconds, as Redis's TIME)."""
        return self._api.arrivals(path_prefix)

    def reset_counts(self) -> None:
        self._api.reset_counts()
