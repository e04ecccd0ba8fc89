"""Every error this project raises on purpose, in one small hierarchy.

Callers catch `ClerkCacheError` for "anything from this package", or a narrower
class when they can act on it (e.g. `ClerkUnavailable` is worth retrying,
`ClerkAuthError` is not).
"""

from __future__ import annotations


class ClerkCacheError(Exception):
    """Base class of every error raised on purpose by cache/, webhook/ and worker/."""


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
