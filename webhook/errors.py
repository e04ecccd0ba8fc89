"""The intake's refusal of a delivery, in the project's one error hierarchy."""

from __future__ import annotations

from cache.errors import ClerkCacheError


class WebhookRejected(ClerkCacheError):
    """A webhook delivery we refuse without changing anything.

    ``status`` is the HTTP status and ``code`` the stable ``error`` string of the
    JSON body; the message is safe to show (it never contains a secret).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)
