"""Every error the cache library (``cache/``) raises on purpose, in one small hierarchy.

Callers catch `ClerkCacheError` for "anything from this project", or a narrower
class when they can act on it (e.g. `ClerkUnavailable` is worth retrying,
`ClerkAuthError` is not). Each class is also importable where it is raised
(`cache.durability.NotReplicated`, `cache.budget.ClerkRateLimited`,
`cache.authz.Denied`). The services (the webhook intake, the worker, the CLI)
derive their own few errors from `ClerkCacheError` in their own packages, which
this library does not import.
"""

from __future__ import annotations


class ClerkCacheError(Exception):
    """Base class of every error this project raises on purpose (the library's and the services')."""


class ConfigError(ClerkCacheError):
    """A required environment variable is missing or malformed.

    The message is one line that names the variable and never contains its value.
    """

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}")


class InvalidId(ClerkCacheError, ValueError):
    """A user or organization id that is not a Clerk id (and could smuggle key syntax)."""


class CacheUnavailable(ClerkCacheError):
    """Redis could not be reached or answered with an error."""


class NotReplicated(CacheUnavailable):
    """Fewer replicas than required acknowledged the write within the timeout (see `cache.durability`)."""


class ClerkError(ClerkCacheError):
    """Clerk's Backend API answered something we cannot use."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ClerkUnavailable(ClerkError):
    """Clerk could not be reached, timed out, rate-limited us past our budget,
    answered 5xx or sent an unreadable body. Worth retrying later."""


class ClerkAuthError(ClerkError):
    """Clerk rejected CLERK_SECRET_KEY (401/403): a configuration error, not worth retrying."""


class ClerkNotFound(ClerkError):
    """Clerk does not know the user or organization (404)."""


class ClerkRateLimited(ClerkUnavailable):
    """No Clerk budget within the interactive wait (the fleet is at its limit, or paused after a 429)."""


class Denied(ClerkCacheError):
    """A request the authorization check (`cache.authz`) refuses.

    ``status`` is the HTTP status and ``code`` the stable ``error`` string of the JSON
    body (as `webhook.errors.WebhookRejected`); the message is safe to show.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)

    def body(self) -> dict[str, str]:
        """The JSON body every adapter answers with: the project's ``{"error", "message"}``."""
        return {"error": self.code, "message": str(self)}

    def headers(self) -> dict[str, str]:
        """The headers every adapter sends with it: ``WWW-Authenticate`` on a 401, as HTTP asks."""
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
